"""Genome-wide precompute: tiling, shard files, resume, sharding, merge to bigWig, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pyBigWig
import pytest
import torch

from epiformer import save_checkpoint
from epiformer.cli import main
from epiformer.demo.synthetic_genome import CELL_TYPES
from epiformer.genome.encoding import sequence_codes
from epiformer.genome.interval_index import IntervalIndex
from epiformer.genome.intervals import read_bed_intervals
from epiformer.genome.reader import Genome
from epiformer.inference.engine import Engine
from epiformer.inference.settings import InferenceSettings
from epiformer.model.config import preset
from epiformer.model.model_set import load_model_set
from epiformer.model.network import Epiformer
from epiformer.parallel.sharded_jobs import ShardError, parse_shard
from epiformer.precompute import PrecomputeError, PrecomputeOptions, merge_tracks, precompute
from epiformer.precompute.plan import plan_tiles

from .helpers import single_output_original, write_bigwig, write_fasta

QUIET = PrecomputeOptions(io_workers=0, progress=False, log=lambda _: None)


def settings(conservation, batch_size: int = 4, **changes) -> InferenceSettings:
    return InferenceSettings(device="cpu", batch_size=batch_size, conservation=str(conservation), **changes)


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    model = Epiformer(preset("tiny"), list(CELL_TYPES)).eval()
    return save_checkpoint(tmp_path_factory.mktemp("model") / "demo.pth.tar", model)


def demo_inputs(demo_data: Path) -> dict:
    return {"fasta": demo_data / "genome.fa", "conservation": demo_data / "conservation.bw",
            "blacklist": demo_data / "blacklist.bed"}


def run(model_path, demo_data, outdir, batch_size=4, **kwargs):
    inputs = demo_inputs(demo_data)
    return precompute(load_model_set([str(model_path)]), inputs["fasta"], outdir,
                      settings(inputs["conservation"], batch_size), QUIET, blacklist=inputs["blacklist"], **kwargs)


def bigwig_bytes(outdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((outdir / "tracks").glob("*.bw"))}


@pytest.fixture(scope="module")
def reference(demo_model, demo_data, tmp_path_factory) -> Path:
    """One uninterrupted single-shard run over the demo genome."""
    outdir = tmp_path_factory.mktemp("reference")
    run(demo_model, demo_data, outdir)
    return outdir


def test_tiles_abut_from_base_zero_and_skip_empty_windows(tmp_path, tiny_model):
    rng = np.random.default_rng(0)
    engine = Engine(tiny_model, device="cpu")
    stride = engine.output_span
    chr1 = "".join(rng.choice(list("ACGT"), 3 * stride)) + "N" * (3 * stride) + "".join(rng.choice(list("ACGT"), 500))
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": chr1, "chrN": "N" * 10_000, "chr2": "ACGT" * 100})
    with Genome(fasta) as genome:
        plan = plan_tiles(genome, engine, batch_size=3)
        black = IntervalIndex([("chr1", 0, stride), ("chr2", 0, 10)])
        blacklisted = plan_tiles(genome, engine, batch_size=3, blacklist=black)
        only_chr2 = plan_tiles(genome, engine, batch_size=3, chroms=["chr2"])
    assert stride == 6144 and plan.stride == stride
    starts = plan.output_starts()[plan.window_chrom == 0]
    assert starts.tolist() == [0, stride, 2 * stride, 6 * stride], "the N gap's three tiles are skipped"
    assert plan.window_start[0] == -engine.output_offset, "the first window is N-padded to put its output at 0"
    assert starts[-1] + stride >= len(chr1), "the last window runs past the chromosome end"
    assert plan.chroms == ["chr1", "chrN", "chr2"] and not (plan.window_chrom == 1).any()
    assert plan.skipped == 3 + 2 and plan.n_batches == 2
    assert blacklisted.skipped == plan.skipped + 1, "a wholly blacklisted output is skipped, a partly one is not"
    assert only_chr2.chroms == ["chr2"] and only_chr2.n_windows == 1


def test_bigwigs_match_direct_prediction_with_empty_bins_left_out(reference, demo_model, demo_data):
    manifest = json.loads((reference / "manifest.json").read_text())
    names = [t["name"] for t in manifest["tracks"]]
    assert names == list(CELL_TYPES)
    assert len({t["color"] for t in manifest["tracks"]}) == len(names)
    assert manifest["params"]["stride"] == 6144 and manifest["params"]["first_window_start"] == -1024
    assert manifest["models"][0]["sha256"] and manifest["genome"]["chrom_sizes"]["chr1"] > 0
    inputs = demo_inputs(demo_data)
    black = IntervalIndex(list(read_bed_intervals(inputs["blacklist"])))
    engine = Engine(load_model_set([str(demo_model)]), device="cpu")
    with Genome(inputs["fasta"], inputs["conservation"]) as genome:
        for chrom, size in genome.chrom_sizes.items():
            expected = engine.predict_region(genome, chrom, 0, size)
            assert expected.start == 0
            starts = expected.bin_starts()
            no_bases = (sequence_codes(genome.sequence(chrom, 0, len(starts) * 128)).reshape(-1, 128) == 4).all(1)
            empty = no_bases | black.overlaps(chrom, starts, starts + 128)
            assert empty.any() and not empty.all()
            for i, name in enumerate(names):
                with pyBigWig.open(str(reference / "tracks" / f"{name}.bw")) as bw:
                    assert bw.chroms() == genome.chrom_sizes, "every chromosome is in the header"
                    got = np.array([bw.values(chrom, int(s), int(s) + 1)[0] for s in starts])
                    assert bw.intervals(chrom)[-1][1] <= size
                    if i == 0:
                        assert bw.header()["nLevels"] >= 1, "zoom levels are written"
                        spans = {e - s for s, e, _ in bw.intervals(chrom)[:-1]}
                        assert spans == {128}
                np.testing.assert_array_equal(np.isnan(got), empty)
                want = expected.values[i][~empty].astype(np.float16).astype(np.float32)
                np.testing.assert_allclose(got[~empty], want, rtol=2e-3, atol=1e-4)


def test_shards_give_bit_identical_bigwigs(reference, demo_model, demo_data, tmp_path, capsys):
    outdir = tmp_path / "two"
    first = run(demo_model, demo_data, outdir, shard=(0, 2))
    assert "manifest" not in first and not (outdir / "tracks").exists()
    with pytest.raises(PrecomputeError, match=r"shard 1/2 has not started .* --shard 1/2"):
        merge_tracks(outdir, progress=False)
    run(demo_model, demo_data, outdir, shard=(1, 2))
    assert main(["precompute-merge", str(outdir), "-q"]) == 0
    assert "wrote 8 bigWigs" in capsys.readouterr().out
    assert bigwig_bytes(outdir) == bigwig_bytes(reference)
    assert json.loads((outdir / "manifest.json").read_text())["params"]["shards"] == 2


def test_a_finished_batch_is_not_predicted_again(reference, demo_model, demo_data, tmp_path):
    outdir = tmp_path / "resume"
    run(demo_model, demo_data, outdir)
    shard = outdir / "shards" / "shard-00000-of-00001.h5"
    with h5py.File(shard, "r+") as f:
        f["done"][3:7] = 0
        f["values"][12:28] = 0
    result = run(demo_model, demo_data, outdir)
    assert result["stats"]["windows"] == 16, "only the four unfinished batches ran"
    assert bigwig_bytes(outdir) == bigwig_bytes(reference)


@pytest.mark.slow
def test_killed_run_resumes_to_identical_output(demo_model, demo_data, tmp_path):
    """SIGKILL at five random points, each time resuming; the bigWigs equal an uninterrupted run's."""
    inputs = demo_inputs(demo_data)
    outdir = tmp_path / "killed"
    command = [sys.executable, "-m", "epiformer.cli", "precompute", "-m", str(demo_model), "--fa", str(inputs["fasta"]),
               "--seqcons", str(inputs["conservation"]), "--blacklist", str(inputs["blacklist"]), "-o", str(outdir),
               "--batch-size", "1", "--io-workers", "1", "-q"]
    shard = outdir / "shards" / "shard-00000-of-00001.h5"
    rng = np.random.default_rng(0)
    kills = []
    for _ in range(5):
        target = (kills[-1] if kills else 0) + int(rng.integers(2, 12))
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        done = 0
        while proc.poll() is None and done < target:
            time.sleep(0.01)
            if shard.exists():
                with h5py.File(shard, "r", locking=False) as f:
                    done = int(f["done"][:].sum())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        kills.append(done)
    with h5py.File(shard, "r") as f:
        assert 0 < f["done"][:].sum() < len(f["done"]), "the killed run left a readable, partial shard"
    assert not (outdir / "tracks").exists()
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    reference = tmp_path / "uninterrupted"
    run(demo_model, demo_data, reference, batch_size=1)
    assert bigwig_bytes(outdir) == bigwig_bytes(reference)


