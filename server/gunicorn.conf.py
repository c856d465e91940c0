"""gunicorn settings for the track server:

    gunicorn -c server/gunicorn.conf.py 'server:create_app()'

Settings come from ``EPIFORMER_*`` variables (see server/config.py): EPIFORMER_PRECOMPUTE_DIR,
EPIFORMER_MODELS, EPIFORMER_BIND, EPIFORMER_WORKERS, ... With GPUs, one worker per GPU, each
pinned to its own device through CUDA_VISIBLE_DEVICES before the app (and CUDA) loads in it; the
master never touches CUDA. The hub is built once, in the master, before the workers start.
"""
import os
import shutil
import subprocess
from pathlib import Path

from server.config import load_config

settings = load_config()


def _gpu_count() -> int:
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


gpus = _gpu_count()
_visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()] or \
    [str(i) for i in range(gpus)]

bind = settings.bind
workers = settings.workers or (gpus if gpus else 2)
worker_class = "gthread"
threads = settings.threads
timeout = int(settings.request_timeout_s) + 30
graceful_timeout = 30
preload_app = False          # the app, its model and CUDA load in each worker, after the fork
accesslog = None             # the app writes one structured JSON line per request
errorlog = "-"
loglevel = "info"


def on_starting(server):
    """Build the hub once, before any worker starts."""
    from server import ensure_hub

    if settings.precompute_dir:
        precompute = Path(settings.precompute_dir)
        ensure_hub(precompute, Path(settings.hub_dir) if settings.hub_dir else precompute / "hub")


def pre_fork(server, worker):
    """Give the new worker a GPU no live worker holds."""
    if gpus:
        taken = {w.gpu_slot for w in server.WORKERS.values() if hasattr(w, "gpu_slot")}
        free = [i for i in range(len(_visible)) if i not in taken]
        worker.gpu_slot = free[0] if free else len(server.WORKERS) % len(_visible)


def post_fork(server, worker):
    """Pin the worker to its GPU before the app imports torch's CUDA state. Without GPUs, share
    the cores among the workers: each one's torch gets cores / workers threads, instead of every
    worker's torch using all the cores at once (which slows file serving and predictions alike)."""
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = _visible[worker.gpu_slot]
        server.log.info("worker %s pinned to GPU %s", worker.pid, _visible[worker.gpu_slot])
    elif "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


def post_worker_init(worker):
    import logging

    logging.getLogger("epiformer.server").setLevel(logging.INFO)
    if not logging.getLogger("epiformer.server").handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger("epiformer.server").addHandler(handler)
