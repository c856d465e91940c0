"""Input files as genomes and tools ship them: a bgzipped, tabix-indexed VCF with multi-allelic and
symbolic records; BED files with UCSC ``browser``/``track``/``#`` header lines; a targets.txt with
Windows (CRLF) line ends."""
from __future__ import annotations

import json
from dataclasses import replace

import h5py
import numpy as np
import pybigtools
import pyBigWig
import pysam
import pytest

from epiformer.cli import main
from epiformer.genome.intervals import read_bed_intervals
from epiformer.genome.reader import Genome
from epiformer.genome.targets import PeakSet, TargetsError, read_targets
from epiformer.inference.regions import read_regions_arg
from epiformer.interpret.interpret_job import read_regions as interpret_regions
from epiformer.io.reading import read_table
from epiformer.trackhub.annotation import read_bed as annotation_records
from epiformer.training.datasets import (
    DatasetError,
    SplitOptions,
    drop_blacklisted,
    generate_datasets,
    open_split,
    read_regions,
)
from epiformer.variants.calibration import allowed_intervals
from epiformer.variants.vcf import read_variants

from .test_scoring import HEADER, base, other

UCSC_HEADER = ["browser position chr1:1-1000", "browser hide all",
               'track name="regions" description="UCSC style, with spaces" visibility=2', "# a comment"]


def write_bed(path, lines, header=False, newline="\n"):
    """A BED file of ``lines``, with the UCSC header lines first when ``header``."""
    path.write_bytes(newline.join((UCSC_HEADER if header else []) + lines + [""]).encode())
    return path


def test_bgzipped_tabix_indexed_vcf_splits_alleles_and_reports_each_symbolic_one(demo_data, tiny_checkpoint,
                                                                                 tmp_path, capsys):
    b = [base(demo_data, "chr1", pos) for pos in (100_001, 100_020, 100_030, 100_040, 100_050, 100_060, 100_070)]
    lines = [f"chr1\t100001\trs1\t{b[0]}\t{other(b[0])},<DEL>,{other(other(b[0]))}\t.\tPASS\t.",
             f"chr1\t100020\tins\t{b[1]}\t<INS>\t.\tPASS\tSVTYPE=INS",
             f"chr1\t100030\tcn0\t{b[2]}\t<CN0>\t.\tPASS\tSVTYPE=CNV",
             f"chr1\t100040\tstar\t{b[3]}\t*,{other(b[3])}\t.\tPASS\t.",
             f"chr1\t100050\tbnd1\t{b[4]}\t{b[4]}[chr1:123[\t.\tPASS\tSVTYPE=BND",
             f"chr1\t100060\tbnd2\t{b[5]}\t]chr2:5]{b[5]}\t.\tPASS\tSVTYPE=BND",
             f"chr1\t100070\tref\t{b[6]}\t.\t.\tPASS\t."]
    plain = tmp_path / "calls.vcf"
    plain.write_text(HEADER + "\n".join(lines) + "\n")
    packed = tmp_path / "calls.vcf.gz"
    pysam.tabix_index(str(plain), preset="vcf", keep_original=True)
    assert packed.read_bytes()[:4] == b"\x1f\x8b\x08\x04", "BGZF blocks"
    assert (tmp_path / "calls.vcf.gz.tbi").is_file()
    assert list(read_variants(packed)) == list(read_variants(plain))

    out = tmp_path / "scores"
    flags = ["-m", str(tiny_checkpoint), "--fa", str(demo_data / "genome.fa"), "--seqcons",
             str(demo_data / "conservation.bw"), "--device", "cpu", "-q"]
    assert main(["score-variants", *flags, "--vcf", str(packed), "-o", str(out)]) == 0
    assert "scored 3 variants, skipped 7" in capsys.readouterr().out
    _, scored = read_table(f"{out}.tsv")
    assert [row[0] for row in scored[1:]] == [f"rs1:{other(b[0])}", f"rs1:{other(other(b[0]))}", f"star:{other(b[3])}"]
    _, skipped = read_table(f"{out}.skipped.tsv")
    symbolic = "(a structural or copy-number variant), not scored"
    breakend = "(a symbolic structural rearrangement), not scored"
    assert {row[1]: row[2] for row in skipped[1:]} == {
        f"chr1:100001:{b[0]}:<DEL>": f"symbolic allele <DEL> {symbolic}",
        f"chr1:100020:{b[1]}:<INS>": f"symbolic allele <INS> {symbolic}",
        f"chr1:100030:{b[2]}:<CN0>": f"symbolic allele <CN0> {symbolic}",
        f"chr1:100040:{b[3]}:*": "symbolic allele * (a deletion described on another line), not scored",
        f"chr1:100050:{b[4]}:{b[4]}[chr1:123[": f"breakend {b[4]}[chr1:123[ {breakend}",
        f"chr1:100060:{b[5]}:]chr2:5]{b[5]}": f"breakend ]chr2:5]{b[5]} {breakend}",
        f"chr1:100070:{b[6]}:.": "no alternate allele (ALT is '.'), not scored"}
    annotated = {line.split("\t")[2]: line.split("\t")[7] for line in (tmp_path / "scores.vcf").read_text().splitlines()
                 if not line.startswith("#")}
    assert annotated["rs1"].count("EPI_FLAG=ok,.,ok") == 1 and "EPI_FLAG=.,ok" in annotated["star"]
    assert annotated["ins"] == "SVTYPE=INS" and annotated["ref"] == ".", "records not scored are left as they were"

    assert main(["score-variants", *flags, "--vcf", f"{packed}.tbi", "-o", str(tmp_path / "index")]) == 2
    err = capsys.readouterr().err
    assert f"is a tabix index: pass the file it indexes, {packed}" in err and err.count("\n") == 1


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_every_bed_reader_skips_ucsc_header_lines(small_genome, tmp_path, newline):
    """Each reader of a BED (predict -r, precompute --bed/--blacklist, generate-datasets --bed,
    --blacklist and peaks, calibrate --blacklist, interpret --bed, hub --annotation) gives the same
    for a file with UCSC header lines (and CRLF line ends) as for the bare records."""
    sizes = small_genome["sizes"]
    lines = ["chr1\t2\t6\tfirst\t0\t+", "chr2\t10\t30\tsecond\t0\t-", "chr2\t50\t60\tthird\t0\t."]
    windows = [("chr1", 0, 20), ("chr1", 20, 40), ("chr2", 0, 40), ("chr2", 40, 80)]
    with Genome(small_genome["fasta"]) as genome:
        readers = {
            "precompute --bed and --blacklist": lambda path: list(read_bed_intervals(path)),
            "predict -r": lambda path: read_regions_arg([str(path)], sizes),
            "generate-datasets --bed": lambda path: read_regions(path, sizes),
            "generate-datasets peaks": lambda path: PeakSet(path).labels("chr2", 0, 100, 10).tolist(),
            "generate-datasets --blacklist": lambda path: drop_blacklisted(windows, path, sizes),
            "calibrate --blacklist": lambda path: allowed_intervals(genome, 4, path),
            "interpret --bed": lambda path: interpret_regions(path, sizes, 5000),
            "hub --annotation": lambda path: annotation_records(path, sizes),
        }
        bare = write_bed(tmp_path / "bare.bed", lines)
        ucsc = write_bed(tmp_path / "ucsc.bed", lines, header=True, newline=newline)
        for what, read in readers.items():
            assert read(ucsc) == read(bare), what
    assert drop_blacklisted(windows, ucsc, sizes) == [("chr1", 20, 40)]
    assert [r[3].split("\t")[:2] for r in annotation_records(ucsc, sizes)] == [["first", "0"], ["second", "0"],
                                                                               ["third", "0"]]
    assert [r[3].split("\t")[2] for r in annotation_records(ucsc, sizes)] == ["+", "-", "."], "no \\r in a strand"


