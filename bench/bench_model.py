"""Time the paper-configuration forward pass: fast attention path against the literal reference.

    python bench/bench_model.py                      # print the table
    python bench/bench_model.py --write BENCHMARKS.md

Both paths run in one process on the same weights and inputs, alternating, after a warm-up;
the figure is the median of the repeats. The whole forward pass is timed, and the transformer
stack alone (on the convolutional tower's output), where the two paths differ. Run it on the device you want to report.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_description, publish  # noqa: E402

from epiformer.config import preset  # noqa: E402
from epiformer.engine import select_device  # noqa: E402
from epiformer.model import Epiformer  # noqa: E402


def timed(run, x: torch.Tensor, bf16: bool) -> float:
    """Seconds for one call of ``run(x)`` under inference mode (and bf16 autocast if asked)."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode(), autocast:
        run(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only)")
    parser.add_argument("--write", metavar="BENCHMARKS.md", help="also write the table into this file")
    args = parser.parse_args()

    device = select_device(args.device)
    torch.manual_seed(0)
    cfg = preset("paper")
    model = Epiformer(cfg).to(device).eval()
    rows = []
    for batch in args.batch_sizes:
        x = torch.rand(batch, 4, cfg.seq_len, device=device)
        with torch.inference_mode():
            tokens = model.conv(x).transpose(1, 2).contiguous()
        parts = {"model": (model, x), "transformer": (model.trans, tokens)}
        times = {(part, mode): [] for part in parts for mode in ("reference", "fast")}
        for repeat in range(args.repeats + 1):
            for part, mode in times:
                model.attention = mode
                run, inputs = parts[part]
                seconds = timed(run, inputs, args.bf16)
                if repeat:
                    times[part, mode].append(seconds)
        med = {key: statistics.median(values) for key, values in times.items()}
        rows.append(
            f"| {batch} | {med['model', 'reference']:.3f} | {med['model', 'fast']:.3f} "
            f"| {med['model', 'reference'] / med['model', 'fast']:.2f}x "
            f"| {med['transformer', 'reference']:.3f} | {med['transformer', 'fast']:.3f} "
            f"| {med['transformer', 'reference'] / med['transformer', 'fast']:.2f}x |")
        print(rows[-1], flush=True)

    precision = "bf16 autocast" if args.bf16 else "fp32"
    publish(f"model-forward-{device.type}", [
        f"Paper configuration ({cfg.seq_len:,} bp, {model.num_parameters():,} parameters), {precision}, "
        f"median of {args.repeats} after a warm-up.",
        f"Machine: {machine_description(device)}.",
        "",
        "| batch | whole model, reference (s) | whole model, fast (s) | speed-up "
        "| transformer only, reference (s) | transformer only, fast (s) | speed-up |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ], args.write)


if __name__ == "__main__":
    main()
