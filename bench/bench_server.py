"""Track server throughput on loopback: bigWig range requests through gunicorn against nginx, and
variant queries one by one against concurrent, with and without the reference-window cache.

    python bench/bench_server.py                         # print the tables
    python bench/bench_server.py --write BENCHMARKS.md

Set-up (in a temporary folder): a 1 Mb demo genome, a randomly initialised tiny model (speed
does not depend on the weights), its precompute and hub. Needs nginx and wrk (Debian packages
nginx-light and wrk; installed with apt-get when run as root, as the project's set-up does).

* Files: wrk with 64 connections for ``--seconds`` requests random 64 KB byte ranges of one
  file of the hub (the genome FASTA: the demo's bigWigs are smaller than 64 KB), first from gunicorn (the production config: 2 workers x 8 threads), then from nginx
  (2 worker processes) serving the same folder.
* Variants: gunicorn with one worker and the model; each query is one SNV. "One by one" is a
  single client waiting for each answer; "concurrent" is 16 clients at once, each from a
  loopback address of its own (127.0.0.1 to 127.0.0.16, as 16 users would be), with 16
  prediction slots (threads 18, as the limits stay below them). Variants come four
  to a 128 bp bin, so with the cache (512 windows) a bin's reference window runs once and later
  variants run only their alternate allele; without it (0 windows) every query runs both.
* Turns: one gunicorn worker with its default limits answers a lone 1 kb /api/ism request
  (timed beside the same mutagenesis through the library), then single-variant queries from a
  second loopback address (127.0.0.2), alone and while the first keeps three 1 kb ISM requests
  running: the batcher takes each address's work in turn, a large request in pieces of a batch.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_description, publish  # noqa: E402

from epiformer.demo.synthetic_genome import CELL_TYPES, DemoSpec, make_demo_data  # noqa: E402
from epiformer.genome.reader import Genome  # noqa: E402
from epiformer.inference.settings import InferenceSettings  # noqa: E402
from epiformer.model.checkpoints import save_checkpoint  # noqa: E402
from epiformer.model.config import preset  # noqa: E402
from epiformer.model.model_set import load_model_set  # noqa: E402
from epiformer.model.network import Epiformer  # noqa: E402
from epiformer.precompute import PrecomputeOptions, precompute  # noqa: E402
from epiformer.server import gunicorn_command  # noqa: E402
from epiformer.server.server_config import SERVER_BATCH_SIZE, ServerConfig  # noqa: E402
from epiformer.trackhub import build_hub  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ISM_BP = 1000               # the turns measurement: an ISM request of this many bases
RANGE_SCRIPT = """
math.randomseed(1)
request = function()
  local first = math.random(0, {last_start})
  return wrk.format("GET", "{path}", {{["Range"] = "bytes=" .. first .. "-" .. (first + 65535)}})
end
"""
NGINX_CONF = """
{user}
daemon off;
worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location /hub/ {{ alias {hub}/; }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, seconds: float = 120, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200; RuntimeError when ``proc`` (the server) exits first or
    ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode} before {url} answered") from None
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def start_gunicorn(env: dict, port: int, log: Path | None = None) -> subprocess.Popen:
    """gunicorn with the production config and ``EPIFORMER_*`` settings ``env``, once it is ready.
    Without ``log`` the request log is off and the output discarded."""
    env = {**os.environ, "EPIFORMER_LOG_REQUESTS": "true" if log else "false", **env,
           "EPIFORMER_BIND": f"127.0.0.1:{port}"}
    with open(log or os.devnull, "w") as output:
        proc = subprocess.Popen(gunicorn_command(), cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)
    wait_ready(f"http://127.0.0.1:{port}/readyz")
    return proc


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


def wrk_command(url: str, script: Path, seconds: int, connections: int = 64, threads: int = 2) -> list[str]:
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "60s", "--latency",
            "-s", str(script), url]


def wrk(url: str, script: Path, seconds: int) -> dict:
    """Requests/s and latency percentiles from wrk (64 connections, 2 threads)."""
    out = subprocess.run(wrk_command(url, script, seconds), capture_output=True, text=True, check=True).stdout
    return wrk_result(out)


def wrk_result(out: str) -> dict:
    """Requests/s, p50 and p99 in ms, non-2xx/3xx and socket errors from wrk's --latency output."""
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": ms("50%"), "p99": ms("99%"),
            "errors": int(errors.group(1)) if errors else 0, "socket_errors": socket_errors.group(1) if socket_errors else ""}


