"""The paper configuration (98,304 bp windows, 54.8 M parameters, one output) through every command
and the server, on the CPU, as a user's first model is: a randomly initialised checkpoint in the
original's format under a published checkpoint's name (conftest's ``paper_checkpoint``)."""
from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pyBigWig
import pytest
import torch

from epiformer.cli import main
from epiformer.genome.reader import Genome

from .helpers import DATA, epiformer_serve

pytestmark = pytest.mark.slow

REGION = "chr1:110,001-130,000"


def genome_flags(genome: Path) -> list[str]:
    return ["--fa", str(genome / "genome.fa"), "--seqcons", str(genome / "conservation.bw")]


def model_flags(checkpoint: Path, genome: Path) -> list[str]:
    """The published model's own flags: one output, named by row 4 of targets.txt (MGC)."""
    return ["-m", str(checkpoint), "--targets", str(genome / "targets.txt"), "--index", "4"]


def reference_variants(genome: Path, chrom: str, positions: list[int]) -> list[tuple[int, str, str]]:
    """(1-based position, ref, alt): an SNV at each position, and a 3 bp deletion after the last."""
    with Genome(genome / "genome.fa") as fasta:
        variants = [(pos, base, "A" if base != "A" else "C")
                    for pos in positions for base in [fasta.sequence(chrom, pos - 1, pos).upper()]]
        last = positions[-1] + 10
        deleted = fasta.sequence(chrom, last - 1, last + 3).upper()
    assert all(base in "ACGT" for _, ref, _ in variants for base in ref + deleted), "a variant in an assembly gap"
    return variants + [(last, deleted, deleted[0])]


@pytest.fixture(scope="module")
def paper_precomputed(tmp_path_factory, paper_checkpoint, paper_genome) -> Path:
    """``epiformer precompute`` of the two-chromosome genome with the paper model."""
    out = tmp_path_factory.mktemp("paper_precompute") / "tracks"
    assert main(["precompute", *model_flags(paper_checkpoint, paper_genome), *genome_flags(paper_genome),
                 "--blacklist", str(paper_genome / "blacklist.bed"), "--genome", "paper_demo",
                 "-o", str(out), "-q"]) == 0
    return out


def test_the_checkpoint_is_the_original_format_of_the_paper_configuration(paper_checkpoint):
    ckpt = torch.load(paper_checkpoint, map_location="cpu", weights_only=True)
    reference = json.loads((DATA / "original_epiformer_full.keys.json").read_text())
    assert {k: list(v.shape) for k, v in ckpt["state_dict"].items()} == reference["state_dict_shapes"]
    assert {k: ckpt["param"][k] for k in reference["config"]} == reference["config"]
    assert "target_names" not in ckpt and "format" not in ckpt
    assert sum(v.numel() for k, v in ckpt["state_dict"].items() if "running" not in k
               and "num_batches" not in k) == 54_819_693


def test_predict_one_region(tmp_path, paper_checkpoint, paper_genome, capsys):
    out = tmp_path / "pred"
    assert main(["predict", *model_flags(paper_checkpoint, paper_genome), *genome_flags(paper_genome),
                 "-r", REGION, "--seqlen", "98304", "--binsize", "128", "-o", str(out)]) == 0
    assert "MGC" in capsys.readouterr().out
    with pyBigWig.open(f"{out}.MGC.bw") as bw:
        intervals = bw.intervals("chr1")
    assert len(intervals) == 640 and all(e - s == 128 for s, e, _ in intervals)
    assert all(np.isfinite(v) and v > 0 for _, _, v in intervals)


def test_score_variants_snvs_and_an_indel(tmp_path, paper_checkpoint, paper_genome):
    vcf = tmp_path / "variants.vcf"
    rows = reference_variants(paper_genome, "chr1", [120_001, 120_050, 120_400])
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "".join(
        f"chr1\t{pos}\tv{i}\t{ref}\t{alt}\t.\t.\t.\n" for i, (pos, ref, alt) in enumerate(rows)))
    out = tmp_path / "scores"
    assert main(["score-variants", *model_flags(paper_checkpoint, paper_genome), *genome_flags(paper_genome),
                 "--vcf", str(vcf), "-o", str(out), "-q"]) == 0
    lines = [line.split("\t") for line in Path(f"{out}.tsv").read_text().splitlines() if not line.startswith("#")]
    header, data = lines[0], lines[1:]
    assert [row[header.index("id")] for row in data] == ["v0", "v1", "v2", "v3"]
    assert {row[header.index("flag")] for row in data} == {"ok"}
    sad = [float(row[header.index("MGC.sad")]) for row in data]
    assert all(np.isfinite(sad)) and any(s != 0 for s in sad)
    skipped = [line for line in Path(f"{out}.skipped.tsv").read_text().splitlines() if not line.startswith("#")]
    assert skipped == ["line\tvariant\treason"]


