"""Shared fixtures: the reference checkpoint of the original code, small genomes, tiny models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from epiformer.model.config import preset
from epiformer.model.network import Epiformer
from epiformer.training.datasets import DatasetParameters

from .helpers import DATA, PAPER_CHECKPOINT_NAME, SIZES, write_bigwig, write_fasta


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def compat_checkpoint() -> Path:
    return DATA / "original_epiformer_small.pth.tar"


@pytest.fixture
def compat_io() -> dict[str, np.ndarray]:
    with np.load(DATA / "original_epiformer_small.io.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture
def tiny_model() -> Epiformer:
    return Epiformer(preset("tiny")).eval()


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """A tiny model of the demo's shape with outputs of its own (X and Y), saved."""
    from epiformer import save_checkpoint

    torch.manual_seed(1)
    return save_checkpoint(tmp_path / "m.pth.tar", Epiformer(preset("tiny", multiout_dim=2), ["X", "Y"]).eval())


@pytest.fixture
def small_genome(tmp_path: Path) -> dict:
    """chr1: 'ACGTacgtNNRYKM' + 26 bases; chr2: 100 bases; conservation on chr1 with a NaN gap."""
    rng = np.random.default_rng(1)
    chr1 = "ACGTacgtNNRYKM" + "".join(rng.choice(list("ACGT"), 26))
    chr2 = "".join(rng.choice(list("ACGT"), 100))
    fasta = write_fasta(tmp_path / "genome.fa", {"chr1": chr1, "chr2": chr2}, width=7)
    cons1 = np.linspace(0.0, 1.0, len(chr1))
    cons1[5:8] = np.nan
    sizes = {"chr1": len(chr1), "chr2": len(chr2)}
    bigwig = write_bigwig(tmp_path / "cons.bw", sizes, {"chr1": cons1})
    return {"fasta": fasta, "bigwig": bigwig, "chr1": chr1, "chr2": chr2, "cons1": cons1, "sizes": sizes}


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A small demo genome (three chromosomes, 0.6 Mb), made once per test session."""
    from epiformer.demo.synthetic_genome import DemoSpec, make_demo_data

    outdir = tmp_path_factory.mktemp("demo_data")
    make_demo_data(outdir, DemoSpec.scaled(total_mb=0.6, n_chroms=3, seed=1))
    return outdir


@pytest.fixture(scope="session")
def precomputed(tmp_path_factory, demo_data) -> Path:
    """A precompute folder (genome "demo") of the small demo genome, made once per session with a
    randomly initialised tiny model; its checkpoint is beside it as model.pth.tar."""
    from epiformer import save_checkpoint
    from epiformer.demo.synthetic_genome import CELL_TYPES
    from epiformer.inference.settings import InferenceSettings
    from epiformer.model.model_set import load_model_set
    from epiformer.precompute import PrecomputeOptions, precompute

    torch.manual_seed(5)
    folder = tmp_path_factory.mktemp("precomputed")
    model = save_checkpoint(folder / "model.pth.tar", Epiformer(preset("tiny"), list(CELL_TYPES)).eval())
    precompute(load_model_set([str(model)]), demo_data / "genome.fa", folder / "out",
               InferenceSettings(device="cpu", conservation=str(demo_data / "conservation.bw")),
               PrecomputeOptions(progress=False, log=lambda _: None), genome_name="demo")
    return folder / "out"


@pytest.fixture
def app(precomputed, tmp_path):
    """The server app over the session's precompute folder, with its hub built in tmp_path."""
    from epiformer.server import create_app

    return create_app({"precompute_dir": str(precomputed), "hub_dir": str(tmp_path / "hub"), "log_requests": False})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def paper_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised paper-configuration model (98,304 bp, 54.8 M parameters, one output)
    saved in the original's format under a published checkpoint's name, made once per session."""
    from epiformer.model.checkpoints import save_original_checkpoint

    torch.manual_seed(33)
    model = Epiformer(preset("paper")).eval()
    return save_original_checkpoint(tmp_path_factory.mktemp("paper") / PAPER_CHECKPOINT_NAME, model)


@pytest.fixture(scope="session")
def paper_genome(tmp_path_factory) -> Path:
    """The demo generator's genome with two chromosomes of a few paper windows each (180 and 120 kb)."""
    from epiformer.demo.synthetic_genome import DemoSpec, make_demo_data

    outdir = tmp_path_factory.mktemp("paper_genome")
    make_demo_data(outdir, DemoSpec(seed=4, chrom_sizes={"chr1": 180_000, "chr2": 120_000}))
    return outdir


@pytest.fixture
def inputs(tmp_path):
    """A four-chromosome genome small enough to check by hand, two targets and generate-datasets' parameters."""
    rng = np.random.default_rng(0)
    seqs = {c: "".join(rng.choice(list("ACGT"), n)) for c, n in SIZES.items()}
    seqs["chr1"] = seqs["chr1"][:300] + "N" + seqs["chr1"][301:]
    seqs["chr2"] = seqs["chr2"][:10] + seqs["chr2"][10:20].lower() + seqs["chr2"][20:]
    write_fasta(tmp_path / "g.fa", seqs, width=50)
    (tmp_path / "g.sizes").write_text("".join(f"{c}\t{n}\n" for c, n in SIZES.items()))
    a = {c: np.full(n, float(i + 1)) for i, (c, n) in enumerate(SIZES.items())}
    a["chr1"] = np.arange(1000) / 10.0
    a["chr2"][128:136] = np.nan
    write_bigwig(tmp_path / "A.bw", SIZES, a)
    write_bigwig(tmp_path / "B.bw", SIZES, {c: np.full(n, 5.0) for c, n in SIZES.items()})
    write_bigwig(tmp_path / "cons.bw", SIZES, {c: np.full(n, 0.5) for c, n in SIZES.items()})
    (tmp_path / "blacklist.bed").write_text("chr1\t640\t641\n")
    (tmp_path / "B.peaks.bed").write_text("chr1\t130\t150\n")
    (tmp_path / "targets.txt").write_text(
        "index\tidentifier\tfile\tclip\tsum_stat\tdescription\tpeak\n"
        "0\tA\tA.bw\t1000\tmean\ttrack A\t\n"
        "1\tB\tB.bw\t4\tsum\ttrack B\tB.peaks.bed\n")
    (tmp_path / "targets3.txt").write_text(
        "index\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription\n"
        "0\tA\tA.bw\t9\t2\tmedian\tA doubled, clipped at 9\n")
    params = DatasetParameters(fasta=str(tmp_path / "g.fa"), conservation=str(tmp_path / "cons.bw"),
                               chrom_sizes=str(tmp_path / "g.sizes"), targets=str(tmp_path / "targets.txt"),
                               blacklist=str(tmp_path / "blacklist.bed"), seq_len=128, bin_size=16, nchunk=3)
    return {"dir": tmp_path, "seqs": seqs, "params": params}
