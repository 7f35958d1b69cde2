# KeyRelay in a container: `docker build -t keyrelay .` then
# `docker run -p 8080:8080 -v keyrelay-instance:/app/instance keyrelay`.
# The build step is scripts/install.sh, the same script ./start.sh runs on first start
# (tests/test_fresh_start.py runs this file's RUN line in a clean checkout).
# Debian 13 (trixie): its postgresql-client (17) dumps the PostgreSQL 17 of compose.yaml.
FROM python:3.12-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KEYRELAY_BIND=0.0.0.0:8080

# pg_dump / pg_restore for `./kr backup` on PostgreSQL (system packages, not Python's).
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin keyrelay \
    && mkdir -p /app/instance && chown -R keyrelay:keyrelay /app
WORKDIR /app
COPY --chown=keyrelay:keyrelay . /app
USER keyrelay
RUN ./scripts/install.sh

# The database, key files, journal and limits live here: keep it on a volume.
VOLUME ["/app/instance"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD [".venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
# start.sh: init-db (prints the URL and master key), then gunicorn -c gunicorn.conf.py.
CMD ["./start.sh"]