def test_precompute_interpret_and_hub_take_ucsc_beds(demo_data, tiny_checkpoint, tmp_path):
    regions = write_bed(tmp_path / "regions.bed", ["chr1\t100000\t100400"], header=True, newline="\r\n")
    blacklist = write_bed(tmp_path / "blacklist.bed", ["chr1\t101000\t101200"], header=True)
    genes = write_bed(tmp_path / "genes.bed", ["chr1\t100100\t100300\tgeneA\t0\t+"], header=True, newline="\r\n")
    regions, blacklist, genes = str(regions), str(blacklist), str(genes)
    model = ["-m", str(tiny_checkpoint), "--fa", str(demo_data / "genome.fa"), "--seqcons",
             str(demo_data / "conservation.bw"), "--device", "cpu"]
    out = tmp_path / "tracks"
    assert main(["precompute", *model, "--bed", regions, "--blacklist", blacklist, "-o", str(out), "-q"]) == 0
    assert main(["interpret", *model, "--bed", regions, "-o", str(out), "-q"]) == 0
    assert main(["hub", str(out), "-o", str(tmp_path / "hub"), "--annotation", genes]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["windows"] == 1, "one window, on the --bed region"
    assert (manifest["interpretation"]["regions"], manifest["interpretation"]["bases"]) == (1, 400)
    with pyBigWig.open(str(out / "tracks" / "X.bw")) as track:
        assert track.stats("chr1", 100000, 100400)[0] is not None and track.stats("chr1", 101000, 101200) == [None]
    bigbed = next((tmp_path / "hub" / "annotation").glob("genes.*.bb"))
    assert [r[:5] for r in pybigtools.open(str(bigbed)).records("chr1")] == [(100100, 100300, "geneA", "0", "+")]
    assert "type bigBed 12" in (tmp_path / "hub" / "hub.txt").read_text()


TARGET_LAYOUTS = {
    "peak last": ("identifier\tfile\tclip\tsum_stat\tdescription\tscale\tpeak",
                  ["A\tA.bw\t1000\tmean\ttrack A\t1\t", "B\tB.bw\t4\tsum\ttrack B\t0.5\tB.peaks.bed"]),
    "sum_stat last": ("\tidentifier\tfile\tclip\tdescription\tsum_stat",
                      ["0\tA\tA.bw\t1000\ttrack A\tmean", "1\tB\tB.bw\t4\ttrack B\tmedian"]),
}


@pytest.mark.parametrize("layout", TARGET_LAYOUTS)
def test_crlf_targets_txt_reads_like_the_lf_one(inputs, layout):
    folder = inputs["dir"]
    header, rows = TARGET_LAYOUTS[layout]
    written = {}
    for name, newline, mark in (("lf", "\n", ""), ("crlf", "\r\n", ""), ("excel", "\r\n", "\ufeff")):
        written[name] = folder / f"{name}.targets.txt"
        written[name].write_bytes((mark + newline.join([header, *rows]) + newline).encode())
    lf = read_targets(written["lf"])
    assert read_targets(written["crlf"]) == lf and read_targets(written["excel"]) == lf
    assert all(t.file.is_file() and "\r" not in str(t.file) + t.sum_stat + t.description for t in lf)
    assert [t.sum_stat for t in lf] == [row.split("\t")[header.split("\t").index("sum_stat")] for row in rows]
    if layout == "peak last":
        assert (lf[0].peak, lf[1].peak, lf[1].scale) == (None, folder / "B.peaks.bed", 0.5)
    (folder / "latin1.targets.txt").write_bytes(f"{header}\n{rows[0]}\n{rows[1]} \xe9\n".encode("latin-1"))
    with pytest.raises(TargetsError, match=r"latin1\.targets\.txt, line 3: not UTF-8 text"):
        read_targets(folder / "latin1.targets.txt")


def shard_arrays(manifest, folder):
    """Every array of every shard of a dataset, by split, shard and name."""
    arrays = {}
    for split, info in manifest["splits"].items():
        for k, shard in enumerate(info["shards"]):
            with h5py.File(folder / shard) as h5:
                arrays.update({(split, k, name): h5[name][:] for name in h5})
    return arrays


def test_generate_datasets_takes_crlf_targets_and_ucsc_beds_and_train_checks_their_names(inputs):
    """generate-datasets with a CRLF targets.txt whose peaks, the blacklist and --bed carry UCSC
    headers writes the same shards as with the plain files; --targets on such a dataset must
    repeat the names it holds."""
    folder, params = inputs["dir"], inputs["params"]
    regions = ["chr1\t100\t200", "chr1\t600\t700", "chr1\t800\t900", "chr2\t300\t400", "chr3\t200\t300",
               "chr4\t100\t200"]
    targets = (folder / "targets.txt").read_text().replace("B.peaks.bed", "B.ucsc.peaks.bed")
    (folder / "crlf.targets.txt").write_bytes(targets.replace("\n", "\r\n").encode())
    write_bed(folder / "B.ucsc.peaks.bed", (folder / "B.peaks.bed").read_text().splitlines(), header=True)
    write_bed(folder / "blacklist.ucsc.bed", (folder / "blacklist.bed").read_text().splitlines(), header=True,
              newline="\r\n")
    plain = generate_datasets(replace(params, bed=str(write_bed(folder / "r.bed", regions))), folder / "plain",
                              progress=False)
    assert main(["generate-datasets", "--target", str(folder / "crlf.targets.txt"), "--fa", params.fasta,
                 "--gsize", params.chrom_sizes, "--seqcons", params.conservation,
                 "--blacklist", str(folder / "blacklist.ucsc.bed"),
                 "--bed", str(write_bed(folder / "r.ucsc.bed", regions, header=True)), "--seqlen", "128", "--binsize",
                 "16", "--nchunk", "3", "-o", str(folder / "ucsc"), "-q"]) == 0
    ucsc = json.loads((folder / "ucsc.json").read_text())
    assert {s: i["windows"] for s, i in ucsc["splits"].items()} == {s: i["windows"] for s, i in plain["splits"].items()}
    assert plain["splits"]["train"]["windows"] == 3, "the window on the blacklist is dropped"
    expected, got = shard_arrays(plain, folder), shard_arrays(ucsc, folder)
    assert expected.keys() == got.keys() and expected
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=str(key))
    assert got[("train", 0, "labels")][:, 1].any(), "the peaks were read"

    train = open_split(folder / "ucsc", "train", SplitOptions(targets=str(folder / "crlf.targets.txt")))
    assert train.target_names == ["A", "B"]
    (folder / "other.targets.txt").write_text(targets.replace("\tA\t", "\tMGC\t"))
    with pytest.raises(DatasetError, match=r"names the targets \['MGC', 'B'\] but .*ucsc\.train\.0\.h5 holds "
                                           r"\['A', 'B'\]: .* may only repeat them"):
        open_split(folder / "ucsc", "train", SplitOptions(targets=str(folder / "other.targets.txt")))
