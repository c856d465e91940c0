"""Helpers the tests share (conftest.py holds the fixtures): servers run as users run them
(gunicorn, ``epiformer serve``, nginx), small files written for a test, and where the test data is."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import h5py
import numpy as np
import pytest
import torch

from epiformer.server import gunicorn_command

DATA = Path(__file__).parent / "data"


ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """A running gunicorn (production config): its base URL, process and log file."""

    def __init__(self, base: str, proc: subprocess.Popen, log: Path) -> None:
        self.base, self.proc, self.log = base, proc, log

    def workers(self) -> list[int]:
        """PIDs of the live worker processes."""
        found = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in found.split()]

    def output(self) -> str:
        return self.log.read_text()


READY_WITHIN_S = 300     # a server that has not answered by then is hung (the paper model starts in seconds)


def wait_until_ready(url: str, proc: subprocess.Popen, output: Callable[[], str]) -> None:
    """Poll ``url`` until it answers 200; fail with ``output()`` if ``proc`` exits first, or when
    it has not answered within ``READY_WITHIN_S`` seconds (a server whose workers hang)."""
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"the server exited: {output()[-2000:]}")
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {READY_WITHIN_S} s: {output()[-2000:]}")


@contextlib.contextmanager
def gunicorn(settings: dict[str, str], log: Path) -> Iterator[Gunicorn]:
    """gunicorn -c server/gunicorn.conf.py with ``EPIFORMER_*`` ``settings``, ready when entered,
    stopped (SIGTERM) on leaving; its output goes to ``log``."""
    port = free_port()
    env = {**os.environ, **settings, "EPIFORMER_BIND": f"127.0.0.1:{port}"}
    with open(log, "w") as handle:
        proc = subprocess.Popen(gunicorn_command(), cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    server = Gunicorn(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_until_ready(f"{server.base}/readyz", proc, server.output)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def distinct_window_snvs(demo_data: Path, count: int) -> list[str]:
    """SNVs matching the reference, each in its own window, so none shares a forward pass result."""
    from epiformer.genome.reader import Genome

    found = []
    with Genome(demo_data / "genome.fa") as genome:
        for chrom, size in genome.chrom_sizes.items():
            for pos in range(8_001, size - 8_000, 1_000):   # another bin: another window
                base = genome.sequence(chrom, pos - 1, pos).upper()
                if base in "ACGT":
                    found.append(f"{chrom}:{pos}:{base}:{'C' if base == 'A' else 'A'}")
    assert len(found) >= count
    return found[:count]


@contextlib.contextmanager
def epiformer_serve(arguments: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``epiformer serve ARGUMENTS --port P`` as a user runs it; yields its base URL once ready,
    and stops it (SIGINT, as Ctrl-C does) on leaving. Its output goes to ``log``."""
    import signal
    import sys

    port = free_port()
    with open(log, "w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "epiformer.cli", "serve", *arguments, "--port", str(port)],
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/readyz", proc, log.read_text)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)


@contextlib.contextmanager
def nginx(server_conf: str, folder: Path) -> Iterator[None]:
    """nginx (the system's) running ``server_conf`` (http-level directives, as deploy/nginx.conf
    holds) with its pid, logs and temporary files in ``folder``; stopped on leaving."""
    import shutil

    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        pytest.skip("nginx is not installed (make test installs it: apt-get install nginx-light)")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "server.conf").write_text(server_conf)
    user = "user root;" if os.geteuid() == 0 else ""   # its workers must read the test's private folders
    (folder / "nginx.conf").write_text(f"""{user}
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  include {folder}/server.conf;
}}
""")
    check = subprocess.run([binary, "-t", "-c", str(folder / "nginx.conf"), "-p", str(folder)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([binary, "-c", str(folder / "nginx.conf"), "-p", str(folder)],
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def single_output_original(compat_checkpoint, path, output):
    """An original-format checkpoint with one output, cut from the 3-output reference."""
    ckpt = torch.load(compat_checkpoint, weights_only=True)
    ckpt["param"]["multiout_dim"] = 1
    for key in ("ptw.linear.0.weight", "ptw.linear.0.bias"):
        ckpt["state_dict"][key] = ckpt["state_dict"][key][output: output + 1].clone()
    torch.save(ckpt, path)
    return path


def write_fasta(path: Path, records: dict[str, str], width: int = 60, newline: str = "\n") -> Path:
    with open(path, "w", newline="") as handle:
        for name, seq in records.items():
            handle.write(f">{name}{newline}")
            for i in range(0, len(seq), width):
                handle.write(seq[i: i + width] + newline)
    return path


def write_bigwig(path: Path, chrom_sizes: dict[str, int], values: dict[str, np.ndarray]) -> Path:
    import pyBigWig

    bw = pyBigWig.open(str(path), "w")
    bw.addHeader(list(chrom_sizes.items()))
    for chrom, vals in values.items():
        vals = np.asarray(vals, dtype=np.float64)
        keep = ~np.isnan(vals)
        starts = np.flatnonzero(keep)
        bw.addEntries([chrom] * len(starts), starts.tolist(), ends=(starts + 1).tolist(),
                      values=vals[keep].tolist())
    bw.close()
    return path


def make_model_app(precomputed: Path, hub_dir: Path, **settings):
    """The server app over the session's precompute folder (hub built in ``hub_dir``) with its tiny
    model on the CPU; ``settings`` add to or override these."""
    from epiformer.server import create_app

    return create_app({"precompute_dir": str(precomputed), "hub_dir": str(hub_dir), "log_requests": False,
                       "models": [str(precomputed.parent / "model.pth.tar")], "device": "cpu", **settings})


PAPER_CHECKPOINT_NAME = "MGC.model-1663637197.best_loss.pth.tar"


# The hand-checkable genome of conftest's ``inputs`` fixture (generate-datasets' tests).
SIZES = {"chr1": 1000, "chr2": 600, "chr3": 520, "chr4": 300}


def windows_of(manifest: dict, folder: Path, split: str) -> list[str]:
    """The window names (chr:start-end) a generate-datasets manifest's split holds, in order."""
    names = []
    for shard in manifest["splits"][split]["shards"]:
        with h5py.File(folder / shard) as h5:
            names += [n.decode() for n in h5["name"][:]]
    return names
