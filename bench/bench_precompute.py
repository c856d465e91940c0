"""Precompute throughput: the pipeline against a naive loop, and the projected hg38 run time.

    python bench/bench_precompute.py                                       # print the tables
    python bench/bench_precompute.py --write BENCHMARKS.md --readme README.md

On the demo genome (6 Mb, made first in a temporary folder), in this process, on the current
device (CUDA when available):

* tiny model (8,192 bp windows): ``epiformer precompute`` (reverse-complement ensembling, float16
  shards, merge to bigWigs) with batches of 1 and 8, reading in the main process or in two
  worker processes, against a naive loop over the same windows (read, encode and predict one
  window at a time, no overlap of reading and compute, values kept in memory); rounds alternate
  and medians are kept, as this machine's speed drifts;
* paper configuration (98,304 bp windows, 54.8 M parameters): the pipeline's rate over a few
  batches after a warm-up (what ``--dry-run`` measures) with the default settings for the device
  against the naive loop on a few windows, and the FLOPs of one forward pass counted by torch.
  On CUDA the pipeline runs in bf16 and the forward passes per second are set against the GPU's
  peak bf16 FLOP/s.

The host side alone (``host_rates``): windows of 98,304 bp prepared per second by one process,
as the previous release did it (each window read and one-hot encoded in float32 on the host)
and as the engine takes them now (codes and float16 conservation of a batch's neighbouring
windows read as one block; the one-hot encoding then happens on the device), for a precompute
plan's consecutive tiles and for dispersed windows (variants).

hg38 projections divide 3.1 Gb into windows at the model's stride (N gaps, about 5% of hg38,
would be skipped, so the projection is an upper bound) and use the measured pipeline rate.
Weights are random: speed does not depend on them.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_description, publish, update_section  # noqa: E402

from epiformer.demo.synthetic_genome import CELL_TYPES, DemoSpec, make_demo_data  # noqa: E402
from epiformer.genome.encoding import CONSERVATION_DTYPE  # noqa: E402
from epiformer.genome.reader import Genome  # noqa: E402
from epiformer.inference.device import select_device  # noqa: E402
from epiformer.inference.engine import Engine  # noqa: E402
from epiformer.inference.settings import InferenceSettings  # noqa: E402
from epiformer.model.checkpoints import save_checkpoint  # noqa: E402
from epiformer.model.config import preset  # noqa: E402
from epiformer.model.model_set import ModelSet, load_model_set  # noqa: E402
from epiformer.model.network import Epiformer  # noqa: E402
from epiformer.precompute import PrecomputeOptions, plan_tiles, precompute  # noqa: E402
from epiformer.precompute.job import default_io_workers  # noqa: E402
from epiformer.precompute.pipeline import BatchReader, measure_rate  # noqa: E402

HG38_BP = 3.1e9
# Dense bf16 tensor-core peak FLOP/s by device name (vendor data sheets, SXM parts).
BF16_PEAK = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12}


def model_set(preset_name: str, folder: Path) -> ModelSet:
    """A randomly initialised model of a preset, saved and loaded back as a one-checkpoint set."""
    torch.manual_seed(0)
    model = Epiformer(preset(preset_name, multiout_dim=len(CELL_TYPES)), list(CELL_TYPES)).eval()
    path = save_checkpoint(folder / f"{preset_name}.pth.tar", model)
    return load_model_set([str(path)])


def host_rates(genome: Genome, seq_len: int, stride: int, batch: int = 8, min_seconds: float = 3.0) -> list[tuple]:
    """(windows, method, windows/s) of preparing windows of ``seq_len`` for the device in one
    process: tiles at ``stride`` in batches of ``batch`` as precompute reads them, and windows at
    random places; each pass through the genome opens it afresh, so no block is read in advance."""
    rng = np.random.default_rng(0)
    tiles = [(chrom, start) for chrom, size in genome.chrom_sizes.items() for start in range(0, size - seq_len, stride)]
    dispersed = [tiles[i] for i in rng.permutation(len(tiles))]
    dispersed = [(chrom, start + int(rng.integers(0, stride))) for chrom, start in dispersed]

    def previous(fresh: Genome, windows: list) -> None:
        np.stack([fresh.encode(chrom, start, start + seq_len) for chrom, start in windows])

    def coded(fresh: Genome, windows: list) -> None:
        fresh.coded_windows(windows, seq_len)

    def decoding(fresh: Genome, windows: list) -> None:
        for chrom in {chrom for chrom, _ in windows}:
            starts = [start for c, start in windows if c == chrom]
            fresh.conservation(chrom, min(starts), max(starts) + seq_len, CONSERVATION_DTYPE)

    rows = []
    for label, windows, size in (("consecutive tiles", tiles, batch), ("dispersed windows", dispersed, 1)):
        for method, prepare in (("previous: each window read and encoded on the host, float32", previous),
                                ("now: codes + float16 conservation, neighbours read as one block", coded),
                                ("of which: decoding the conservation bigWig alone (pyBigWig)", decoding)):
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < min_seconds:
                with Genome(genome.fasta_path, genome.conservation_path) as fresh:
                    for lo in range(0, len(windows), size):
                        prepare(fresh, windows[lo: lo + size])
                done += len(windows)
            rows.append((label, method, done / (time.perf_counter() - started)))
    return rows


def naive_rate(engine: Engine, genome: Genome, intervals: list[tuple[str, int]]) -> float:
    """Windows/s of a loop that reads, encodes and predicts one window at a time."""
    kept = []
    start = time.perf_counter()
    for chrom, window_start in intervals:
        x = genome.encode(chrom, window_start, window_start + engine.config.seq_len)
        kept.append(engine.predict(x[None]).astype(np.float16))
    return len(intervals) / (time.perf_counter() - start)


def forward_flops(model: torch.nn.Module, seq_len: int) -> float:
    """FLOPs of one forward pass of one window, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 4, seq_len))
    return float(counter.get_total_flops())


