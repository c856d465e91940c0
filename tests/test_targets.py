"""targets.txt parsing and per-bin values computed by hand."""
import numpy as np
import pytest

from epiformer.genome.reader import GenomeError
from epiformer.genome.targets import PeakSet, TargetsError, bin_values, read_targets

HEADER = "index\tidentifier\tfile\tclip\tsum_stat\tdescription\tpeak\n"


def write(path, text):
    path.write_text(text)
    return path


def test_reads_the_original_layout(tmp_path):
    (tmp_path / "MGC.bw").write_bytes(b"")
    path = write(tmp_path / "targets.txt", HEADER + "0\tMGC\tMGC.bw\t32\tmean\tmicroglia\tMGC.bed\n"
                                                    "1\tOPC\t/abs/OPC.bw\t16\tsum\tOPC cells\t\n")
    mgc, opc = read_targets(path)
    assert (mgc.identifier, mgc.clip, mgc.sum_stat, mgc.scale) == ("MGC", 32.0, "mean", 1.0)
    assert mgc.file == tmp_path / "MGC.bw", "relative paths are found beside targets.txt"
    assert opc.file.as_posix() == "/abs/OPC.bw" and opc.peak is None
    assert [t.index for t in (mgc, opc)] == [0, 1]


def test_unnamed_index_column_scale_and_crlf(tmp_path):
    path = write(tmp_path / "t.txt", "\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription\r\n"
                                     "0\tA\ta.bw\t10\t0.5\tmedian\tfirst\r\n")
    (target,) = read_targets(path)
    assert target.scale == 0.5 and target.sum_stat == "median" and target.description == "first"


@pytest.mark.parametrize("text, message", [
    ("identifier\tfile\tclip\tdescription\n", r"line 1: missing column sum_stat \(the header has"),
    ("identifier file clip sum_stat description\n", "missing columns identifier, file, clip, sum_stat"),
    (HEADER + "0\tA\ta.bw\t32\tmean\tx\n", r"line 2: expected 7 tab-separated fields .* found 6"),
    (HEADER + "0\tA\ta.bw\thigh\tmean\tx\t\n", "line 2: clip must be a number, got 'high'"),
    (HEADER + "0\tA\ta.bw\t32\tmax\tx\t\n", "line 2: sum_stat must be one of mean, median, sum, got 'max'"),
    (HEADER + "0\tA\ta.bw\t32\tmean\tx\t\n1\tA\tb.bw\t32\tmean\ty\t\n", "identifier 'A' appears twice"),
    (HEADER, "lists no targets"),
    ("", "is empty"),
])
def test_bad_tables_name_the_line_or_column(tmp_path, text, message):
    with pytest.raises(TargetsError, match=message):
        read_targets(write(tmp_path / "targets.txt", text))


def test_missing_targets_file(tmp_path):
    with pytest.raises(TargetsError, match="targets file .*nope.txt: no such file"):
        read_targets(tmp_path / "nope.txt")


def test_bins_by_hand():
    values = np.array([1, 2, 3, 6, 0, 0, 0, 40, 5, 5, 5, 5], dtype=np.float32)
    np.testing.assert_allclose(bin_values(values, 4, "mean", 100), [3.0, 10.0, 5.0])
    np.testing.assert_allclose(bin_values(values, 4, "sum", 100), [12.0, 40.0, 20.0])
    np.testing.assert_allclose(bin_values(values, 4, "median", 100), [2.5, 0.0, 5.0])
    np.testing.assert_allclose(bin_values(values, 4, "sum", 15), [12.0, 15.0, 15.0], err_msg="clip")
    np.testing.assert_allclose(bin_values(values, 4, "mean", 100, scale=0.5), [1.5, 5.0, 2.5])
    np.testing.assert_allclose(bin_values(-values, 4, "mean", 100), [0.0, 0.0, 0.0], err_msg="clip at 0")


def test_bases_without_data_are_left_out_and_empty_bins_are_nan():
    values = np.array([2, np.nan, 4, np.nan, np.nan, np.nan, np.nan, np.nan], dtype=np.float32)
    mean = bin_values(values, 4, "mean", 100)
    assert mean[0] == pytest.approx(3.0) and np.isnan(mean[1])
    assert bin_values(values, 4, "sum", 100)[0] == pytest.approx(6.0)
    assert bin_values(values, 4, "median", 100)[0] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="not a multiple of bin_size"):
        bin_values(values, 3, "mean", 100)


def test_peak_labels_edges(tmp_path):
    peaks = PeakSet(write(tmp_path / "p.bed", "chr1\t90\t120\tpeak1\nchr1\t150\t160\n"
                                             "chr1\t175\t176\nchr2\t0\t5\n#comment\n"))
    # window 100-200 in bins of 10: peak 90-120 starts before the window -> bins 0, 1;
    # 150-160 ends on a bin boundary -> bin 5 only; 175-176 (1 bp) -> bin 7.
    np.testing.assert_array_equal(peaks.labels("chr1", 100, 200, 10), [1, 1, 0, 0, 0, 1, 0, 1, 0, 0])
    assert not peaks.labels("chr3", 0, 100, 10).any()
    assert peaks.chroms == {"chr1", "chr2"}
    with pytest.raises(GenomeError, match=r"bad.bed, line 1: end 5 is not after start 10"):
        PeakSet(write(tmp_path / "bad.bed", "chr1\t10\t5\n"))
    with pytest.raises(GenomeError, match="peak file .*none.bed: no such file"):
        PeakSet(tmp_path / "none.bed")
