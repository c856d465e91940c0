"""One script for a GPU (or, with --quick, any machine): the figures that matter on the device.

    bash bench/gpu.sh                                   # on one GPU, in at most 8 minutes
    bash bench/gpu.sh --write BENCHMARKS.md             # also put the table in BENCHMARKS.md
    bash bench/gpu.sh --quick                           # tiny model, small inputs: a check that it runs

Prints one table, on the current device (CUDA when available), reverse-complement ensembling on:

* forward pass of the paper configuration (98,304 bp), fp32 and bf16 (and bf16 with the tower's
  modules run one by one, the previous path): windows/s, and the share of the device's dense bf16
  peak reached (FLOPs of a forward pass counted by ``torch.utils.flop_counter``; two passes a
  window with reverse complement);
* the host side alone: windows prepared for the device per second by one process (codes and
  float16 conservation), for consecutive tiles and for dispersed windows;
* ``epiformer precompute`` on a synthetic genome (30 Mb; the demo generator's): windows/s, and
  hg38 projected for one device and for eight;
* ``score-variants`` (the library path it runs) on dispersed SNVs, and the server's variant
  queries/s (its predictor and batcher, in this process) for 1 and 16 clients;
* saturation mutagenesis of 714 bp x 3 alleles (the original notebook's region size).

--quick swaps in the tiny model (8,192 bp) and small inputs; the test suite runs it on a CPU so
the script cannot rot. Weights are random: speed does not depend on them.
"""
from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_interpret import PEAK_BP, PEAKS, interpretation_rates  # noqa: E402
from bench_precompute import BF16_PEAK, HG38_BP, duration, forward_flops, host_rates  # noqa: E402
from bench_variants import dispersed_snvs, scoring_rate  # noqa: E402
from report import device_script_arguments, machine_description, publish  # noqa: E402

from epiformer.demo.synthetic_genome import CELL_TYPES, DemoSpec, make_demo_data  # noqa: E402
from epiformer.genome.reader import Genome  # noqa: E402
from epiformer.inference.device import select_device  # noqa: E402
from epiformer.inference.engine import Engine  # noqa: E402
from epiformer.inference.predictor import open_predictor  # noqa: E402
from epiformer.inference.settings import InferenceSettings, ModelSetOptions  # noqa: E402
from epiformer.model.checkpoints import save_checkpoint  # noqa: E402
from epiformer.model.config import preset  # noqa: E402
from epiformer.model.model_set import load_model_set  # noqa: E402
from epiformer.model.network import Epiformer  # noqa: E402
from epiformer.variants.alleles import make_variant  # noqa: E402
from epiformer.variants.mutagenesis import saturation_mutagenesis  # noqa: E402
from epiformer.variants.scorer import VariantScorer  # noqa: E402

FULL = {"preset": "paper", "genome_mb": 30.0, "forward_windows": 64, "batch": 16, "variants": 256,
        "queries": 160, "ism_bp": 714, "host_seconds": 2.0, "interpret_regions": 64, "interpret_ism_bp": 20}
QUICK = {"preset": "tiny", "genome_mb": 1.0, "forward_windows": 8, "batch": 4, "variants": 16,
         "queries": 16, "ism_bp": 10, "host_seconds": 0.2, "interpret_regions": 4, "interpret_ism_bp": 2}


