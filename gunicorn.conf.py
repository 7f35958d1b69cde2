"""Production serving: `gunicorn -c gunicorn.conf.py 'app:create_app()'`.

gevent workers: a stream can last minutes, and a greenlet per connection holds
thousands of them per process where a thread per stream would not (see bench/RESULTS.md).
"""

import os
import shutil
from pathlib import Path

from config import from_environment as _from_environment

_settings = _from_environment()
_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"

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
# gunicorn's control socket lives at one path per user ($XDG_RUNTIME_DIR or ~/.gunicorn):
# a second KeyRelay (or a test run) on the machine would take the first one's. KeyRelay
# does not use it; signals (HUP, TERM) still work.
control_socket_disable = True


def post_worker_init(worker) -> None:
    """Seal the worker (its app has read the settings), then take what it loaded at
    start out of the cyclic GC's sight.

    The app, SQLAlchemy and the tokenizer leave ~80k long-lived objects; a full
    collection walking them took ~30 ms, and landed on a request every few seconds
    (the benchmark's p99). Frozen, they are never walked again.
    """
    import gc

    from gateway import sandbox

    # No secret in the environment of what the worker starts, and its /proc files closed
    # to the CLI runs (same user): gateway/sandbox.py.
    sandbox.seal()
    gc.collect()
    gc.freeze()


def on_starting(server) -> None:
    """Close the master's /proc files (it keeps its environment: workers it forks later
    read their settings from it), then set up the metrics folder."""
    from gateway import sandbox

    sandbox.close_proc_files()
    _raise_file_limit(server)
    _metrics_folder()


def _raise_file_limit(server) -> None:
    """An open stream holds two files (the client's socket and the upstream's), and the
    system's usual soft limit (1024) would cap a worker at ~500 streams: raise it to the
    hard limit, which the workers inherit, and say when even that is short."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < 2 * worker_connections:
        server.log.warning(
            "the open-file limit (%d) lets a worker hold about %d open streams, not the %d "
            "of KEYRELAY_WORKER_CONNECTIONS: raise it (ulimit -Hn) or lower the setting",
            hard,
            hard // 2,
            worker_connections,
        )


def _metrics_folder() -> None:
    """Prometheus multiprocess mode: every worker keeps its counters in files in one
    folder (instance/metrics/ unless PROMETHEUS_MULTIPROC_DIR names another), emptied at
    each start so a restart begins at zero. Set here, in the master, before any worker
    imports prometheus_client (which reads it at import)."""
    if not _settings["METRICS"]:
        return
    instance = Path(_settings["INSTANCE_PATH"] or Path(__file__).resolve().parent / "instance")
    folder = Path(os.environ.get(_METRICS_DIR) or instance / "metrics")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[_METRICS_DIR] = str(folder)


def child_exit(server, worker) -> None:
    """A worker that exits leaves its counters (they keep counting in the sum); its live
    gauges' files go."""
    if _settings["METRICS"] and os.environ.get(_METRICS_DIR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
