"""SQL storage (SQLAlchemy 2 async): SQLite through aiosqlite, PostgreSQL through asyncpg.

- :mod:`.schema`: the tables (one ``MetaData``);
- :mod:`.engine`: URLs, engines, SQLite pragmas, migrations (Alembic);
- :mod:`.sql`: :class:`~.sql.SqlStorage`, the implementation of the core Storage interface,
  a facade over per-area repositories on :mod:`.base` (connections, secrets, rows):
  :mod:`.tenants` (tenants, accounts), :mod:`.messages` (enqueue, listing, suspensions),
  :mod:`.dispatch` (claims, outcomes, rate limits), :mod:`.events` (outbox, report sync),
  :mod:`.admin` (settings, audit, key rotation), :mod:`.plugin_data` (plugins' data).
"""
