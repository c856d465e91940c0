"""The offline demo: a small random genome, the ``tiny`` model, one predicted window."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .config import preset
from .engine import Engine
from .files import atomic_path
from .genome import BASES, Genome
from .model import Epiformer


def write_random_genome(outdir: str | os.PathLike, chrom_sizes: dict[str, int],
                        seed: int = 0) -> tuple[Path, Path]:
    """Write ``genome.fa`` (60 bases a line) and a 0..1 ``conservation.bw`` of random values."""
    import pyBigWig

    outdir = Path(outdir)
    rng = np.random.default_rng(seed)
    fasta = outdir / "genome.fa"
    with atomic_path(fasta) as tmp, open(tmp, "w") as handle:
        for name, size in chrom_sizes.items():
            seq = np.frombuffer(BASES.encode(), np.uint8)[rng.integers(0, 4, size)].tobytes().decode()
            handle.write(f">{name}\n")
            handle.writelines(seq[i: i + 60] + "\n" for i in range(0, size, 60))
    bigwig = outdir / "conservation.bw"
    with atomic_path(bigwig) as tmp:
        bw = pyBigWig.open(str(tmp), "w")
        bw.addHeader(list(chrom_sizes.items()))
        for name, size in chrom_sizes.items():
            values = rng.beta(0.5, 2.0, size).astype(np.float64)
            bw.addEntries(name, 0, values=values, span=1, step=1)
        bw.close()
    return fasta, bigwig


def run_demo(outdir: str | os.PathLike, seed: int = 0, device: str = "auto") -> dict[str, tuple]:
    """Predict one random window of a random genome with an untrained ``tiny`` model.

    Returns the shapes it printed: the encoded input and the prediction.
    """
    outdir = Path(outdir)
    torch.manual_seed(seed)
    config = preset("tiny")
    fasta, cons = write_random_genome(outdir, {"chrDemo1": 200_000, "chrDemo2": 120_000}, seed)
    model = Epiformer(config, ["HIP", "ASCT", "OPC", "OGC", "MGC", "VIP", "ITL23", "ET"])
    engine = Engine(model, device=device)
    rng = np.random.default_rng(seed)
    with Genome(fasta, cons) as genome:
        chrom = "chrDemo1"
        start = int(rng.integers(0, genome.chrom_sizes[chrom] - config.seq_len))
        encoded = genome.encode(chrom, start, start + config.seq_len)
        prediction = engine.predict(encoded[None])
    print(f"genome      {fasta} ({sum(genome.chrom_sizes.values()):,} bp), conservation {cons}")
    print(f"model       tiny preset, {model.num_parameters():,} parameters, device {engine.device}")
    print(f"window      {chrom}:{start + 1}-{start + config.seq_len} (1-based)")
    print(f"input       {tuple(encoded[None].shape)}  (batch, A/C/G/T, bases)")
    print(f"prediction  {tuple(prediction.shape)}  (batch, cell types, {config.bin_size} bp bins)")
    for name, track in zip(model.target_names, prediction[0]):
        print(f"  {name:<6} mean {track.mean():.3f}  max {track.max():.3f}")
    return {"input": tuple(encoded[None].shape), "prediction": tuple(prediction.shape)}