def test_ism_of_a_few_bases(tmp_path, paper_checkpoint, paper_genome):
    out = tmp_path / "ism"
    assert main(["ism", *model_flags(paper_checkpoint, paper_genome), *genome_flags(paper_genome),
                 "-r", "chr1:120,001-120,002", "--no-rc", "-o", str(out)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert any(name.endswith(".tsv") for name in written) and any(name.endswith(".png") for name in written)


def test_interpret_one_region(tmp_path, paper_checkpoint, paper_genome, paper_precomputed):
    folder = shutil.copytree(paper_precomputed, tmp_path / "tracks")
    bed = tmp_path / "region.bed"
    bed.write_text("chr1\t119800\t120300\n")
    assert main(["interpret", *model_flags(paper_checkpoint, paper_genome), *genome_flags(paper_genome),
                 "--bed", str(bed), "-o", str(folder), "-q"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["interpretation"]["regions"] == 1
    with pyBigWig.open(str(folder / "tracks" / "MGC.contrib.bw")) as bw:
        contributions = bw.values("chr1", 119_800, 120_300, numpy=True)
    assert np.all(np.isfinite(contributions)) and np.any(contributions != 0)


def test_precompute_and_hub(tmp_path, paper_precomputed, paper_genome):
    manifest = json.loads((paper_precomputed / "manifest.json").read_text())
    assert [track["name"] for track in manifest["tracks"]] == ["MGC"]
    assert manifest["genome"]["chrom_sizes"] == {"chr1": 180_000, "chr2": 120_000}
    with pyBigWig.open(str(paper_precomputed / "tracks" / "MGC.bw")) as bw:
        assert set(bw.chroms()) == {"chr1", "chr2"}
        covered = sum(e - s for s, e, _ in bw.intervals("chr1") or [])
    assert covered > 100_000
    assert main(["hub", str(paper_precomputed), "-o", str(tmp_path / "hub")]) == 0
    assert "MGC" in (tmp_path / "hub" / "paper_demo" / "trackDb.txt").read_text()


def post(url: str, body: dict, timeout: float = 240) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_serve_answers_with_the_paper_model(tmp_path, paper_checkpoint, paper_genome, paper_precomputed):
    """The master must not run torch before forking its worker: with the paper model it used to
    load the model set there, and the worker then hung in its first parallel operation."""
    arguments = [str(paper_precomputed), *model_flags(paper_checkpoint, paper_genome), *genome_flags(paper_genome),
                 "--workers", "1", "--hub-dir", str(tmp_path / "hub")]
    (pos, ref, alt), = reference_variants(paper_genome, "chr1", [120_001])[:1]
    with epiformer_serve(arguments, tmp_path / "serve.log") as base:
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
            assert json.loads(response.read())["status"] == "ok"
        variants = post(f"{base}/api/variants", {"variants": [f"chr1:{pos}:{ref}:{alt}"]})
        assert variants["targets"] == ["MGC"] and not variants["problems"]
        assert np.isfinite(variants["results"][0]["scores"]["MGC"]["sad"])
        predicted = post(f"{base}/api/predict", {"region": "chr1:120,001-120,200",
                                                 "edits": [f"chr1:{pos}:{ref}:{alt}"]})
        bins = (predicted["end"] - predicted["start"]) // predicted["bin_size"]
        assert predicted["targets"] == ["MGC"] and set(predicted["tracks"]) >= {"reference", "edited"}
        assert all(len(values["MGC"]) == bins for values in predicted["tracks"].values())
        ism = post(f"{base}/api/ism", {"region": "chr1:120,001-120,002"})
        assert ism["targets"] == ["MGC"] and ism["reference"].upper() == ref + ism["reference"][1:].upper()
