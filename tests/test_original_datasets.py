"""Datasets written by the original generate_datasets.py, read as they are (LZ4 HDF5)."""
import h5py
import hdf5plugin
import numpy as np
import pytest

from epiformer.cli import main
from epiformer.genome.encoding import sequence_codes
from epiformer.model.checkpoints import load_model
from epiformer.training.datasets import DatasetError, ShardDataset, SplitOptions, open_split
from epiformer.training.trainer import evaluate, load_train_config, train

SEQ_LEN, BIN, TARGETS = 2048, 128, 3
CHROMS = {"chr1": 12 * SEQ_LEN + 500, "chr2": 5 * SEQ_LEN + 7, "chr3": 6 * SEQ_LEN}
SMALL = {"preset": "tiny", "seq_len": SEQ_LEN, "crop_size": 2, "batch_size": 4, "num_epoches": 1,
         "num_workers": 0, "warmup_epoches": 0.5, "multiout_dim": TARGETS}


def write_original(folder, genome, names_for_sequences=False, nchunk=9, seed=0):
    """A dataset in the original's exact layout: windows tiled from 0 without overlap, the short
    last window of each chromosome dropped, OUTPREFIX.{k}.h5 of ``nchunk`` windows in genome order,
    every dataset LZ4-compressed; ``targets/label`` only in chunks with a peak."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    windows = [(c, s, s + SEQ_LEN) for c, size in CHROMS.items() for s in range(0, size - SEQ_LEN + 1, SEQ_LEN)]
    expected = {}
    lz4 = hdf5plugin.LZ4()
    for k in range(0, len(windows), nchunk):
        chunk = windows[k: k + nchunk]
        seqs = [genome[c][s:e] for c, s, e in chunk]
        names = [f"{c}:{s}-{e}" for c, s, e in chunk]
        cons = rng.random((len(chunk), SEQ_LEN))
        value = rng.gamma(1.0, 1.0, (len(chunk), TARGETS, SEQ_LEN // BIN))
        with h5py.File(folder / f"brain.{k // nchunk}.h5", "w") as h5:
            text = h5py.string_dtype()
            stored = [f"::{n}" for n in names] if names_for_sequences else seqs
            h5.create_dataset("inputs/seq", data=np.array(stored, dtype=object), dtype=text, **lz4)
            h5.create_dataset("inputs/seqcons", data=cons, **lz4)
            h5.create_dataset("targets/value", data=value, **lz4)
            if k == 0:
                h5.create_dataset("targets/label", data=(value > 2).astype(np.float32), **lz4)
            h5.create_dataset("segments/name", data=np.array(names, dtype=object), dtype=text, **lz4)
        for name, seq, c, v in zip(names, seqs, cons, value):
            expected[name] = (sequence_codes(seq), c.astype(np.float32), v.astype(np.float32))
    return expected


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    rng = np.random.default_rng(1)
    seqs = {c: "".join(rng.choice(list("ACGTacgt"), size)) for c, size in CHROMS.items()}
    fasta = tmp_path_factory.mktemp("genome") / "genome.fa"
    fasta.write_text("".join(f">{c}\n" + "\n".join(s[i: i + 60] for i in range(0, len(s), 60)) + "\n"
                             for c, s in seqs.items()))
    return fasta, seqs


@pytest.fixture(scope="module")
def original(genome, tmp_path_factory):
    folder = tmp_path_factory.mktemp("original") / "h5"
    return folder, write_original(folder, genome[1])


def test_original_files_are_read_as_they_are_and_split_by_chromosome(original):
    folder, expected = original
    with h5py.File(folder / "brain.0.h5") as h5:
        assert "32004" in h5["inputs/seqcons"]._filters, "LZ4, the filter the original wrote"
    splits = {split: open_split(folder, split) for split in ("train", "valid", "test")}
    assert {split: len(ds) for split, ds in splits.items()} == {"train": 12, "valid": 5, "test": 6}
    assert splits["valid"].parameters["valid_chroms"] == ["chr2"] and splits["test"].parameters["test_chroms"] == ["chr3"]
    for ds in splits.values():
        assert ds.target_names == ["target_0", "target_1", "target_2"]
        assert (ds.seq_len, ds.bin_size, ds.has_conservation) == (SEQ_LEN, BIN, True)
        for i in range(len(ds)):
            codes, cons, targets, name = ds.window(i)
            np.testing.assert_array_equal(codes, expected[name][0])
            np.testing.assert_array_equal(cons, expected[name][1])
            np.testing.assert_array_equal(targets, expected[name][2])
    assert {ds.window(i)[3].split(":")[0] for ds in [splits["train"]] for i in range(12)} == {"chr1"}
    x, y = splits["test"][0]
    assert x.shape == (4, SEQ_LEN) and y.shape == (TARGETS, SEQ_LEN // BIN)
    np.testing.assert_allclose(x.sum(0).numpy(), np.exp(expected[splits["test"].window(0)[3]][1]), rtol=1e-6)
    custom = open_split(folder, "train", SplitOptions(valid_chroms=["chr1"], test_chroms=["chr2"]))
    assert len(custom) == 6 and {custom.window(i)[3].split(":")[0] for i in range(6)} == {"chr3"}


def test_window_names_in_inputs_seq_are_read_from_the_fasta(genome, original, tmp_path):
    fasta, seqs = genome
    write_original(tmp_path / "named", seqs, names_for_sequences=True)
    with pytest.raises(DatasetError, match=r"inputs/seq holds window names.*--fa"):
        open_split(tmp_path / "named", "train")
    named = open_split(tmp_path / "named", "valid", SplitOptions(fasta=str(fasta)))
    plain = open_split(original[0], "valid")
    for i in range(len(plain)):
        np.testing.assert_array_equal(named.window(i)[0], plain.window(i)[0])


def test_bad_original_datasets_and_flags_give_one_message(original, tmp_path, capsys):
    folder, _ = original
    with pytest.raises(DatasetError, match="chr9 has no window in"):
        open_split(folder, "valid", SplitOptions(valid_chroms=["chr9"]))
    with pytest.raises(DatasetError, match="in both the validation and the test split"):
        open_split(folder, "valid", SplitOptions(valid_chroms=["chr2"], test_chroms=["chr2"]))
    broken = tmp_path / "broken"
    broken.mkdir()
    with h5py.File(broken / "x.0.h5", "w") as h5:
        for name in ("inputs/seq", "inputs/seqcons", "targets/value", "segments/name"):
            h5.create_dataset(name, data=np.zeros((2, 8)) if name != "segments/name" else np.array([b"a", b"b"]))
    with pytest.raises(DatasetError, match=r"x\.0\.h5.*do not describe the same windows"):
        ShardDataset.from_original(broken, "train")
    assert main(["train", "-i", str(tmp_path / "nowhere"), "-o", str(tmp_path / "run"), "--test-chroms", "chr1"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "no such file" in err and "Traceback" not in err


def test_train_one_step_and_evaluate_on_the_original_layout(original, tmp_path, capsys):
    folder, _ = original
    args = ["train", "-i", str(folder), "-o", str(tmp_path / "run"), "-q"]
    for key, value in SMALL.items():
        args += [f"--{key}", str(value)]
    assert main(args) == 0
    checkpoint = tmp_path / "run.last.pth.tar"
    rows = evaluate(checkpoint, folder, out=tmp_path / "test.tsv")
    assert [r["target"] for r in rows] == ["target_0", "target_1", "target_2", "mean"]
    assert rows[-1]["bins"] == 6 * TARGETS * (SEQ_LEN // BIN - 4) and np.isfinite(rows[-1]["pearson_log2"])
    assert main(["evaluate", "-m", str(checkpoint), "-i", str(folder), "--test-chroms", "chr1"]) == 0
    assert "target_2" in capsys.readouterr().out
    with pytest.raises(DatasetError, match="expects seq_len 4096"):
        train(load_train_config(None, **{**SMALL, "seq_len": 4096}), folder, tmp_path / "wide", progress=False)


def write_targets(path, names, newline="\n"):
    """A targets.txt in the original's columns, one row per name (the bigWigs need not exist)."""
    rows = ["identifier\tfile\tclip\tsum_stat\tdescription"] + [f"{n}\t{n}.bw\t32\tmean\t{n} cells" for n in names]
    path.write_bytes((newline.join(rows) + newline).encode())
    return path