def query_variants(port: int, variants: list[str], clients: int) -> dict:
    """Send each variant as one /api/variants request from ``clients`` threads, each from a loopback
    address of its own; rates and latencies."""
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    queue = list(reversed(variants))

    def client(source: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120, source_address=(source, 0))
        while True:
            with lock:
                if not queue:
                    break
                variant = queue.pop()
            started = time.perf_counter()
            conn.request("POST", "/api/variants", body=json.dumps({"variants": [variant]}),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            with lock:
                latencies.append(time.perf_counter() - started)
                statuses.append(response.status)
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(f"127.0.0.{k + 1}",)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"qps": len(variants) / seconds, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "non_200": sum(s != 200 for s in statuses)}


def variant_list(fasta: Path, count: int, seed: int) -> list[str]:
    """``count`` SNVs, four to a 128 bp bin, at random A/C/G/T positions of the first chromosome."""
    rng = np.random.default_rng(seed)
    out = []
    with Genome(fasta) as genome:
        chrom = next(iter(genome.chrom_sizes))
        size = genome.chrom_sizes[chrom]
        while len(out) < count:
            bin_start = int(rng.integers(10_000, size - 10_000)) // 128 * 128
            for offset in rng.choice(128, 4, replace=False):
                base = genome.sequence(chrom, bin_start + int(offset), bin_start + int(offset) + 1).upper()
                if base in "ACGT":
                    alt = "ACGT"[("ACGT".index(base) + 1) % 4]
                    out.append(f"{chrom}:{bin_start + int(offset) + 1}:{base}:{alt}")
    return out[:count]


def library_rate(paths: dict[str, Path], model: Path, variants: list[str]) -> float:
    """Variants/s of the scorer alone on ``variants``, windows batched 16 at a time as the server's
    batcher gathers them (its default max_batch), the server's default settings otherwise."""
    from epiformer.inference.predictor import open_predictor
    from epiformer.inference.settings import ModelSetOptions
    from epiformer.variants.alleles import parse_variant
    from epiformer.variants.scorer import VariantScorer

    settings = InferenceSettings(device="cpu", batch_size=4, conservation=str(paths["conservation"]))
    with open_predictor(ModelSetOptions((str(model),)), paths["fasta"], settings) as predictor:
        scorer = VariantScorer(predictor, cache_windows=0)
        parsed = [parse_variant(v) for v in variants]
        scorer.score(parsed[:4])
        started = time.perf_counter()
        scorer.score(parsed)
        return len(parsed) / (time.perf_counter() - started)


