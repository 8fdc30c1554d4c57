# genro-mail-proxy container image: the wheels of scripts/build, `mail-proxy serve` as the
# entry point, configured only by GMP_* variables and /run/secrets/* files.
#
#   scripts/build && docker build -t genro-mail-proxy .          # core + CE + PostgreSQL driver
#   docker build --build-arg EXTRAS=postgresql,multitenancy .     # + enterprise plugins
#   scripts/build-image                                           # the same with buildah
#
# BASE: any Debian-like image with python3 (3.10+) and its venv module. The default is the
# official slim image; scripts/build-image passes a local one where that cannot be pulled.
ARG BASE=python:3.12-slim-bookworm

# -- build: a virtualenv with genro-mail-proxy installed from the wheels ------------------------
FROM ${BASE} AS build
# the directory of the wheels, relative to the build context (scripts/build writes dist/)
ARG WHEELS=dist
# extras of the root distribution, comma-separated (docs/install.md): postgresql, multitenancy,
# bounce, pec, large-files, enterprise, all
ARG EXTRAS=postgresql
# pinned: an unrelated "genro-mail-proxy" with higher version numbers exists on PyPI
ARG VERSION=0.1.0
# a CA bundle for pip inside the build, when the package index is reached through a proxy that
# re-signs TLS (scripts/build-image mounts the host's bundle and passes its path)
ARG PIP_CA=
COPY ${WHEELS}/ /wheels/
RUN if [ -n "$PIP_CA" ]; then export PIP_CERT="$PIP_CA"; fi \
 && python3 -m venv /opt/mail-proxy \
 && /opt/mail-proxy/bin/pip install --no-cache-dir --disable-pip-version-check --quiet \
      --find-links /wheels "genro-mail-proxy[${EXTRAS}]==${VERSION}" \
 && /opt/mail-proxy/bin/mail-proxy plugins

# -- runtime ----------------------------------------------------------------------------------
FROM ${BASE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="genro-mail-proxy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.description="Email delivery service: REST in, durable queue, SMTP out, delivery reports back." \
      org.opencontainers.image.licenses="Apache-2.0 AND BUSL-1.1"
# a system user with a fixed uid, owner of the data volume only
RUN groupadd --gid 10001 mailproxy \
 && useradd --uid 10001 --gid mailproxy --home-dir /var/lib/mail-proxy \
      --no-create-home --shell /usr/sbin/nologin mailproxy \
 && mkdir -p /var/lib/mail-proxy/cache \
 && chown -R mailproxy:mailproxy /var/lib/mail-proxy \
 && chmod 0700 /var/lib/mail-proxy
COPY --from=build /opt/mail-proxy /opt/mail-proxy
# Defaults for a container; every one may be overridden with -e / environment:.
# The SQLite database and the disk attachment cache live in the volume (with PostgreSQL,
# set GMP_DATABASE_URL and only the cache uses it).
ENV PATH=/opt/mail-proxy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GMP_HOST=0.0.0.0 \
    GMP_PORT=8000 \
    GMP_INSTANCE_DIR=/var/lib/mail-proxy \
    GMP_DB_PATH=/var/lib/mail-proxy/mail_proxy.db \
    GMP_CACHE_DISK_DIR=/var/lib/mail-proxy/cache
VOLUME ["/var/lib/mail-proxy"]
WORKDIR /var/lib/mail-proxy
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('GMP_PORT', '8000'), timeout=4)"]
# --require-key: a container without an encryption key refuses to start (it could not store
# SMTP passwords). The admin token is required too (GMP_API_TOKEN, _FILE or /run/secrets).
ENTRYPOINT ["mail-proxy", "serve", "--require-key"]
