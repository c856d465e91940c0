"""Genomes as they ship: a bgzip-compressed FASTA (its .fai and .gzi built when missing), a plain
gzip one (one line saying how to bgzip it), a UCSC .2bit, soft-masking, chromosome names that
differ between files (the one rule of epiformer.genome.chrom_names.genome_chrom_name) and bigWigs that cover
only some chromosomes."""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pyBigWig
import pysam
import pytest

from epiformer.cli import main
from epiformer.genome.chrom_names import ChromNames, genome_chrom_name
from epiformer.genome.encoding import sequence_codes
from epiformer.genome.reader import Genome, GenomeError
from epiformer.genome.targets import Target
from epiformer.inference.engine import RegionTracks
from epiformer.inference.regions import observed_tracks
from epiformer.io.reading import read_table
from epiformer.trackhub import build_hub, write_twobit
from epiformer.training.datasets import generate_datasets

from .helpers import SIZES, windows_of, write_bigwig, write_fasta
from .test_scoring import HEADER, base, other

SOFT_MASKED = {"chrA": "NNNNacgtACGTnnRYacgtACGGTTAACCggttaaccNNNNNNNNACGTACGTACgtacgtN", "chrM": "ACGTACGTAC"}


def bgzip(plain: Path, out: Path) -> Path:
    pysam.tabix_compress(str(plain), str(out), force=True)
    return out


def test_bgzip_fasta_reads_as_the_plain_one_and_builds_its_index_once(tmp_path):
    plain = write_fasta(tmp_path / "genome.fa", SOFT_MASKED, width=7)
    packed = bgzip(plain, tmp_path / "genome.fa.gz")
    with Genome(plain) as expected, Genome(packed) as genome:
        assert genome.chrom_sizes == expected.chrom_sizes == {name: len(seq) for name, seq in SOFT_MASKED.items()}
        for chrom, seq in SOFT_MASKED.items():
            assert genome.sequence(chrom, -3, len(seq) + 2) == "NNN" + seq + "NN", "case kept, N padding"
        np.testing.assert_array_equal(genome.encode("chrA", 5, 40), expected.encode("chrA", 5, 40))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genome.fa", "genome.fa.fai", "genome.fa.gz",
                                                          "genome.fa.gz.fai", "genome.fa.gz.gzi"], "no temporary left"
    built = [(tmp_path / name).stat().st_mtime_ns for name in ("genome.fa.gz.fai", "genome.fa.gz.gzi")]
    with Genome(packed):
        pass
    assert [(tmp_path / name).stat().st_mtime_ns for name in ("genome.fa.gz.fai", "genome.fa.gz.gzi")] == built


def test_an_index_older_than_its_fasta_is_rebuilt(tmp_path):
    fasta = write_fasta(tmp_path / "genome.fa", SOFT_MASKED)
    Genome(fasta).close()
    write_fasta(fasta, {"chrB": "ACGTTT"})
    later = (tmp_path / "genome.fa.fai").stat().st_mtime + 10
    os.utime(fasta, (later, later))
    with Genome(fasta) as genome:
        assert genome.chrom_sizes == {"chrB": 6} and genome.sequence("chrB", 0, 6) == "ACGTTT"


def test_an_interrupted_index_build_leaves_no_index(tmp_path, monkeypatch):
    packed = bgzip(write_fasta(tmp_path / "genome.fa", SOFT_MASKED), tmp_path / "genome.fa.gz")
    (tmp_path / "genome.fa").unlink()

    def interrupted(fasta, *flags):
        Path(flags[1]).write_text("chrA\t6")            # half an index, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(pysam, "faidx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Genome(packed)
    assert [p.name for p in tmp_path.iterdir()] == ["genome.fa.gz"]
    monkeypatch.undo()
    with Genome(packed) as genome:
        assert genome.sequence("chrM", 0, 4) == "ACGT"