def test_targets_txt_names_the_original_files_targets_in_train_and_evaluate(original, tmp_path, capsys):
    """--targets: row i of targets.txt names target i of the original's files (which record no
    names); the checkpoint carries the names, and evaluating it on those files needs them again."""
    folder, _ = original
    names = ["MGC", "OPC", "ASC"]
    targets = write_targets(tmp_path / "targets.txt", names, newline="\r\n")
    args = ["train", "-i", str(folder), "--targets", str(targets), "-o", str(tmp_path / "run"), "-q"]
    for key, value in SMALL.items():
        args += [f"--{key}", str(value)]
    assert main(args) == 0
    checkpoint = str(tmp_path / "run.last.pth.tar")
    assert load_model(checkpoint).target_names == names
    assert main(["evaluate", "-m", checkpoint, "-i", str(folder), "-t", str(targets)]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in names)
    assert main(["evaluate", "-m", checkpoint, "-i", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"predicts {names} but the test split has ['target_0', 'target_1', 'target_2']" in err
    assert "--targets targets.txt" in err and "Traceback" not in err and err.count("\n") == 1
    two = write_targets(tmp_path / "two.txt", names[:2])
    assert main(["evaluate", "-m", checkpoint, "-i", str(folder), "-t", str(two)]) == 2
    err = capsys.readouterr().err
    assert f"{two} lists 2 target(s) but {folder / 'brain.0.h5'} holds 3" in err and err.count("\n") == 1
    assert open_split(folder, "test", SplitOptions(targets=str(targets)), target_index=1).target_names == ["OPC"]
