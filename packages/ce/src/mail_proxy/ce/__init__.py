"""genro-mail-proxy Community Edition: the default plugins.

:mod:`mail_proxy.ce.plugin` is the entry point; it wires the pieces below into the core's
hooks: ``storage`` (SQLAlchemy: SQLite and PostgreSQL), ``transport`` (SMTP, .eml files),
``fetch`` (base64, filesystem, endpoint, http_url), ``reports`` (HTTP sync sink), ``api``
(the REST routes) and ``cli`` (the commands).
"""
