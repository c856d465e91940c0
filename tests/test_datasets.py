"""generate-datasets on a genome small enough to check by hand, the shards, and the Dataset."""
import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch

from epiformer.genome.encoding import encode, sequence_codes
from epiformer.genome.targets import TargetsError
from epiformer.training.datasets import (
    DatasetError,
    ShardDataset,
    augment_window,
    generate_datasets,
    manifest_has_conservation,
    reverse_complement_codes,
    shift_window,
)

from .helpers import SIZES, windows_of, write_bigwig


def test_windows_filters_and_split(inputs):
    out = inputs["dir"] / "ds" / "tiny"
    manifest = generate_datasets(inputs["params"], out, progress=False)
    folder = out.parent
    assert windows_of(manifest, folder, "train") == [
        "chr1:0-128", "chr1:128-256", "chr1:384-512", "chr1:512-640", "chr1:768-896",
        "chr2:0-128", "chr2:128-256", "chr2:256-384", "chr2:384-512"]
    assert windows_of(manifest, folder, "valid") == ["chr3:0-128", "chr3:128-256", "chr3:256-384", "chr3:384-512"]
    assert windows_of(manifest, folder, "test") == ["chr4:0-128", "chr4:128-256"]
    assert manifest["splits"]["train"]["dropped_for_n"] == 1, "chr1:256-384 holds an N"
    assert manifest["splits"]["train"]["shards"] == [f"tiny.train.{k}.h5" for k in range(4)], \
        "10 windows in shards of 3 before the N filter"
    assert manifest["parameters"]["valid_chroms"] == ["chr3"] and manifest["parameters"]["test_chroms"] == ["chr4"]
    assert json.loads((folder / "tiny.json").read_text()) == manifest


def test_shard_contents_by_hand(inputs):
    out = inputs["dir"] / "tiny"
    generate_datasets(inputs["params"], out, progress=False)
    with h5py.File(f"{out}.train.0.h5") as h5:
        assert [n.decode() for n in h5["name"][:]] == ["chr1:0-128", "chr1:128-256"]
        np.testing.assert_array_equal(h5["sequence"][1], sequence_codes(inputs["seqs"]["chr1"][128:256]))
        assert h5["sequence"].dtype == np.uint8 and h5["conservation"].dtype == np.float16
        np.testing.assert_allclose(h5["conservation"][1], 0.5)
        targets = h5["targets"][1]
        assert targets.shape == (2, 8) and targets.dtype == np.float32
        np.testing.assert_allclose(targets[0], [(p + 7.5) / 10 for p in range(128, 256, 16)], rtol=1e-5)
        np.testing.assert_allclose(targets[1], 4.0, err_msg="sum of 16 x 5 = 80, clipped to 4")
        np.testing.assert_array_equal(h5["labels"][1][1], [1, 1, 0, 0, 0, 0, 0, 0])
        assert not h5["labels"][1][0].any()
        assert json.loads(h5.attrs["targets"])[1]["clip"] == 4.0
        assert json.loads(h5.attrs["parameters"])["seq_len"] == 128
    with h5py.File(f"{out}.train.1.h5") as h5:
        assert list(h5["start"][:]) == [384, 512, 768] and h5["chrom"][0].decode() == "chr1"
    with h5py.File(f"{out}.train.2.h5") as h5:
        names = [n.decode() for n in h5["name"][:]]
        row = names.index("chr2:128-256")
        np.testing.assert_allclose(h5["targets"][row][0], [1.0] + [2.0] * 7,
                                   err_msg="8 of the first bin's 16 bases have no data: they count as 0")
        row = names.index("chr2:0-128")
        seq = "".join("ACGTN"[c] for c in h5["sequence"][row])
        assert seq == inputs["seqs"]["chr2"][:128].upper()