def gpu_forwards_per_s(models: ModelSet, device: torch.device, batch: int, repeats: int) -> float:
    x = torch.randn(batch, 4, models.config.seq_len, device=device)
    models = models.to(device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        models(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            models(x)
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def duration(seconds: float) -> str:
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--paper-windows", type=int, default=0,
                        help="windows of the paper configuration to time (default: 4 on CPU, 64 on CUDA)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the tiny runs (median kept)")
    parser.add_argument("--write", metavar="BENCHMARKS.md")
    parser.add_argument("--readme", metavar="README.md", help="also write the hg38 projection table here")
    parser.add_argument("--host-only", action="store_true", help="only the host-side table (a few seconds)")
    args = parser.parse_args()
    device = select_device(args.device)
    cuda = device.type == "cuda"
    paper_windows = args.paper_windows or (64 if cuda else 4)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_demo_data(tmp / "demo", DemoSpec())
        with Genome(paths["fasta"], paths["conservation"]) as genome:
            paper_cfg = preset("paper")
            host = host_rates(genome, paper_cfg.seq_len, paper_cfg.n_output_bins * paper_cfg.bin_size)
            publish("precompute-host", [
                f"Host side alone, one process on {machine_description(torch.device('cpu'))}: windows of "
                f"{paper_cfg.seq_len:,} bp prepared for the device per second, on the demo genome (6 Mb), "
                f"batches of 8 consecutive tiles or one window at a time at random places.",
                "",
                "| windows | method | windows/s | speed-up |",
                "| --- | --- | ---: | ---: |",
                *(f"| {label} | {method} | {rate:,.0f} | {rate / host[3 * (k // 3)][2]:.1f}x |"
                  for k, (label, method, rate) in enumerate(host)),
            ], args.write)
            if args.host_only:
                return
            tiny = model_set("tiny", tmp)
            tiny_engine = Engine(tiny, device=device, batch_size=1)
            configs = [(1, 0), (8, 0), (8, 2)]
            rates: dict = {"naive": [], **{c: [] for c in configs}}
            for round_ in range(args.rounds):
                for batch_size, workers in configs:
                    options = PrecomputeOptions(io_workers=workers, progress=False, log=lambda _: None)
                    settings = InferenceSettings(device=str(device), batch_size=batch_size,
                                                 precision="bf16" if cuda else "fp32",
                                                 conservation=str(paths["conservation"]))
                    started = time.perf_counter()
                    result = precompute(tiny, paths["fasta"], tmp / f"tiny-{batch_size}-{workers}-{round_}", settings,
                                        options)
                    if (batch_size, workers) == configs[-1]:
                        end_to_end = time.perf_counter() - started
                    rates[(batch_size, workers)].append(result["stats"]["windows_per_s"])
                plan = result["plan"]
                rates["naive"].append(naive_rate(tiny_engine, genome, plan.intervals(range(plan.n_windows))))
            median = {k: float(np.median(v)) for k, v in rates.items()}
            tiny_naive = median["naive"]

            paper = model_set("paper", tmp)
            flops = forward_flops(paper, paper.config.seq_len)
            batch = 8 if cuda else 1
            engine = Engine(paper, device=device, batch_size=batch, bf16=cuda)
            paper_plan = plan_tiles(genome, engine, batch)
            batches = -(-paper_windows // batch)
            reader = BatchReader(paper_plan, range(batches + 1), paths["fasta"], paths["conservation"],
                                 engine.coded_start(0), engine.coded_length, None)
            paper_pipeline = measure_rate(engine, reader, io_workers=default_io_workers(engine), min_seconds=float("inf"),
                                          max_batches=batches)
            paper_naive = naive_rate(Engine(paper, device=device, batch_size=1, bf16=cuda), genome,
                                     paper_plan.intervals(range(1, 1 + min(paper_windows, 2 if not cuda else 16))))
            gpu_line = []
            if cuda:
                forwards = gpu_forwards_per_s(paper, device, batch=16, repeats=20)
                name = torch.cuda.get_device_name(device)
                peak = next((v for k, v in BF16_PEAK.items() if k in name), None)
                share = f", {forwards * flops / peak:.0%} of its {peak / 1e12:.0f} TFLOP/s bf16 peak" if peak else ""
                gpu_line = [f"Paper configuration on {name}, bf16, batch 16: {forwards:.1f} forward passes/s "
                            f"({forwards * flops / 1e12:.0f} TFLOP/s{share}).", ""]

    stride_tiny, stride_paper = plan.stride, paper_plan.stride
    rows = [("tiny (8,192 bp)", "naive loop: batch 1, reading then computing", tiny_naive, stride_tiny),
            *(("tiny (8,192 bp)", f"precompute pipeline: batches of {b}, "
               + (f"{w} reading processes" if w else "reading in the main process"), median[(b, w)], stride_tiny)
              for b, w in configs),
            ("paper (98,304 bp)", "naive loop: batch 1, reading then computing", paper_naive, stride_paper),
            ("paper (98,304 bp)", f"precompute pipeline: batches of {batch}, "
             + ("2 reading processes, bf16" if cuda else "reading in the main process"), paper_pipeline,
             stride_paper)]
    hg38_windows = HG38_BP / stride_paper
    hg38_one = hg38_windows / paper_pipeline
    projection = [
        f"Projected hg38 precompute with the paper configuration, from the pipeline rate measured on "
        f"{machine_description(device)} ({paper_pipeline:.3f} windows/s; {hg38_windows:,.0f} windows of "
        f"{stride_paper:,} bp output, reverse-complement ensembling on), assuming shards scale linearly:",
        "",
        "| how | devices | projected wall time |",
        "| --- | ---: | ---: |",
        f"| one process on one such device | 1 | {duration(hg38_one)} |",
        f"| torchrun on a node with 8 such devices | 8 | {duration(hg38_one / 8)} |",
        f"| SLURM job array of 32 tasks, one such device each (+ merge) | 32 | {duration(hg38_one / 32)} |",
    ]
    lines = [
        f"Device: {machine_description(device)}. Demo genome, 6 Mb, 8 cell types; reverse-complement "
        f"ensembling on in every row (two forward passes per window).",
        "",
        "| model | method | windows/s | Mb of output/s | speed-up |",
        "| --- | --- | ---: | ---: | ---: |",
        *(f"| {model} | {method} | {rate:.3f} | {rate * stride / 1e6:.3f} | "
          f"{rate / (tiny_naive if model.startswith('tiny') else paper_naive):.2f}x |"
          for model, method, rate, stride in rows),
        "",
        f"Tiny rows: medians of {args.rounds} alternating rounds over all {plan.n_windows} windows "
        f"({plan.skipped} tiles skipped as N); the pipeline's rate counts its prediction stage (reading, "
        f"inference, masking, float16 shard writes). End to end, with planning and the merge to 8 bigWigs, the "
        f"last configuration took {end_to_end:.1f} s. The paper configuration was timed on "
        f"{batches} batches after a warm-up batch (the naive loop on "
        f"{min(paper_windows, 2 if not cuda else 16)} windows). One paper-configuration forward pass of one "
        f"window is {flops / 1e9:.0f} GFLOP (counted by torch.utils.flop_counter).",
        "",
        *gpu_line,
        *projection,
        "",
        f"hg38 with the tiny model, for scale: {HG38_BP / stride_tiny:,.0f} windows, "
        f"{duration(HG38_BP / stride_tiny / median[configs[-1]])} on this device.",
    ]
    publish("precompute", lines, args.write)
    if args.readme:
        from report import command_line

        update_section(args.readme, "precompute-hg38", "\n".join([*projection, "", f"Command: `{command_line()}`"]))


if __name__ == "__main__":
    main()