def forward_rate(models, device: torch.device, bf16: bool, windows: int, batch: int, tower: str = "fused") -> float:
    """Windows/s of the engine's forward pass (reverse complement on) on random encoded windows,
    the tower in ``tower`` mode (:class:`epiformer.model.network.ConvTower`)."""
    for member in models.members:
        member.conv.mode = tower
    engine = Engine(models, device=device, batch_size=batch, bf16=bf16)
    x = torch.rand(windows, 4, models.config.seq_len)
    engine.predict(x[:batch])
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    engine.predict(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return windows / (time.perf_counter() - started)


def server_rate(precompute_dir: Path, checkpoint: Path, device: torch.device, snvs: list, clients: int) -> float:
    """Variant queries/s (one SNV each) through the server's predictor and batcher from ``clients`` threads."""
    from epiformer.io.manifest import read_manifest
    from epiformer.server.on_demand import ServerPredictor
    from epiformer.server.server_config import load_config

    cfg = load_config({"precompute_dir": str(precompute_dir), "models": [str(checkpoint)], "device": str(device),
                       "precision": "bf16" if device.type == "cuda" else "fp32", "cache_windows": 0}, environ={})
    predictor = ServerPredictor(cfg, read_manifest(precompute_dir))
    variants = [make_variant(*snv) for snv in snvs]
    try:
        predictor.score_variants(variants[:1], cfg.scoring.score_bp, False)
        queue = list(variants)
        lock = threading.Lock()

        def client() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    variant = queue.pop()
                predictor.score_variants([variant], cfg.scoring.score_bp, False)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return len(variants) / (time.perf_counter() - started)
    finally:
        predictor.close()


def main() -> None:
    args = device_script_arguments(__doc__, "tiny model and small inputs (any machine, about a minute)")
    size = QUICK if args.quick else FULL
    device = select_device(args.device)
    cuda = device.type == "cuda"
    precision = "bf16" if cuda else "fp32"
    from epiformer.precompute import PrecomputeOptions, precompute

    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        config = preset(size["preset"], multiout_dim=len(CELL_TYPES))
        checkpoint = save_checkpoint(tmp / "model.pth.tar", Epiformer(config, list(CELL_TYPES)).eval())
        models = load_model_set([str(checkpoint)])
        flops = 2 * forward_flops(models, config.seq_len)       # a window and its reverse complement
        peak = next((v for k, v in BF16_PEAK.items() if cuda and k in torch.cuda.get_device_name(device)), None)
        for name, bf16, tower in (("fp32", False, "fused"), ("bf16", True, "fused"),
                                  ("bf16, tower modules one by one (previous path)", True, "reference")):
            rate = forward_rate(models, device, bf16, size["forward_windows"], size["batch"], tower)
            share = f", {rate * flops / peak:.1%} of the bf16 peak" if peak else ""
            rows.append((f"forward pass, {name}, batch {size['batch']}",
                         f"{rate:.2f} windows/s ({rate * flops / 1e12:.2f} TFLOP/s{share})"))

        paths = make_demo_data(tmp / "genome", DemoSpec.scaled(total_mb=size["genome_mb"], n_chroms=3, seed=7))
        with Genome(paths["fasta"], paths["conservation"]) as genome:
            host = host_rates(genome, config.seq_len, config.n_output_bins * config.bin_size, min_seconds=size["host_seconds"])
        rates = {label: rate for label, method, rate in host if method.startswith("now")}
        rows.append(("host side, one process: windows prepared for the device",
                     ", ".join(f"{rate:,.0f}/s {label}" for label, rate in rates.items())))
        settings = InferenceSettings(device=str(device), batch_size=size["batch"], precision=precision,
                                     conservation=str(paths["conservation"]))
        result = precompute(models, paths["fasta"], tmp / "pre", settings,
                            PrecomputeOptions(progress=False, log=lambda _: None), genome_name="synthetic")
        windows_per_s, stride = result["stats"]["windows_per_s"], result["plan"].stride
        hg38 = HG38_BP / stride / windows_per_s
        rows.append((f"precompute, {size['genome_mb']:g} Mb synthetic genome",
                     f"{windows_per_s:.2f} windows/s; hg38 projected {duration(hg38)} on one device, "
                     f"{duration(hg38 / 8)} on eight"))

        with open_predictor(ModelSetOptions((str(checkpoint),)), paths["fasta"], settings) as predictor:
            snvs = dispersed_snvs(predictor.genome, size["variants"])
            queries = dispersed_snvs(predictor.genome, size["queries"], seed=5)
            rows.append((f"score-variants, {len(snvs)} dispersed SNVs",
                         f"{scoring_rate(predictor, snvs, tmp / 'scores'):.2f} variants/s"))
            chrom = next(iter(predictor.genome.chrom_sizes))
            start = predictor.genome.chrom_sizes[chrom] // 2
            ism = saturation_mutagenesis(VariantScorer(predictor), chrom, start, start + size["ism_bp"])
            rows.append((f"saturation mutagenesis, {size['ism_bp']} bp x 3",
                         f"{ism.seconds:.1f} s ({3 * size['ism_bp'] / ism.seconds:.1f} substitutions/s)"))
            rates = interpretation_rates(predictor, size["interpret_regions"], size["interpret_ism_bp"])
            for method, rate in rates.items():
                rows.append((f"interpret --method {method}, {len(CELL_TYPES)} cell types at once",
                             f"{rate:,.1f} bases/s; {PEAKS:,} peaks of {PEAK_BP} bp in "
                             f"{duration(PEAKS * PEAK_BP / rate)} on one device"))
        for clients in (1, 16):
            rate = server_rate(tmp / "pre", checkpoint, device, queries, clients)
            rows.append((f"server variant queries, {clients} client{'s' if clients > 1 else ''}", f"{rate:.2f} queries/s"))

    lines = [
        f"Device: {machine_description(device)}. {'Tiny model (quick mode)' if args.quick else 'Paper configuration'} "
        f"({config.seq_len:,} bp windows), {precision} unless the row says; reverse-complement ensembling on; one "
        f"forward pass of one window is {flops / 2e9:.1f} GFLOP.",
        "",
        "| what | measured |",
        "| --- | --- |",
        *(f"| {what} | {value} |" for what, value in rows),
    ]
    publish("gpu-quick" if args.quick else "gpu", lines, args.write)


if __name__ == "__main__":
    main()
