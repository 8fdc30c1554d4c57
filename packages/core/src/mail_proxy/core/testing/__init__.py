"""The test kit: real components for the tests of the core, the Community Edition and any
plugin package (``pip install 'genro-mail-proxy-core[testing]'``).

- :mod:`.net`: ``free_port()``;
- :mod:`.service`: ``ServiceProcess``, the real ``mail-proxy serve`` in its own process;
- :mod:`.smtp`: ``SmtpTestServer``, a scriptable SMTP server (aiosmtpd) that records what it
  receives (refusals, delays, TLS, AUTH, PIPELINING on or off);
- :mod:`.reports`: ``ReportClient``, a client application's report endpoint that checks the
  signatures and records every batch; ``wait_until``; ``record_outcome``.
"""