def test_bases_without_data_count_as_zero_or_nan_and_sparse_tracks_are_named(inputs, capsys):
    """A bigWig that omits zero-coverage stretches: chr3 (the validation split) has data on 10
    bases of each 128, so 7 of its 8 bins per window have none."""
    d = inputs["dir"]
    sparse = {c: np.full(n, np.nan) for c, n in SIZES.items()}
    for c, n in SIZES.items():
        if c != "chr3":
            sparse[c][:] = 3.0
    for start in range(0, SIZES["chr3"], 128):
        sparse["chr3"][start: start + 10] = 1.0
    write_bigwig(d / "C.bw", SIZES, sparse)
    (d / "sparse.txt").write_text("identifier\tfile\tclip\tsum_stat\tdescription\n"
                                  "C\tC.bw\t100\tmean\tsparse\nB\tB.bw\t100\tmean\tfull\n")
    params = replace(inputs["params"], targets=str(d / "sparse.txt"))
    manifest = generate_datasets(params, d / "zero", progress=False)
    err = capsys.readouterr().err
    assert "warning: 88% of the valid split's bins have no data in the bigWig of target C" in err
    assert "count as 0 (--missing zero)" in err and "target B" not in err and "train split" not in err
    assert manifest["splits"]["valid"]["bins_without_data"] == {"C": 4 * 7, "B": 0}
    assert manifest["parameters"]["missing"] == "zero"
    with h5py.File(d / "zero.valid.0.h5") as h5:
        np.testing.assert_allclose(h5["targets"][0][0], [10 / 16] + [0.0] * 7)
        assert json.loads(h5.attrs["parameters"])["missing"] == "zero"
        assert json.loads(h5.attrs["bins_without_data"]) == [3 * 7, 0]
    assert ShardDataset.from_manifest(d / "zero", "valid").missing == "zero"
    kept = generate_datasets(params, d / "zero", progress=False)
    assert kept["splits"] == manifest["splits"], "a rerun keeps the finished shards and their counts"
    capsys.readouterr()
    nan = generate_datasets(replace(params, missing="nan"), d / "nan", progress=False)
    assert "they count as NaN, masked in training (--missing nan)" in capsys.readouterr().err
    assert nan["splits"]["valid"]["bins_without_data"] == {"C": 28, "B": 0}
    with h5py.File(d / "nan.valid.0.h5") as h5:
        targets = h5["targets"][0][0]
        assert targets[0] == pytest.approx(1.0) and np.isnan(targets[1:]).all()
    with pytest.raises(DatasetError, match="missing must be one of zero, nan, got 'skip'"):
        generate_datasets(replace(params, missing="skip"), d / "bad", progress=False)


def test_median_with_scale_and_clip(inputs):
    params = replace(inputs["params"], targets=str(inputs["dir"] / "targets3.txt"))
    generate_datasets(params, inputs["dir"] / "median", progress=False)
    with h5py.File(inputs["dir"] / "median.train.0.h5") as h5:
        expected = [min(2 * (p + 7.5) / 10, 9.0) for p in range(128, 256, 16)]
        np.testing.assert_allclose(h5["targets"][1][0], expected, rtol=1e-5)
        assert h5.attrs["genome"] == "g"


def test_given_regions_and_stride(inputs):
    bed = inputs["dir"] / "regions.bed"
    bed.write_text("chr1\t190\t210\nchr3\t400\t420\nchr4\t0\t10\nchr2\t100\t200\n")
    params = inputs["params"]
    params.bed, params.valid_chroms, params.test_chroms = str(bed), ["chr2"], ["chr3"]
    defaults = generate_datasets(replace(params, valid_chroms=[], test_chroms=[]), inputs["dir"] / "d",
                                 progress=False)
    assert defaults["parameters"]["valid_chroms"] == ["chr2"], "second-to-last chromosome with windows"
    assert defaults["parameters"]["test_chroms"] == ["chr3"], "chr4's only region reaches past its start"
    assert params.valid_chroms == ["chr2"], "the caller's parameters are not changed"
    manifest = generate_datasets(params, inputs["dir"] / "bed", progress=False)
    assert windows_of(manifest, inputs["dir"], "train") == ["chr1:136-264"]
    assert windows_of(manifest, inputs["dir"], "valid") == ["chr2:86-214"]
    assert windows_of(manifest, inputs["dir"], "test") == ["chr3:346-474"]

    params.bed, params.stride = None, 64
    params.valid_chroms, params.test_chroms = ["chr3"], ["chr4"]
    manifest = generate_datasets(params, inputs["dir"] / "stride", progress=False)
    assert windows_of(manifest, inputs["dir"], "test") == ["chr4:0-128", "chr4:64-192", "chr4:128-256"]


