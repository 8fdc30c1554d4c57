"""SQL storage (SQLAlchemy 2 async): SQLite through aiosqlite, PostgreSQL through asyncpg.

- :mod:`.schema`: the tables (one ``MetaData``);
- :mod:`.engine`: URLs, engines, SQLite pragmas, migrations (Alembic);
- :mod:`.sql`: :class:`~.sql.SqlStorage`, the implementation of the core Storage interface.
"""
