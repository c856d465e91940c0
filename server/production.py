"""Running the app under gunicorn: one set of gunicorn settings for ``epiformer serve`` (which
hands gunicorn its :class:`~epiformer.server.server_config.ServerConfig` as it is) and for
``gunicorn -c server/gunicorn.conf.py 'epiformer.server:create_app()'`` (settings from ``EPIFORMER_*``).

With GPUs, one worker per GPU, each pinned to its own device through CUDA_VISIBLE_DEVICES before
the app (and CUDA) loads in it; the master never touches CUDA. Without GPUs, the cores are shared
among the workers. The hub is built once, in the master, before the workers start.
"""
from __future__ import annotations

import logging
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from epiformer.server.buffering import buffering_worker
from epiformer.server.server_config import ServerConfig, ServerConfigError


def gpu_count() -> int:
    """GPUs visible to this machine, counted without initialising CUDA in this process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def hub_dir(cfg: ServerConfig) -> Path:
    return Path(cfg.hub_dir) if cfg.hub_dir else Path(cfg.precompute_dir) / "hub"


def check_serving(cfg: ServerConfig) -> None:
    """What would stop a worker from starting, found before gunicorn starts as one error: the
    precompute folder and the prediction limits here, the model set with its settings (loaded on
    the CPU, conservation resolved) in a new Python process. The master forks the workers, so no
    torch computation may run in it: a forked child of a process whose OpenMP thread pool has
    started waits forever in its first parallel operation (GNU OpenMP is not fork-safe)."""
    from epiformer.io.manifest import read_manifest

    if not cfg.precompute_dir:
        raise ServerConfigError("no precompute folder: set EPIFORMER_PRECOMPUTE_DIR (or precompute_dir), "
                                "or run epiformer serve PRECOMPUTE_DIR")
    cfg.prediction_limits()
    read_manifest(cfg.precompute_dir)
    if cfg.models:
        run = subprocess.run([sys.executable, "-m", __name__], input=pickle.dumps(cfg), capture_output=True)
        if run.returncode == USER_ERROR_STATUS:
            raise pickle.loads(run.stdout)
        if run.returncode:
            raise ServerConfigError("the model set could not be loaded: "
                                    + (run.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1])


USER_ERROR_STATUS = 3     # check_model_set's process: the pickled error is on its standard output


def check_model_set(cfg: ServerConfig) -> None:
    """Load ``cfg``'s model set on the CPU and resolve its conservation setting, raising the
    error a worker would meet (run by :func:`check_serving` in a process of its own)."""
    from epiformer.inference.predictor import resolve_conservation
    from epiformer.io.manifest import read_manifest

    settings = cfg.inference_for(read_manifest(cfg.precompute_dir))
    resolve_conservation(cfg.model_set().load().uses_conservation, settings.conservation)


def gunicorn_options(cfg: ServerConfig) -> dict[str, Any]:
    """gunicorn's settings and server hooks for ``cfg``."""
    gpus = gpu_count()
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()] or \
        [str(i) for i in range(gpus)]
    workers = cfg.workers or (gpus if gpus else 2)

    def on_starting(server) -> None:
        """Build the hub once, before any worker starts."""
        from epiformer.server import ensure_hub

        if cfg.precompute_dir:
            ensure_hub(Path(cfg.precompute_dir), hub_dir(cfg))

    def pre_fork(server, worker) -> None:
        """Give the new worker a GPU no live worker holds."""
        if gpus:
            taken = {w.gpu_slot for w in server.WORKERS.values() if hasattr(w, "gpu_slot")}
            free = [i for i in range(len(visible)) if i not in taken]
            worker.gpu_slot = free[0] if free else len(server.WORKERS) % len(visible)

    def post_fork(server, worker) -> None:
        """Pin the worker to its GPU before the app imports torch's CUDA state. Without GPUs, each
        worker's torch gets cores / workers threads (unless torch_threads says), instead of every
        worker's torch using all the cores at once (which slows file serving and predictions alike)."""
        if gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible[worker.gpu_slot]
            server.log.info("worker %s pinned to GPU %s", worker.pid, visible[worker.gpu_slot])
        elif "OMP_NUM_THREADS" not in os.environ:
            os.environ["OMP_NUM_THREADS"] = str(cfg.inference.threads or max(1, (os.cpu_count() or 1) // workers))

    def post_worker_init(worker) -> None:
        logger = logging.getLogger("epiformer.server")
        logger.setLevel(logging.INFO)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)

    hooks: dict[str, Callable] = {"on_starting": on_starting, "pre_fork": pre_fork, "post_fork": post_fork,
                                  "post_worker_init": post_worker_init}
    return {"bind": cfg.bind, "workers": workers, "threads": cfg.threads,
            # requests are read whole in the worker's event loop before a thread takes them (server.buffering)
            "worker_class": buffering_worker(cfg.client_timeout_s, cfg.max_body_bytes,
                                             # behind proxies every client has the proxy's address
                                             0 if cfg.proxy_hops else cfg.max_connections_per_client),
            "sendfile": False,      # answers go through send(), which drops a client that takes none for client_timeout_s
            # the app's ProxyFix (proxy_hops) is the one reader of forwarding headers: gunicorn trusts
            # no address without proxies, and never maps headers to the scheme or to SCRIPT_NAME/PATH_INFO
            "forwarded_allow_ips": "127.0.0.1,::1" if cfg.proxy_hops else "",
            "forwarder_headers": "", "secure_scheme_headers": {},
            "timeout": int(cfg.request_timeout_s) + 30, "graceful_timeout": 30,
            "preload_app": False,   # the app, its model and CUDA load in each worker, after the fork
            "accesslog": None,      # the app writes one structured JSON line per request
            "errorlog": "-", "loglevel": "info", **hooks}


def serve(cfg: ServerConfig) -> None:
    """Check ``cfg``, build the hub, and run gunicorn in this process with ``cfg`` handed to each
    worker as it is (forked, not re-read); returns when gunicorn stops (Ctrl-C, SIGTERM)."""
    from gunicorn.app.base import BaseApplication

    from epiformer.server import create_app

    check_serving(cfg)
    options = gunicorn_options(cfg)

    class Application(BaseApplication):
        def load_config(self) -> None:
            for name, value in options.items():
                self.cfg.set(name, value)

        def load(self):
            return create_app(cfg)

    master = os.getpid()
    try:
        Application().run()
    except SystemExit as stop:
        if os.getpid() != master:
            raise                   # a worker leaving: its exit is gunicorn's business, not the command's
        if stop.code not in (None, 0):
            raise ServerConfigError(f"the server stopped with status {stop.code}: a worker could not start "
                                    "(its error is in the log above)") from None


if __name__ == "__main__":
    from epiformer.errors import UserError

    answer, sys.stdout = sys.stdout.buffer, sys.stderr      # what the check prints cannot garble the answer
    try:
        check_model_set(pickle.load(sys.stdin.buffer))
    except UserError as err:
        answer.write(pickle.dumps(err))
        sys.exit(USER_ERROR_STATUS)
