"""Time the paper-configuration forward pass, each inference path side by side in one process.

    python bench/bench_model.py                      # print the table
    python bench/bench_model.py --write BENCHMARKS.md

Paths, on the same weights and inputs, alternating, after a warm-up (the median of the repeats):
the literal attention formula with the tower's modules run one by one (the original code's
arithmetic); the fast attention with the modules one by one (the previous release's path); the
fused tower (channels-last, BatchNorm folded, cache-sized tiles); and the fused tower with
``torch.compile``. The same run measures this machine's fp32 matrix-multiply rate, the ceiling
any fp32 path meets.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_precompute import forward_flops  # noqa: E402
from report import machine_description, publish  # noqa: E402

from epiformer.inference.device import select_device  # noqa: E402
from epiformer.model.config import preset  # noqa: E402
from epiformer.model.network import Epiformer  # noqa: E402


def timed(run, x: torch.Tensor, bf16: bool) -> float:
    """Seconds for one call of ``run(x)`` under inference mode (and bf16 autocast if asked)."""
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16)
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode(), autocast:
        run(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def matmul_rate(device: torch.device, size: int = 4096, repeats: int = 3) -> float:
    """FLOP/s of a square fp32 matrix multiply: the ceiling of fp32 arithmetic here."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    times = [timed(lambda _: a @ b, a, False) for _ in range(repeats + 1)][1:]
    return 2 * size ** 3 / min(times)


GOALS = {1: 1.4, 4: 1.8}    # speed-up over the previous path the project aims for, by batch

PATHS = {   # name: (attention mode, tower mode, compiled)
    "literal attention, modules one by one": ("reference", "reference", False),
    "previous path: fast attention, modules one by one": ("fast", "reference", False),
    "fused tower": ("fast", "fused", False),
    "fused tower, torch.compile": ("fast", "fused", True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--write", metavar="BENCHMARKS.md", help="also write the table into this file")
    args = parser.parse_args()

    device = select_device(args.device)
    torch.manual_seed(0)
    cfg = preset("paper")
    model = Epiformer(cfg).to(device).eval()
    compiled = copy.deepcopy(model)
    compiled.compile_for_inference()
    flops = forward_flops(model, cfg.seq_len)
    gemm = matmul_rate(device)
    print(f"fp32 matrix multiply: {gemm / 1e9:.1f} GFLOP/s; one window {flops / 1e9:.1f} GFLOP", flush=True)
    rows, needed = [], []
    for batch in args.batch_sizes:
        x = torch.rand(batch, 4, cfg.seq_len, device=device)
        times: dict[str, list[float]] = {name: [] for name in PATHS}
        outputs = {}
        for repeat in range(args.repeats + 1):
            for name, (attention, tower, use_compiled) in PATHS.items():
                run = compiled if use_compiled else model
                run.attention, run.conv.mode = attention, tower
                seconds = timed(run, x, args.bf16)
                if repeat:
                    times[name].append(seconds)
                else:
                    with torch.inference_mode():
                        outputs[name] = run(x).float()
        med = {name: statistics.median(values) for name, values in times.items()}
        reference = outputs["literal attention, modules one by one"]
        error = max(((out - reference).abs().max() / reference.abs().max()).item() for out in outputs.values())
        previous, best = med["previous path: fast attention, modules one by one"], min(med.values())
        rows.append(f"| {batch} | " + " | ".join(f"{med[name]:.3f}" for name in PATHS)
                    + f" | {previous / med['fused tower']:.2f}x | {previous / med['fused tower, torch.compile']:.2f}x "
                    f"| {med['literal attention, modules one by one'] / best:.2f}x "
                    f"| {batch * flops / best / 1e9:.0f} | {batch * flops / best / gemm:.0%} | {error:.1e} |")
        goal = GOALS.get(batch)
        if goal:
            needed.append(f"{goal:g}x the previous path at batch {batch} needs {batch * flops * goal / previous / gemm:.0%} "
                          f"of the matrix-multiply rate (the fastest path here: {batch * flops / best / gemm:.0%}).")
        print(rows[-1], flush=True)

    precision = "bf16 autocast" if args.bf16 else "fp32"
    publish(f"model-forward-{device.type}", [
        f"Paper configuration ({cfg.seq_len:,} bp, {model.num_parameters():,} parameters, {flops / 1e9:.1f} GFLOP "
        f"a window), {precision}, seconds per batch, median of {args.repeats} after a warm-up (which also "
        f"compiles). The same run's fp32 matrix multiply (4096³) ran at {gemm / 1e9:.1f} GFLOP/s.",
        f"Machine: {machine_description(device)}.",
        "",
        "| batch | " + " (s) | ".join(PATHS) + " (s) | fused vs previous | compiled vs previous "
        "| fastest vs literal | GFLOP/s, fastest | share of the matrix-multiply rate | largest difference (relative) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        " ".join(needed),
    ], args.write)


if __name__ == "__main__":
    main()