def test_set_of_original_checkpoints_gives_each_ones_tracks(compat_checkpoint, demo_data, tmp_path):
    a = single_output_original(compat_checkpoint, tmp_path / "a.pth.tar", 0)
    b = single_output_original(compat_checkpoint, tmp_path / "b.pth.tar", 2)
    inputs = demo_inputs(demo_data)

    def tracks(specs, outdir):
        precompute(load_model_set(specs), inputs["fasta"], outdir, settings(inputs["conservation"]), QUIET,
                   chroms=["chr3"])
        return bigwig_bytes(outdir)

    together = tracks([f"MGC={a}", f"OPC={b}"], tmp_path / "pair")
    assert together == {**tracks([f"MGC={a}"], tmp_path / "a"), **tracks([f"OPC={b}"], tmp_path / "b")}


def test_dry_run_projects_time_and_writes_nothing(demo_model, demo_data, tmp_path, capsys):
    inputs = demo_inputs(demo_data)
    outdir = tmp_path / "dry"
    argv = ["precompute", "-m", str(demo_model), "--fa", str(inputs["fasta"]), "--seqcons", str(inputs["conservation"]),
            "-o", str(outdir), "--dry-run", "--io-workers", "0", "-q"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "windows of 8,192 bp" in out and "windows/s" in out and "the whole run would take" in out
    assert not outdir.exists()


def test_another_runs_shards_are_refused(demo_model, demo_data, tmp_path, compat_checkpoint):
    outdir = tmp_path / "out"
    run(demo_model, demo_data, outdir, chroms=["chr3"])
    other = save_checkpoint(tmp_path / "other.pth.tar", Epiformer(preset("tiny"), list(CELL_TYPES)))
    with pytest.raises(PrecomputeError, match="holds another precompute run's shards .*checkpoints"):
        run(other, demo_data, outdir, chroms=["chr3"])
    with pytest.raises(PrecomputeError, match="holds another precompute run's shards .*plan"):
        run(demo_model, demo_data, outdir, chroms=["chr2"])
    with pytest.raises(PrecomputeError, match="split 1 ways .* continue with 1 shards"):
        run(demo_model, demo_data, outdir, chroms=["chr3"], shard=(0, 2))


def test_model_and_genome_must_agree(demo_model, demo_data, tmp_path, capsys):
    inputs = demo_inputs(demo_data)
    with Genome(inputs["fasta"]) as genome:
        sizes = genome.chrom_sizes
    renamed = write_bigwig(tmp_path / "cons.bw", {"1": sizes["chr1"], "2": sizes["chr2"]}, {"1": np.ones(100)})
    with pytest.raises(PrecomputeError, match=r"has no chr3 \(1 of 3 chromosomes\)"):      # its 1 and 2 are chr1, chr2
        precompute(load_model_set([str(demo_model)]), inputs["fasta"], tmp_path / "x", settings(renamed), QUIET)
    partial = write_bigwig(tmp_path / "partial.bw", {"chr1": sizes["chr1"]}, {"chr1": np.ones(100)})
    with pytest.raises(PrecomputeError, match=r"has no chr2, chr3 \(2 of 3 chromosomes\).* --chroms"):
        precompute(load_model_set([str(demo_model)]), inputs["fasta"], tmp_path / "x", settings(partial), QUIET)
    base = ["precompute", "-m", str(demo_model), "--fa", str(inputs["fasta"]), "-o", str(tmp_path / "x"), "-q"]
    assert main(base) == 2
    assert "trained with conservation (if_cons true): give its track with --seqcons" in capsys.readouterr().err
    assert main(base + ["--device", "cuda:7" if torch.cuda.is_available() else "cuda"]) == 2
    assert "requested but" in capsys.readouterr().err
    base.append("--no-conservation")
    assert main(base + ["--seqlen", "98304"]) == 2
    assert "--seqlen 98304 does not match the model, which takes 8192" in capsys.readouterr().err
    assert main(base + ["--shard", "2/2"]) == 2
    assert "expected I/N with 0 <= I < N" in capsys.readouterr().err
    assert main(base + ["--chroms", "chrZ"]) == 2
    assert "chromosome 'chrZ' is not in" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_shard_text():
    assert parse_shard("3/10") == (3, 10)
    for bad in ("10/10", "-1/3", "3", "a/b"):
        with pytest.raises(ShardError, match="expected I/N"):
            parse_shard(bad)


@pytest.mark.slow
def test_torchrun_ranks_are_shards_with_identical_bytes(demo_model, demo_data, tmp_path):
    """One process and two torchrun processes, each with one CPU thread (--threads 1): the merged
    bigWigs are the same bytes, and the manifest records the threads."""
    inputs = demo_inputs(demo_data)
    flags = ["-m", str(demo_model), "--fa", str(inputs["fasta"]), "--seqcons", str(inputs["conservation"]),
             "--blacklist", str(inputs["blacklist"]), "--batch-size", "4", "--io-workers", "0", "--threads", "1", "-q"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    one = subprocess.run([sys.executable, "-m", "epiformer.cli", "precompute", *flags, "-o", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    outdir = tmp_path / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "epiformer.cli", "precompute", *flags, "-o", str(outdir)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (outdir / "shards").iterdir()) == ["shard-00000-of-00002.h5",
                                                                     "shard-00001-of-00002.h5"]
    assert bigwig_bytes(outdir) == bigwig_bytes(tmp_path / "one")
    manifest = json.loads((outdir / "manifest.json").read_text())
    assert manifest["settings"]["threads"] == 1 and manifest["settings"]["precision"] == "fp32"


def test_a_shard_resumes_only_with_its_threads(demo_model, demo_data, tmp_path):
    inputs = demo_inputs(demo_data)
    outdir = tmp_path / "threads"
    threads = torch.get_num_threads()

    def job(n):
        return precompute(load_model_set([str(demo_model)]), inputs["fasta"], outdir,
                          settings(inputs["conservation"], threads=n), QUIET, blacklist=inputs["blacklist"],
                          chroms=["chr3"])
    try:
        job(1)
        manifest = json.loads((outdir / "manifest.json").read_text())
        assert manifest["settings"]["threads"] == 1 and manifest["settings"]["device"] == "cpu"
        assert manifest["settings"]["conservation"]["sha256"] and manifest["settings"]["checkpoints"][0]["sha256"]
        with pytest.raises(PrecomputeError, match="written with 1 CPU threads .* resume it with --threads 1"):
            job(2)
    finally:
        torch.set_num_threads(threads)