def test_max_n_fraction(inputs):
    inputs["params"].max_n_frac = 0.01
    manifest = generate_datasets(inputs["params"], inputs["dir"] / "n", progress=False)
    assert "chr1:256-384" in windows_of(manifest, inputs["dir"], "train")


def test_parallel_matches_serial_and_rerun_keeps_finished_shards(inputs, monkeypatch):
    import epiformer.training.datasets as datasets

    serial = generate_datasets(inputs["params"], inputs["dir"] / "s", workers=1, progress=False)
    parallel = generate_datasets(inputs["params"], inputs["dir"] / "p", workers=2, progress=False)
    monkeypatch.setattr(datasets, "ROWS_PER_BLOCK", 2)         # blocks smaller than a shard, computed apart
    blocks = generate_datasets(replace(inputs["params"], nchunk=5), inputs["dir"] / "b", workers=2, progress=False)
    whole = generate_datasets(replace(inputs["params"], nchunk=5), inputs["dir"] / "w", workers=1, progress=False)
    for one, other in ((serial, parallel), (whole, blocks)):
        for split in ("train", "valid", "test"):
            assert {k: v for k, v in one["splits"][split].items() if k != "shards"} == \
                {k: v for k, v in other["splits"][split].items() if k != "shards"}
            for a, b in zip(one["splits"][split]["shards"], other["splits"][split]["shards"], strict=True):
                with h5py.File(inputs["dir"] / a) as ha, h5py.File(inputs["dir"] / b) as hb:
                    for key in ("sequence", "conservation", "targets", "labels", "name"):
                        np.testing.assert_array_equal(ha[key][:], hb[key][:])
    shard = inputs["dir"] / "s.train.0.h5"
    before = shard.stat().st_mtime_ns
    generate_datasets(inputs["params"], inputs["dir"] / "s", progress=False)
    assert shard.stat().st_mtime_ns == before


def test_interrupted_run_leaves_no_partial_shard(inputs, monkeypatch):
    import epiformer.training.datasets as datasets

    calls = []

    def failing_labels(self, *args):
        calls.append(1)
        if len(calls) > 4:
            raise KeyboardInterrupt
        return np.zeros(8, np.uint8)

    monkeypatch.setattr(datasets.PeakSet, "labels", failing_labels)
    with pytest.raises(KeyboardInterrupt):
        generate_datasets(inputs["params"], inputs["dir"] / "cut", progress=False)
    left = sorted(p.name for p in inputs["dir"].iterdir() if p.name.startswith(("cut", ".cut")))
    assert left == ["cut.train.0.h5"], "the finished first shard stays; the second left nothing"
    monkeypatch.undo()
    generate_datasets(inputs["params"], inputs["dir"] / "cut", progress=False)
    assert len(ShardDataset.from_manifest(inputs["dir"] / "cut", "train")) == 9, "a rerun completes it"


@pytest.mark.parametrize("change, message", [
    (lambda d, p: setattr(p, "fasta", str(d / "missing.fa")), "FASTA file .*missing.fa: no such file"),
    (lambda d, p: (d / "g.sizes").write_text("chrUn_x\t1000\n"), r"sizes file .*g.sizes names none of the chromosomes "
                                                                r"of FASTA .*g.fa \(chrUn_x vs chr1, chr2"),
    (lambda d, p: (d / "g.sizes").write_text("chr1\t999\n"), r"disagrees with FASTA .* chr1 \(999 vs 1000\)"),
    (lambda d, p: write_bigwig(d / "cons.bw", {"chrUn_a": 1000}, {}),
     r"conservation bigWig .*cons.bw has none of the chromosomes with windows \(chr1, chr2, chr3, chr4\); it has "
     r"chrUn_a: is it of another assembly"),
    (lambda d, p: (d / "A.bw").unlink(), "bigWig of target A .*A.bw: no such file"),
    (lambda d, p: (d / "targets.txt").write_text("identifier\tfile\n"), "missing columns clip, sum_stat, description"),
    (lambda d, p: (d / "blacklist.bed").write_text("chrUn_x\t0\t10\n"),
     r"blacklist .* names none of the genome's chromosomes \(it names chrUn_x; the sizes file chr1, chr2"),
    (lambda d, p: setattr(p, "test_chroms", ["chr3"]), "chr3 is in both the validation and the test split"),
    (lambda d, p: setattr(p, "valid_chroms", ["chrX"]), "split chromosome chrX is not in"),
    (lambda d, p: setattr(p, "seq_len", 4096), "no window is left"),
    (lambda d, p: (d / "B.peaks.bed").write_text("chr1\tten\t20\n"), r"B.peaks.bed, line 1: expected"),
    (lambda d, p: setattr(p, "bed", str(d / "targets.txt")), r"targets.txt, line 1: expected 'chrom<TAB>start"),
    (lambda d, p: (setattr(p, "bed", str(d / "r.bed")), (d / "r.bed").write_text("chrX\t1\t9\n")),
     "no window is left"),
])
def test_bad_input_is_one_clear_error_before_any_work(inputs, change, message):
    change(inputs["dir"], inputs["params"])
    with pytest.raises((DatasetError, TargetsError, ValueError), match=message):
        generate_datasets(inputs["params"], inputs["dir"] / "bad", progress=False)
    assert not list(inputs["dir"].glob("bad*"))