def post(port: int, path: str, body: dict, source: str = "127.0.0.1") -> tuple[int, float]:
    """POST ``body`` as JSON from the loopback address ``source``: (status, seconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300, source_address=(source, 0))
    try:
        started = time.perf_counter()
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        conn.close()


def ism_regions(fasta: Path, count: int) -> list[tuple[str, int, int]]:
    """``count`` regions of ISM_BP (0-based, end excluded), each in a window of its own."""
    with Genome(fasta) as genome:
        chrom = next(iter(genome.chrom_sizes))
    return [(chrom, 100_000 + 20_000 * k, 100_000 + 20_000 * k + ISM_BP) for k in range(count)]


def turns(port: int, fasta: Path, queries: list[str], alone_count: int) -> dict:
    """A lone ISM_BP /api/ism request's seconds, then single-variant queries from 127.0.0.2 one by
    one, each in a 128 bp bin not asked before (so its reference window runs): ``alone_count`` alone, then more while 127.0.0.1 runs
    three ISM_BP /api/ism requests at once, until the first of them answers. Their latencies (s)
    and the ISM requests' statuses."""
    regions = [{"region": f"{chrom}:{start + 1}-{end}"} for chrom, start, end in ism_regions(fasta, 4)]
    status, lone = post(port, "/api/ism", regions[0])
    if status != 200:
        raise RuntimeError(f"/api/ism answered {status}")
    bins = {}
    for variant in queries:
        chrom, pos, *_ = variant.split(":")
        bins.setdefault((chrom, (int(pos) - 1) // 128), variant)
    fresh = iter(bins.values())
    alone = [post(port, "/api/variants", {"variants": [next(fresh)]}, "127.0.0.2")[1] for _ in range(alone_count)]
    flood_statuses: list[int] = []
    flooders = [threading.Thread(target=lambda r=region: flood_statuses.append(post(port, "/api/ism", r)[0]))
                for region in regions[1:]]
    for thread in flooders:
        thread.start()
    flooded = []
    for variant in fresh:
        if flood_statuses:
            break
        flooded.append(post(port, "/api/variants", {"variants": [variant]}, "127.0.0.2")[1])
    for thread in flooders:
        thread.join()
    if not flood_statuses or len(flooded) == len(bins) - alone_count:
        raise RuntimeError("the queries ran out before an ISM request answered: ask for more")
    return {"lone": lone, "alone": alone, "flooded": flooded, "flood_statuses": flood_statuses}


def library_ism_seconds(paths: dict[str, Path], model: Path) -> dict[str, float]:
    """Seconds of the same ISM_BP mutagenesis through the library alone (the server's batch size),
    with its local runner and with the server's batcher (a large request in pieces of a batch),
    for the server's lone /api/ism to be read against."""
    from epiformer.inference.predictor import open_predictor
    from epiformer.inference.settings import ModelSetOptions
    from epiformer.server.batching import BatchPredictor
    from epiformer.variants.mutagenesis import saturation_mutagenesis
    from epiformer.variants.scorer import VariantScorer

    settings = InferenceSettings(device="cpu", batch_size=SERVER_BATCH_SIZE, conservation=str(paths["conservation"]))
    region = ism_regions(paths["fasta"], 1)[0]
    seconds: dict[str, list[float]] = {"local": [], "batcher": []}
    with open_predictor(ModelSetOptions((str(model),)), paths["fasta"], settings) as predictor:
        batcher = BatchPredictor(predictor.engine, SERVER_BATCH_SIZE, ServerConfig.max_delay_ms / 1000)
        try:
            for _ in range(2):          # alternating, the faster of two each: this machine's speed drifts
                for name, runner in (("local", None), ("batcher", batcher)):
                    scorer = VariantScorer(predictor, runner=runner, cache_windows=0)
                    seconds[name].append(saturation_mutagenesis(scorer, *region).seconds)
        finally:
            batcher.close()
    return {name: min(values) for name, values in seconds.items()}


def served_demo(tmp: Path) -> tuple[dict[str, Path], Path, Path]:
    """A 1 Mb demo genome, a randomly initialised tiny model (speed does not depend on the
    weights), its precompute in tmp/pre and hub in tmp/hub: (demo paths, model, hub)."""
    paths = make_demo_data(tmp / "demo", DemoSpec.scaled(total_mb=1.0, n_chroms=2, seed=2))
    torch.manual_seed(0)
    model = save_checkpoint(tmp / "model.pth.tar", Epiformer(preset("tiny"), list(CELL_TYPES)).eval())
    precompute(load_model_set([str(model)]), paths["fasta"], tmp / "pre",
               InferenceSettings(device="cpu", conservation=str(paths["conservation"])),
               PrecomputeOptions(progress=False, log=lambda _: None), genome_name="demo")
    build_hub(tmp / "pre", tmp / "hub")
    return paths, model, tmp / "hub"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run (default: 10)")
    parser.add_argument("--variants", type=int, default=96, help="variant queries per run (default: 96)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the variant runs (median kept)")
    parser.add_argument("--fair-queries", type=int, default=8,
                        help="single-variant queries of the turns measurement alone, before the ISM requests (default: 8)")
    parser.add_argument("--write", metavar="BENCHMARKS.md")
    args = parser.parse_args()
    subprocess.run([str(ROOT / "scripts" / "system-deps.sh"), "nginx=nginx-light", "wrk=wrk"], check=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths, model, hub = served_demo(tmp)
        served = hub / "genome" / "demo.fa"
        served_kb = served.stat().st_size / 1e3
        path = "/hub/genome/demo.fa"
        script = tmp / "ranges.lua"
        script.write_text(RANGE_SCRIPT.format(last_start=served.stat().st_size - 65536, path=path))

        files = {}
        base_env = {"EPIFORMER_PRECOMPUTE_DIR": str(tmp / "pre"), "EPIFORMER_HUB_DIR": str(hub)}
        port = free_port()
        server = start_gunicorn({**base_env, "EPIFORMER_WORKERS": "2"}, port)
        try:
            files["gunicorn (2 workers x 8 threads)"] = wrk(f"http://127.0.0.1:{port}{path}", script, args.seconds)
        finally:
            stop(server)
        nginx_port = free_port()
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp / sub).mkdir()
        # nginx's workers run as the invoking user, so they can read the (private) temporary folder
        user = "user root;" if os.geteuid() == 0 else ""
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(user=user, tmp=tmp, port=nginx_port, hub=hub))
        nginx = subprocess.Popen([shutil.which("nginx"), "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
                                 start_new_session=True, stderr=subprocess.DEVNULL)
        try:
            try:
                wait_ready(f"http://127.0.0.1:{nginx_port}/hub/hub.txt", seconds=20)
            except RuntimeError:
                raise RuntimeError("nginx did not start: " + (tmp / "nginx.error.log").read_text()[-2000:]) from None
            files["nginx (2 worker processes)"] = wrk(f"http://127.0.0.1:{nginx_port}{path}", script, args.seconds)
        finally:
            stop(nginx)

        runs: dict[tuple[int, int], list[dict]] = {}
        for _ in range(args.rounds):        # cache on and off alternate, medians kept: this machine's speed drifts
            for clients in (1, 16):
                for cache in (512, 0):
                    env = {**base_env, "EPIFORMER_WORKERS": "1", "EPIFORMER_MODELS": str(model),
                           "EPIFORMER_DEVICE": "cpu", "EPIFORMER_CACHE_WINDOWS": str(cache),
                           "EPIFORMER_THREADS": "18", "EPIFORMER_MAX_CONCURRENT_PREDICTIONS": "16"}
                    server = start_gunicorn(env, port)
                    try:
                        variants = variant_list(paths["fasta"], args.variants, seed=clients)
                        query_variants(port, variant_list(paths["fasta"], 4, seed=99), 1)
                        runs.setdefault((cache, clients), []).append(query_variants(port, variants, clients))
                    finally:
                        stop(server)
        queries = {key: {**{field: float(np.median([r[field] for r in results])) for field in ("qps", "p50", "p99")},
                         "non_200": sum(r["non_200"] for r in results)}       # non-200 answers of every round
                   for key, results in sorted(runs.items(), key=lambda item: (-item[0][0], item[0][1]))}
        ceiling = library_rate(paths, model, variant_list(paths["fasta"], args.variants, seed=16))
        server = start_gunicorn({**base_env, "EPIFORMER_WORKERS": "1", "EPIFORMER_MODELS": str(model),
                                 "EPIFORMER_DEVICE": "cpu"}, port)
        try:
            fair = turns(port, paths["fasta"], variant_list(paths["fasta"], 4 * 2000, seed=5)[::4], args.fair_queries)
        finally:
            stop(server)
        library_ism = library_ism_seconds(paths, model)

    gunicorn_rps = next(iter(files.values()))["rps"]
    lines = [
        f"Machine: {machine_description(torch.device('cpu'))}, {os.cpu_count()} cores; loopback; wrk and the "
        "servers share the cores.",
        "",
        f"Random 64 KB byte ranges of the hub's genome FASTA ({served_kb:,.0f} kB; the demo's bigWigs are smaller than "
        f"64 KB), 64 connections, "
        f"{args.seconds} s each:",
        "",
        "| server | requests/s | p50 ms | p99 ms | non-2xx | vs gunicorn |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {name} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} | "
          f"{r['rps'] / gunicorn_rps:.2f}x |" for name, r in files.items()),
        "",
        f"Variant queries (one SNV each, tiny model, CPU, one gunicorn worker), {args.variants} per run; medians "
        f"of {args.rounds} rounds, cache on and off alternating:",
        "",
        "| reference cache | clients | queries/s | p50 ms | p99 ms | non-200 (all rounds) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {'512 windows' if cache else 'off'} | {clients} | {r['qps']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | "
          f"{r['non_200']} |" for (cache, clients), r in queries.items()),
        "",
        f"The same {args.variants} SNVs scored in this process through the library, groups batched as the "
        f"server's batcher gathers them (no HTTP, no waiting for a batch to fill): {ceiling:.1f} variants/s, the "
        "ceiling without HTTP and without the clients' own work on the same cores.",
    ]
    alone, flooded = np.array(fair["alone"]) * 1000, np.array(fair["flooded"]) * 1000
    lines += [
        "",
        f"Turns (one gunicorn worker, its default limits): a lone {ISM_BP} bp /api/ism request "
        f"({3 * ISM_BP:,} substitutions) took {fair['lone']:.1f} s. The same mutagenesis in this process through "
        f"the library: {library_ism['local']:.1f} s with its local runner, {library_ism['batcher']:.1f} s through "
        f"the server's batcher, which runs a large request in pieces of {SERVER_BATCH_SIZE} windows so that other "
        f"clients' work goes between them ({library_ism['batcher'] / library_ism['local']:.2f}x). Single-variant queries from a second address, one by one, each in "
        f"a 128 bp bin of its own: alone, p50 {np.median(alone):.0f} ms, max {alone.max():.0f} ms "
        f"({len(alone)} queries); while the first address runs three {ISM_BP} bp /api/ism requests at once, "
        f"p50 {np.median(flooded):.0f} ms, max {flooded.max():.0f} ms ({len(flooded)} queries, until the first ISM "
        f"answer; the ISM answers: {', '.join(f'{n} x {s}' for s, n in sorted(Counter(fair['flood_statuses']).items()))}).",
    ]
    publish("server", lines, args.write)


if __name__ == "__main__":
    main()
