"""Benchmark harness of genro-mail-proxy (run it with ``bench/run``; see bench/README.md).

Each piece runs in its own process so that none steals the event loop of another:
the orchestrator (:mod:`harness.__main__`) starts the service (:mod:`harness.service`), an
SMTP sink (:mod:`harness.sink`), a load generator (:mod:`harness.load`) or the raw SMTP
ceiling client (:mod:`harness.ceiling`), collects their figures and reports them
(:mod:`harness.report`).
"""