def test_empty_split(inputs):
    (inputs["dir"] / "blacklist.bed").write_text("chr4\t0\t300\n")
    inputs["params"].test_chroms = ["chr4"]
    with pytest.raises(DatasetError, match="the test split is empty: no window on chr4"):
        generate_datasets(inputs["params"], inputs["dir"] / "bad", progress=False)


def test_dataset_reads_lazily_and_encodes(inputs):
    generate_datasets(inputs["params"], inputs["dir"] / "tiny", progress=False)
    train = ShardDataset.from_manifest(inputs["dir"] / "tiny", "train")
    assert len(train) == 9 and train.target_names == ["A", "B"]
    x, y = train[1]
    expected = encode(inputs["seqs"]["chr1"][128:256], np.full(128, 0.5, np.float32))
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-3)
    assert y.shape == (2, 8)
    single = ShardDataset.from_manifest(inputs["dir"], "train", target_index=1, use_conservation=False)
    x1, y1 = single[1]
    assert single.target_names == ["B"] and y1.shape == (1, 8)
    assert set(np.unique(x1.numpy())) <= {0.0, 1.0}
    loader = torch.utils.data.DataLoader(train, batch_size=4, num_workers=2)
    batches = list(loader)
    assert sum(len(b[0]) for b in batches) == 9
    torch.testing.assert_close(batches[0][0][1], x)
    with pytest.raises(DatasetError, match="target index 5 is out of range"):
        ShardDataset.from_manifest(inputs["dir"], "train", target_index=5)


def test_without_conservation_the_shards_say_so(inputs):
    with_cons = generate_datasets(inputs["params"], inputs["dir"] / "cons", progress=False)
    assert with_cons["has_conservation"] is True
    with h5py.File(inputs["dir"] / "cons.train.0.h5") as h5:
        assert h5.attrs["has_conservation"] and "conservation" in h5
    params = replace(inputs["params"], conservation=None)
    manifest = generate_datasets(params, inputs["dir"] / "nocons", progress=False)
    assert manifest["has_conservation"] is False and manifest["parameters"]["conservation"] is None
    assert [s["windows"] for s in manifest["splits"].values()] == [s["windows"] for s in with_cons["splits"].values()]
    for a, b in zip(with_cons["splits"]["train"]["shards"], manifest["splits"]["train"]["shards"]):
        with h5py.File(inputs["dir"] / a) as ha, h5py.File(inputs["dir"] / b) as hb:
            assert not hb.attrs["has_conservation"] and "conservation" not in hb
            assert json.loads(hb.attrs["parameters"])["conservation"] is None
            for key in ("sequence", "targets", "labels", "name"):
                np.testing.assert_array_equal(ha[key][:], hb[key][:])
    train = ShardDataset.from_manifest(inputs["dir"] / "nocons", "train")
    assert not train.has_conservation and not train.use_conservation
    codes, cons, _, name = train.window(1)
    assert name == "chr1:128-256" and cons.shape == (128,) and not cons.any()
    x, _ = train[1]
    np.testing.assert_array_equal(x.numpy(), encode(inputs["seqs"]["chr1"][128:256]))
    augmented = ShardDataset.from_manifest(inputs["dir"] / "nocons", "train", augment=True)
    assert set(np.unique(augmented[1][0].numpy())) <= {0.0, 1.0}
    with pytest.raises(DatasetError, match=r"nocons.train.0.h5 holds no conservation \(the dataset was made "
                                           r"without --seqcons\): read it with use_conservation=False"):
        ShardDataset.from_manifest(inputs["dir"] / "nocons", "train", use_conservation=True)
    with pytest.raises(DatasetError, match=r"nocons.train.0.h5 has no conservation, unlike .*cons.train.0.h5"):
        ShardDataset([inputs["dir"] / "cons.train.0.h5", inputs["dir"] / "nocons.train.0.h5"])


