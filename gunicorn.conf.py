"""Production serving: `gunicorn -c gunicorn.conf.py 'app:create_app()'`.

gevent workers: a stream can last minutes, and a greenlet per connection holds
thousands of them per process where a thread per stream would not (see bench/RESULTS.md).
"""

from config import from_environment as _from_environment

_settings = _from_environment()

bind = _settings["BIND"]
workers = _settings["WORKERS"]
worker_class = _settings["WORKER_CLASS"]
worker_connections = _settings["WORKER_CONNECTIONS"]
threads = 32  # used by the gthread class only
# Async workers only need the timeout for a worker that stopped responding altogether.
timeout = 120
graceful_timeout = 30
keepalive = 30
accesslog = None


def post_worker_init(worker) -> None:
    """Take what the worker loaded at start out of the cyclic GC's sight.

    The app, SQLAlchemy and the tokenizer leave ~80k long-lived objects; a full
    collection walking them took ~30 ms, and landed on a request every few seconds
    (the benchmark's p99). Frozen, they are never walked again.
    """
    import gc

    gc.collect()
    gc.freeze()
