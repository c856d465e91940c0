"""Genome access and encoding, including the edges: chromosome ends, case, N and IUPAC codes."""
import numpy as np
import pytest

from epiformer.genome.encoding import (
    encode,
    one_hot,
    reverse_complement,
    reverse_complement_encoded,
    reverse_track,
    sequence_codes,
)
from epiformer.genome.intervals import read_chrom_sizes
from epiformer.genome.reader import Genome, GenomeError

from .helpers import write_fasta


def test_one_hot_order_case_and_unknown_letters():
    x = one_hot("ACGTacgtNRYn-")
    assert x.shape == (4, 13) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, :4], np.eye(4))
    np.testing.assert_array_equal(x[:, 4:8], np.eye(4))
    assert not x[:, 8:].any(), "N, IUPAC codes and other letters are all-zero columns"
    np.testing.assert_array_equal(sequence_codes(b"AcGtN"), [0, 1, 2, 3, 4])


def test_encode_scales_by_exp_conservation():
    cons = np.array([0.0, 1.0, 0.5, np.nan], dtype=np.float32)
    x = encode("ACGN", cons)
    np.testing.assert_allclose(x.sum(axis=0), [1.0, np.e, np.exp(0.5), 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="conservation has shape"):
        encode("ACG", cons)


def test_reverse_complement_string_and_encoded():
    assert reverse_complement("ACGTNacgtRYKM") == "KMRYacgtNACGT"
    seq = "AACGTTGCAnNRy"
    assert reverse_complement(reverse_complement(seq)) == seq
    np.testing.assert_array_equal(reverse_complement_encoded(one_hot(seq)), one_hot(reverse_complement(seq)))
    cons = np.linspace(0, 1, len(seq))
    np.testing.assert_allclose(
        reverse_complement_encoded(encode(seq, cons)),
        encode(reverse_complement(seq), reverse_track(cons)), rtol=1e-6)


def test_fetch_inside_and_case_kept(small_genome):
    with Genome(small_genome["fasta"], small_genome["bigwig"]) as genome:
        assert genome.chrom_sizes == small_genome["sizes"]
        assert genome.sequence("chr1", 0, 14) == "ACGTacgtNNRYKM"
        assert genome.sequence("chr2", 10, 30) == small_genome["chr2"][10:30]
    assert small_genome["fasta"].with_suffix(".fa.fai").exists(), "index is built when missing"


def test_fetch_pads_with_n_outside_the_chromosome(small_genome):
    chr1 = small_genome["chr1"]
    with Genome(small_genome["fasta"]) as genome:
        assert genome.sequence("chr1", -5, 3) == "NNNNNACG"
        assert genome.sequence("chr1", len(chr1) - 2, len(chr1) + 3) == chr1[-2:] + "NNN"
        assert genome.sequence("chr1", -3, len(chr1) + 2) == "NNN" + chr1 + "NN"
        assert genome.sequence("chr1", len(chr1) + 10, len(chr1) + 14) == "NNNN"
        assert genome.sequence("chr1", -20, -10) == "N" * 10


def test_conservation_nan_and_padding_are_zero(small_genome):
    cons1 = small_genome["cons1"]
    with Genome(small_genome["fasta"], small_genome["bigwig"]) as genome:
        values = genome.conservation("chr1", -2, 10)
        assert values.dtype == np.float32
        np.testing.assert_allclose(values[:2], 0.0)
        np.testing.assert_allclose(values[2:7], cons1[0:5], rtol=1e-6)
        np.testing.assert_allclose(values[7:10], 0.0)
        np.testing.assert_allclose(values[10:], cons1[8:10], rtol=1e-6)
        assert not genome.conservation("chr2", 0, 50).any(), "no data on chr2 -> zeros"
        x = genome.encode("chr1", 0, 4)
        np.testing.assert_allclose(x.sum(axis=0), np.exp(cons1[:4]), rtol=1e-6)
        np.testing.assert_allclose(genome.encode("chr1", 0, 4, reverse=True), reverse_complement_encoded(x))


def test_without_conservation_the_factor_is_one(small_genome):
    with Genome(small_genome["fasta"]) as genome:
        np.testing.assert_array_equal(genome.encode("chr1", 0, 8), np.hstack([np.eye(4), np.eye(4)]))


@pytest.mark.parametrize("chrom, start, end, message", [
    ("chrX", 0, 10, r"chromosome 'chrX' is not in .*genome.fa \(it has 2: chr1, chr2\)"),
    ("1", 0, 10, "chromosome '1' is not in"),
    ("chr1", 10, 10, "chr1:10-10 is empty"),
    ("chr1", 12, 5, "chr1:12-5 is empty"),
])
def test_bad_intervals(small_genome, chrom, start, end, message):
    with Genome(small_genome["fasta"], small_genome["bigwig"]) as genome:
        with pytest.raises(GenomeError, match=message):
            genome.sequence(chrom, start, end)
        with pytest.raises(GenomeError, match=message):
            genome.encode(chrom, start, end)


def test_windows_line_ends_and_odd_width(tmp_path):
    fasta = write_fasta(tmp_path / "crlf.fa", {"chrA": "ACGTACGTAC", "chrB": "GGGCC"}, width=3, newline="\r\n")
    with Genome(fasta) as genome:
        assert genome.sequence("chrA", 0, 10) == "ACGTACGTAC"
        assert genome.sequence("chrB", 1, 6) == "GGCCN"


def test_missing_and_malformed_files(tmp_path, small_genome):
    with pytest.raises(GenomeError, match="FASTA file .*missing.fa: no such file"):
        Genome(tmp_path / "missing.fa")
    ragged = tmp_path / "ragged.fa"
    ragged.write_text(">chr1\nACGTA\nCC\nGGGGG\n")
    with pytest.raises(GenomeError, match="ragged.fa cannot be indexed"):
        Genome(ragged)
    with pytest.raises(GenomeError, match="bigWig file .*nope.bw: no such file"):
        Genome(small_genome["fasta"], tmp_path / "nope.bw")
    with pytest.raises(GenomeError, match="genome.fa cannot be opened as a bigWig"):
        Genome(small_genome["fasta"], small_genome["fasta"])


def test_chrom_sizes(tmp_path):
    good = tmp_path / "chrom.sizes"
    good.write_text("chr1\t1000\n# comment\n\nchr2\t500\r\n")
    assert read_chrom_sizes(good) == {"chr1": 1000, "chr2": 500}
    bad = tmp_path / "bad.sizes"
    bad.write_text("chr1\t1000\nchr2\tlots\n")
    with pytest.raises(GenomeError, match=r"bad.sizes, line 2: expected 'chrom<TAB>size'"):
        read_chrom_sizes(bad)
    dup = tmp_path / "dup.sizes"
    dup.write_text("chr1\t10\nchr1\t10\n")
    with pytest.raises(GenomeError, match="line 2: chromosome chr1 listed twice"):
        read_chrom_sizes(dup)
    with pytest.raises(GenomeError, match="no such file"):
        read_chrom_sizes(tmp_path / "none.sizes")


def test_device_encoding_is_the_host_encoding_of_float16_conservation():
    import torch

    from epiformer.genome.encoding import CONSERVATION_DTYPE, encode_codes, encode_tensor

    codes = sequence_codes("ACGTacgtNRYn-" * 3)[None]
    cons = np.linspace(0, 1, codes.shape[1]).astype(CONSERVATION_DTYPE)[None]
    on_device = encode_tensor(torch.as_tensor(codes), torch.as_tensor(cons)).numpy()
    np.testing.assert_allclose(on_device[0], encode_codes(codes[0], cons[0].astype(np.float32)), rtol=1e-6)
    np.testing.assert_array_equal(encode_tensor(torch.as_tensor(codes)).numpy()[0], encode_codes(codes[0]))


def test_coded_windows_are_the_windows_read_one_by_one(small_genome):
    """Blocks of neighbouring windows, windows off either end of a chromosome, other chromosomes
    and any order give what reading each window alone gives."""
    from epiformer.genome.encoding import CONSERVATION_DTYPE

    with Genome(small_genome["fasta"], small_genome["bigwig"]) as genome:
        intervals = [("chr2", 60), ("chr1", -5), ("chr1", 3), ("chr2", 0), ("chr1", 30), ("chr2", 95)]
        coded = genome.coded_windows(intervals, 12)
        assert coded.codes.shape == (6, 12) and coded.conservation.dtype == CONSERVATION_DTYPE
        for row, (chrom, start) in enumerate(intervals):
            np.testing.assert_array_equal(coded.codes[row], sequence_codes(genome.sequence(chrom, start, start + 12)))
            np.testing.assert_array_equal(coded.conservation[row],
                                          genome.conservation(chrom, start, start + 12).astype(CONSERVATION_DTYPE))
    with Genome(small_genome["fasta"]) as genome:
        assert genome.coded_windows(intervals, 12).conservation is None


def test_neighbouring_windows_are_read_as_one_block(small_genome, monkeypatch):
    with Genome(small_genome["fasta"], small_genome["bigwig"]) as genome:
        reads = []
        original = genome.sequence
        monkeypatch.setattr(genome, "sequence", lambda *span: reads.append(span) or original(*span))
        genome.coded_windows([("chr2", 0), ("chr2", 10), ("chr2", 20), ("chr2", 30)], 12)
        assert reads == [("chr2", 0, 42)]
        reads.clear()
        genome.coded_windows([("chr2", 2), ("chr2", 15)], 12)     # inside the block just read
        assert reads == []
        genome.coded_windows([("chr1", 0), ("chr2", 0), ("chr2", 80)], 5)   # far apart: one read each
        assert reads == [("chr1", 0, 5), ("chr2", 0, 5), ("chr2", 80, 85)]
