"""The paper configuration end to end, as a user runs it: every command a process of its own, timed.

    python bench/bench_paper.py                          # print the table (CPU, or the GPU if there is one)
    python bench/bench_paper.py --write BENCHMARKS.md    # also put it in BENCHMARKS.md
    python bench/bench_paper.py --quick                  # the tiny model: a check that it runs

A randomly initialised paper-configuration checkpoint (98,304 bp, 54.8 M parameters, one output)
written in the original's format under a published checkpoint's name, named by row 4 of
targets.txt (MGC), on the demo generator's genome of two chromosomes (180 and 120 kb): precompute,
predict one region, score-variants (three SNVs and a deletion), ism of two bases, interpret one
region, hub, then ``epiformer serve`` (one worker per GPU, or two on a CPU): the time from launch
to its first ready answer, each worker's resident memory once it has answered, and one
/api/variants, /api/predict and /api/ism answer. Weights are random: speed and memory do not
depend on them.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server import free_port, wait_ready  # noqa: E402
from report import device_script_arguments, machine_description, publish  # noqa: E402

from epiformer.demo.synthetic_genome import DemoSpec, make_demo_data  # noqa: E402
from epiformer.genome.reader import Genome  # noqa: E402
from epiformer.inference.device import select_device  # noqa: E402
from epiformer.model.checkpoints import save_original_checkpoint  # noqa: E402
from epiformer.model.config import preset  # noqa: E402
from epiformer.model.network import Epiformer  # noqa: E402

CHECKPOINT = "MGC.model-1663637197.best_loss.pth.tar"


def command(*arguments: str) -> float:
    """Run ``epiformer ARGUMENTS`` as a user does; its wall time in seconds (it must succeed)."""
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "epiformer.cli", *arguments], capture_output=True, text=True)
    if run.returncode:
        sys.exit(f"epiformer {arguments[0]} failed:\n{run.stderr[-3000:]}")
    return time.perf_counter() - started


def variants_vcf(fasta: Path, path: Path, chrom: str, first: int) -> list[str]:
    """Three SNVs and a 3 bp deletion near ``first`` (1-based) matching the reference; writes ``path``
    and returns the SNVs as chrom:pos:ref:alt."""
    with Genome(fasta) as genome:
        snvs = [(pos, genome.sequence(chrom, pos - 1, pos).upper()) for pos in (first, first + 50, first + 400)]
        deleted = genome.sequence(chrom, first + 409, first + 413).upper()
    rows = [(pos, ref, "C" if ref == "A" else "A") for pos, ref in snvs] + [(first + 410, deleted, deleted[0])]
    path.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "".join(
        f"{chrom}\t{pos}\t.\t{ref}\t{alt}\t.\t.\t.\n" for pos, ref, alt in rows))
    return [f"{chrom}:{pos}:{ref}:{alt}" for pos, ref, alt in rows[:3]]


def post(url: str, body: dict) -> float:
    """Seconds for one JSON POST answered 200."""
    started = time.perf_counter()
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        response.read()
    return time.perf_counter() - started


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(arguments: list[str], log: Path, requests: list[tuple[str, dict]]) -> dict:
    """``epiformer serve``: seconds to ready, each request's seconds, and each worker's resident MB after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(log, "w") as handle:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "epiformer.cli", "serve", *arguments, "--port", str(port)],
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_ready(f"{base}/readyz", 600, proc)
        except RuntimeError as err:
            sys.exit(f"epiformer serve did not start ({err}):\n{log.read_text()[-3000:]}")
        ready = time.perf_counter() - started
        answers = {path: post(base + path, body) for path, body in requests}
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        return {"ready": ready, "answers": answers, "rss": [resident_mb(int(pid)) for pid in workers]}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    args = device_script_arguments(__doc__, "the tiny model (8,192 bp): a check that it runs")
    device = select_device(args.device)
    name = "tiny" if args.quick else "paper"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        config = preset(name, multiout_dim=1)
        checkpoint = save_original_checkpoint(tmp / CHECKPOINT, Epiformer(config).eval())
        data = tmp / "genome"
        make_demo_data(data, DemoSpec(seed=4, chrom_sizes={"chr1": 180_000, "chr2": 120_000}))
        model = ["-m", str(checkpoint), "--targets", str(data / "targets.txt"), "--index", "4"]
        genome = ["--fa", str(data / "genome.fa"), "--seqcons", str(data / "conservation.bw"),
                  "--device", str(device)]
        snvs = variants_vcf(data / "genome.fa", tmp / "variants.vcf", "chr1", 120_001)
        (tmp / "region.bed").write_text("chr1\t119800\t120300\n")
        tracks = tmp / "tracks"
        rows = [
            ("precompute, 300 kb (two chromosomes)", command("precompute", *model, *genome, "-o", str(tracks), "-q")),
            ("predict, one region", command("predict", *model, *genome, "-r", "chr1:110,001-130,000",
                                            "-o", str(tmp / "pred"))),
            ("score-variants, 3 SNVs and a deletion", command("score-variants", *model, *genome, "--vcf",
                                                              str(tmp / "variants.vcf"), "-o", str(tmp / "scores"), "-q")),
            ("ism, 2 bp x 3", command("ism", *model, *genome, "-r", "chr1:120,001-120,002", "-o", str(tmp / "ism"))),
            ("interpret --method grad, one region of 500 bp", command("interpret", *model, *genome, "--bed",
                                                                      str(tmp / "region.bed"), "-o", str(tracks), "-q")),
            ("hub", command("hub", str(tracks), "-o", str(tmp / "hub"))),
        ]
        workers = "1" if device.type == "cuda" else "2"
        served = serve([str(tracks), *model, *genome, "--workers", workers], tmp / "serve.log",
                       [("/api/variants", {"variants": snvs[:1]}),
                        ("/api/predict", {"region": "chr1:120,001-120,200", "edits": snvs[:1]}),
                        ("/api/ism", {"region": "chr1:120,001-120,002"})])
    params = sum(p.numel() for p in Epiformer(config).parameters())
    lines = [f"{'Tiny' if args.quick else 'Paper'} configuration end to end ({params:,} parameters, "
             f"{config.seq_len:,} bp windows, random weights in the original's checkpoint format), each "
             f"command a process of its own on {device.type.upper()} ({machine_description(device)}); "
             "wall times include starting Python and loading the checkpoint:",
             "", "| step | seconds |", "| --- | ---: |"]
    lines += [f"| `epiformer {label.split(',')[0]}`{label[len(label.split(',')[0]):]} | {seconds:.1f} |"
              for label, seconds in rows]
    lines += [f"| `epiformer serve` ({workers} worker{'s' if workers != '1' else ''}): launch to ready | "
              f"{served['ready']:.1f} |"]
    lines += [f"| first `POST {path}` | {seconds:.1f} |" for path, seconds in served["answers"].items()]
    lines += ["", "Resident memory per serving worker after those answers: "
              + ", ".join(f"{mb:,.0f} MB" for mb in served["rss"]) + "."]
    publish(f"paper-{device.type}" + ("-quick" if args.quick else ""), lines, args.write)


if __name__ == "__main__":
    main()