def test_fasta_htslib_cannot_use_is_one_error_naming_it(tmp_path, capfd):
    twice = tmp_path / "twice.fa"
    twice.write_text(">chr1\nACGT\n>chr1\nGG\n")
    with pytest.raises(GenomeError, match=r"FASTA file .*twice.fa cannot be used as it is: .*duplicate sequence "
                       r"\"chr1\""):
        Genome(twice)
    assert not (tmp_path / "twice.fa.fai").exists(), "a sequence dropped silently would be wrong input"
    assert capfd.readouterr().err == "", "the library's own messages are in the error, not printed"


def test_plain_gzip_fasta_is_one_line_saying_how_to_bgzip_it(tmp_path, tiny_checkpoint, capsys):
    plain = write_fasta(tmp_path / "genome.fa", SOFT_MASKED)
    packed = tmp_path / "genome.fa.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(GenomeError, match=re.escape(f"FASTA file {packed} is compressed with plain gzip") + ".*"
                       + re.escape(f"(gunzip -c {packed} | bgzip > {tmp_path / 'genome.fa.bgz'})")):
        Genome(packed)
    assert main(["predict", "-m", str(tiny_checkpoint), "--fa", str(packed), "--no-conservation",
                 "-r", "chrA:1-10", "-o", str(tmp_path / "p"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "samtools faidx" in err and str(packed) in err
    assert not list(tmp_path.glob("genome.fa.gz.*")), "no index is attempted"


def test_twobit_genome_keeps_soft_masking_and_n_blocks(tmp_path):
    fasta = write_fasta(tmp_path / "genome.fa", SOFT_MASKED)
    twobit = write_twobit(fasta, tmp_path / "genome.2bit")
    with Genome(fasta) as expected, Genome(twobit) as genome:
        assert genome.chrom_sizes == expected.chrom_sizes
        for chrom, seq in SOFT_MASKED.items():
            assert genome.sequence(chrom, 0, len(seq)) == re.sub("[^ACGTacgt]", "N", seq)
        assert genome.sequence("chrA", 10, 20) == "GTNNNNacgt"
        np.testing.assert_array_equal(genome.encode("chrA", -4, 70), expected.encode("chrA", -4, 70))


def test_soft_masked_bases_encode_as_upper_case(tmp_path):
    upper = write_fasta(tmp_path / "upper.fa", {c: s.upper() for c, s in SOFT_MASKED.items()})
    lower = write_fasta(tmp_path / "lower.fa", SOFT_MASKED)
    cons = write_bigwig(tmp_path / "cons.bw", {"chrA": 64}, {"chrA": np.linspace(0, 1, 64)})
    with Genome(upper, cons) as shouting, Genome(lower, cons) as masked:
        assert masked.sequence("chrA", 4, 8) == "acgt" and shouting.sequence("chrA", 4, 8) == "ACGT"
        np.testing.assert_array_equal(masked.encode("chrA", 0, 64), shouting.encode("chrA", 0, 64))
        assert masked.encode("chrA", 4, 8).sum(axis=0).all(), "lower case is a base, not a zero column"
        windows = [("chrA", 0), ("chrA", 30)]
        np.testing.assert_array_equal(masked.coded_windows(windows, 30).codes,
                                      shouting.coded_windows(windows, 30).codes)
    np.testing.assert_array_equal(sequence_codes("acgtn"), sequence_codes("ACGTN"))


@pytest.mark.parametrize("name, genome_names, expected", [
    ("chr1", {"chr1", "1"}, "chr1"),          # the same name first
    ("1", {"chr1"}, "chr1"),
    ("chr1", {"1"}, "1"),
    ("MT", {"chrM"}, "chrM"),
    ("chrM", {"MT"}, "MT"),
    ("chrMT", {"chrM"}, "chrM"),
    ("M", {"MT"}, "MT"),
    ("chrUn_KI270302v1", {"chr1", "chrM"}, None),
    ("chr1_KI270706v1_random", {"1"}, None),
    ("X", {"chrX", "chrY"}, "chrX"),
])
def test_the_chromosome_name_rule(name, genome_names, expected):
    assert genome_chrom_name(name, genome_names) == expected


def test_skipped_names_are_counted_and_reported_in_one_line():
    names = ChromNames(["chr1", "chr2", "chrM"], "blacklist b.bed")
    assert names.in_file(["1", "chr1", "MT", "chrUn_x"]) == {"chr1": "chr1", "chrM": "MT"}, "the same name wins"
    assert names.intervals([("2", 0, 5), ("chrUn_x", 1, 2), ("chrUn_x", 3, 4), ("HLA-A*01", 0, 1)]) == [("chr2", 0, 5)]
    assert names.skipped == {"chrUn_x": 3, "HLA-A*01": 1}
    line = names.summary("intervals")
    assert "\n" not in line and line.startswith("warning: blacklist b.bed: skipped 4 intervals on 2 chromosome(s) "
                                                "not in the genome")
    assert line.endswith(": chrUn_x (3), HLA-A*01 (1)")
    assert ChromNames(["chr1"], "x").summary() is None


def test_conservation_bigwig_names_map_onto_the_genome(small_genome, tmp_path):
    cons1 = small_genome["cons1"]
    renamed = write_bigwig(tmp_path / "renamed.bw", {"1": len(cons1), "2": 100}, {"1": cons1})
    with Genome(small_genome["fasta"], small_genome["bigwig"]) as named, \
            Genome(small_genome["fasta"], renamed) as other:
        assert other.conservation_chroms() == {"chr1": len(cons1), "chr2": 100}
        np.testing.assert_array_equal(other.conservation("chr1", -2, 30), named.conservation("chr1", -2, 30))


def test_conservation_bigwig_without_a_chromosome_is_zero_there_with_one_warning(tmp_path, small_genome, capsys):
    only1 = write_bigwig(tmp_path / "only1.bw", {"chr1": 40}, {"chr1": np.ones(40)})
    with Genome(small_genome["fasta"], only1) as genome:
        assert genome.conservation("chr1", 0, 10).tolist() == [1.0] * 10
        assert capsys.readouterr().err == ""
        assert not genome.conservation("chr2", 0, 10).any() and not genome.conservation("chr2", 60, 70).any()
        np.testing.assert_allclose(genome.encode("chr2", 50, 60).sum(axis=0), 1.0)     # a factor of 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"conservation bigWig {only1} has no data for 1 of the 2 chromosomes of genome.fa " \
        "(chr2): their conservation is 0" in err


def renamed_inputs(folder: Path) -> None:
    """The inputs of the ``inputs`` fixture with the chromosomes named 1, 2, ... in the sizes
    file, the blacklist, target A's bigWig, the conservation and the peaks, and a contig the FASTA lacks."""
    (folder / "r.sizes").write_text("".join(f"{c[3:]}\t{n}\n" for c, n in SIZES.items()) + "chrUn_x\t500\n")
    (folder / "r.blacklist.bed").write_text("1\t640\t641\nchrUn_x\t1\t2\n")
    (folder / "r.peaks.bed").write_text("1\t130\t150\nchrUn_x\t1\t5\n")
    with pyBigWig.open(str(folder / "A.bw")) as a:
        write_bigwig(folder / "rA.bw", {c[3:]: n for c, n in SIZES.items()},
                     {c[3:]: a.values(c, 0, n, numpy=True) for c, n in SIZES.items()})
    write_bigwig(folder / "rcons.bw", {c[3:]: n for c, n in SIZES.items()},
                 {c[3:]: np.full(n, 0.5) for c, n in SIZES.items()})
    (folder / "r.targets.txt").write_text(
        "index\tidentifier\tfile\tclip\tsum_stat\tdescription\tpeak\n"
        "0\tA\trA.bw\t1000\tmean\ttrack A\t\n"
        "1\tB\tB.bw\t4\tsum\ttrack B\tr.peaks.bed\n")


def shard_arrays(manifest: dict, folder: Path) -> dict[str, np.ndarray]:
    arrays: dict[str, list] = {}
    for split in ("train", "valid", "test"):
        for shard in manifest["splits"][split]["shards"]:
            with h5py.File(folder / shard) as h5:
                for key in ("sequence", "conservation", "targets", "labels"):
                    arrays.setdefault(key, []).append(h5[key][:])
    return {key: np.concatenate(parts) for key, parts in arrays.items()}


def test_generate_datasets_maps_every_files_names_onto_the_fasta(inputs):
    folder, params = inputs["dir"], inputs["params"]
    reference = generate_datasets(params, folder / "ref" / "d", progress=False)
    renamed_inputs(folder)
    warnings: list[str] = []
    renamed = replace(params, chrom_sizes=str(folder / "r.sizes"), blacklist=str(folder / "r.blacklist.bed"),
                      targets=str(folder / "r.targets.txt"), conservation=str(folder / "rcons.bw"))
    manifest = generate_datasets(renamed, folder / "renamed" / "d", progress=False, warn=warnings.append)
    for split in ("train", "valid", "test"):
        assert windows_of(manifest, folder / "renamed", split) == windows_of(reference, folder / "ref", split)
    for key, values in shard_arrays(reference, folder / "ref").items():
        np.testing.assert_array_equal(shard_arrays(manifest, folder / "renamed")[key], values, err_msg=key)
    assert manifest["skipped_chroms"] == {} and manifest["splits"]["test"]["chroms"] == ["chr4"]
    assert len(warnings) == 3 and all("\n" not in w for w in warnings)
    assert warnings[0].startswith(f"warning: sizes file {folder / 'r.sizes'}: skipped 1 chromosome(s) not in FASTA")
    assert warnings[0].endswith(": chrUn_x")
    assert warnings[1].startswith(f"warning: blacklist {folder / 'r.blacklist.bed'}: skipped 1 intervals on 1")
    assert warnings[2].startswith(f"warning: peak file {folder / 'r.peaks.bed'}: skipped 1 peaks on 1")


def test_generate_datasets_skips_the_windows_of_chromosomes_a_bigwig_lacks(inputs):
    folder, params = inputs["dir"], inputs["params"]
    partial = {c: n for c, n in SIZES.items() if c != "chr2"}
    write_bigwig(folder / "B.bw", partial, {c: np.full(n, 5.0) for c, n in partial.items()})
    write_bigwig(folder / "cons.bw", partial, {c: np.full(n, 0.5) for c, n in partial.items()})
    warnings: list[str] = []
    manifest = generate_datasets(params, folder / "p" / "d", progress=False, warn=warnings.append)
    assert manifest["skipped_chroms"] == {"chr2": {"windows": 4, "no_data_in": [str(folder / "cons.bw"),
                                                                             str(folder / "B.bw")]}}
    assert windows_of(manifest, folder / "p", "train") == [
        "chr1:0-128", "chr1:128-256", "chr1:384-512", "chr1:512-640", "chr1:768-896"], "no chr2 window"
    assert warnings == ["warning: skipped the 4 windows on 1 chromosome(s) that a bigWig has no data for, rather "
                        "than train on made-up values: chr2 (cons.bw, B.bw)"]


def test_observed_tracks_read_bigwigs_named_otherwise(tmp_path):
    values = np.arange(64, dtype=float)
    named = write_bigwig(tmp_path / "named.bw", {"chr1": 64, "chrM": 16}, {"chr1": values, "chrM": np.ones(16)})
    plain = write_bigwig(tmp_path / "plain.bw", {"1": 64, "MT": 16}, {"1": values, "MT": np.ones(16)})
    tracks = [RegionTracks("chr1", 8, 8, np.zeros((1, 4), np.float32), ["A"]),
              RegionTracks("chrM", 0, 8, np.zeros((1, 3), np.float32), ["A"])]
    observed = {path.name: observed_tracks(tracks, [Target(0, "A", path, 1000.0, "mean", "a")])["A"]
                for path in (named, plain)}
    for by_name, by_rule in zip(observed["named.bw"], observed["plain.bw"]):
        np.testing.assert_array_equal(by_rule, by_name)
    np.testing.assert_array_equal(observed["plain.bw"][1], [1.0, 1.0, np.nan])     # past chrM's end: no value


def test_predict_reads_bgzip_and_twobit_genomes_as_the_plain_fasta(demo_data, tiny_checkpoint, tmp_path, capsys):
    packed = bgzip(demo_data / "genome.fa", tmp_path / "genome.fa.gz")
    twobit = write_twobit(demo_data / "genome.fa", tmp_path / "genome.2bit")
    tables = []
    for fasta in (demo_data / "genome.fa", packed, twobit):
        out = tmp_path / fasta.name
        assert main(["predict", "-m", str(tiny_checkpoint), "--fa", str(fasta), "--seqcons",
                     str(demo_data / "conservation.bw"), "-r", "chr1:100,001-100,500", "-o", str(out),
                     "--format", "tsv", "--device", "cpu"]) == 0
        tables.append(read_table(f"{out}.tsv")[1])
    assert tables[0] == tables[1] == tables[2] and len(tables[0]) > 1
    assert "warning" not in capsys.readouterr().err


def test_score_variants_scores_a_vcf_that_names_chromosomes_otherwise(demo_data, tiny_checkpoint, tmp_path, capsys):
    b = base(demo_data, "chr1", 100_001)
    vcf = tmp_path / "calls.vcf"
    vcf.write_text(HEADER + "\n".join([f"1\t100001\tplain\t{b}\t{other(b)}\t.\tPASS\t.",
                                       f"chr1\t100001\tnamed\t{b}\t{other(b)}\t.\tPASS\t.",
                                       "chrUn_x\t5\tun1\tA\tG\t.\tPASS\t.",
                                       "chrUn_x\t9\tun2\tA\tC\t.\tPASS\t.",
                                       "HLA-A*01:01:01:01\t5\thla\tA\tG\t.\tPASS\t."]) + "\n")
    out = tmp_path / "scores"
    assert main(["score-variants", "-m", str(tiny_checkpoint), "--fa", str(demo_data / "genome.fa"), "--seqcons",
                 str(demo_data / "conservation.bw"), "--vcf", str(vcf), "-o", str(out), "--device", "cpu", "-q"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if "not in genome.fa" in line] == [
        f"warning: variant file {vcf}: skipped 3 variants on 2 chromosome(s) not in genome.fa (names match with or "
        "without 'chr', and chrM = MT): chrUn_x (2), HLA-A*01:01:01:01 (1)"]
    assert any(line.startswith("scored 2 variants, skipped 3") for line in printed)
    _, rows = read_table(f"{out}.tsv")
    plain, named = rows[1:]
    assert plain[:2] == ["plain", "chr1"], "scored on the FASTA's name"
    assert plain[2:] == named[2:], "the same variant, the same scores"
    annotated = [line for line in (tmp_path / "scores.vcf").read_text().splitlines() if line.startswith("1\t")]
    assert len(annotated) == 1 and "EPI_SAD_" in annotated[0], "the annotated VCF keeps the input's own name"


@pytest.mark.parametrize("form", ["bgzip", "2bit"])
def test_the_hub_of_a_genome_shipped_compressed_holds_its_plain_fasta(precomputed, demo_data, tmp_path, form):
    fasta = bgzip(demo_data / "genome.fa", tmp_path / "genome.fa.gz") if form == "bgzip" else \
        write_twobit(demo_data / "genome.fa", tmp_path / "genome.2bit")
    folder = shutil.copytree(precomputed, tmp_path / "precomputed")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["genome"]["fasta"] = str(fasta)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    build_hub(folder, tmp_path / "hub")
    copy = tmp_path / "hub" / "genome" / "demo.fa"
    assert copy.read_bytes()[:1] == b">" and (tmp_path / "hub" / "genome" / "demo.fa.fai").is_file()
    with Genome(copy) as written, Genome(demo_data / "genome.fa") as original:
        assert written.chrom_sizes == original.chrom_sizes
        for chrom, size in original.chrom_sizes.items():
            expected = original.sequence(chrom, 0, size)
            assert written.sequence(chrom, 0, size) == (re.sub("[^ACGTacgt]", "N", expected) if form == "2bit"
                                                         else expected)