def test_shards_from_before_conservation_was_optional_still_load(inputs):
    """Older shards and manifests have no has_conservation flag and always hold conservation."""
    manifest = generate_datasets(inputs["params"], inputs["dir"] / "old", progress=False)
    for shard in manifest["splits"]["train"]["shards"]:
        with h5py.File(inputs["dir"] / shard, "a") as h5:
            del h5.attrs["has_conservation"]
    del manifest["has_conservation"]
    assert manifest_has_conservation(manifest)
    train = ShardDataset.from_manifest(inputs["dir"] / "old", "train")
    assert train.has_conservation and train.use_conservation
    x, _ = train[1]
    np.testing.assert_allclose(x.numpy(), encode(inputs["seqs"]["chr1"][128:256], np.full(128, 0.5)), rtol=1e-3)


def test_corrupt_shard_is_a_clear_error(inputs):
    generate_datasets(inputs["params"], inputs["dir"] / "tiny", progress=False)
    (inputs["dir"] / "tiny.valid.0.h5").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="shard .*tiny.valid.0.h5 cannot be read"):
        ShardDataset.from_manifest(inputs["dir"], "valid")


def test_reverse_complement_twice_is_identity():
    codes = sequence_codes("ACGTNNacgtAAGC")
    np.testing.assert_array_equal(reverse_complement_codes(reverse_complement_codes(codes)), codes)
    np.testing.assert_array_equal(reverse_complement_codes(codes), sequence_codes("GCTTACGTNNACGT"))


def test_augmentation_moves_sequence_conservation_and_targets_consistently():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 4, 64).astype(np.uint8)
    cons = rng.random(64).astype(np.float32)
    targets = rng.random((2, 4)).astype(np.float32)
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        a_codes, a_cons, a_targets = augment_window(codes, cons, targets, max_shift=3)
        flipped = not np.array_equal(a_targets, targets)
        if flipped:
            np.testing.assert_array_equal(a_targets, targets[:, ::-1])
            a_codes, a_cons = reverse_complement_codes(a_codes), a_cons[::-1]
        matches = [s for s in range(-3, 4)
                   if np.array_equal((a_codes, a_cons)[0], shift_window(codes, cons, s)[0])
                   and np.array_equal(a_cons, shift_window(codes, cons, s)[1])]
        assert matches, "sequence and conservation moved together"
        seen.add((flipped, matches[0]))
    assert {f for f, _ in seen} == {True, False} and len({s for _, s in seen}) > 3


def test_shift_pads_with_n_and_zero():
    codes = np.array([0, 1, 2, 3], np.uint8)
    cons = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    right = shift_window(codes, cons, 1)
    np.testing.assert_array_equal(right[0], [4, 0, 1, 2])
    np.testing.assert_allclose(right[1], [0.0, 0.1, 0.2, 0.3])
    left = shift_window(codes, cons, -2)
    np.testing.assert_array_equal(left[0], [2, 3, 4, 4])


def test_overlapping_windows_are_read_once_per_span():
    from epiformer.training.datasets import _spans

    windows = [("c1", 0, 10), ("c1", 5, 15), ("c1", 15, 25), ("c1", 100, 110), ("c2", 0, 10), ("c2", 2, 12)]
    assert list(_spans(windows, 1000)) == [
        ("c1", 0, 15, [(0, 10), (5, 15)]), ("c1", 15, 25, [(15, 25)]), ("c1", 100, 110, [(100, 110)]),
        ("c2", 0, 12, [(0, 10), (2, 12)])]
    assert [len(g) for *_, g in _spans(windows, 11)] == [1, 1, 1, 1, 1, 1]
