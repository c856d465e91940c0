"""Inference basics: eval mode, device choice, batching."""
import numpy as np
import pytest
import torch

from epiformer.engine import Engine, select_device
from epiformer.genome import Genome

from .conftest import write_fasta


def test_auto_device_without_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    assert select_device(None).type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_cuda():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        select_device("cuda")


def test_batches_give_the_same_predictions(tiny_model):
    tiny_model.train()
    x = np.random.default_rng(0).random((5, 4, 8192), dtype=np.float32)
    one = Engine(tiny_model, device="cpu", batch_size=1).predict(x)
    three = Engine(tiny_model, device="cpu", batch_size=3).predict(x)
    assert not tiny_model.training, "the engine runs the model in eval mode"
    assert one.shape == (5, 8, 48) and one.dtype == np.float32
    np.testing.assert_allclose(one, three, atol=1e-5)
    np.testing.assert_array_equal(three, Engine(tiny_model, device="cpu", batch_size=3).predict(x))


def test_bf16_is_ignored_on_cpu(tiny_model):
    assert not Engine(tiny_model, device="cpu", bf16=True).bf16


def test_bad_inputs(tiny_model):
    engine = Engine(tiny_model, device="cpu")
    with pytest.raises(ValueError, match=r"shape \(N, 4, 8192\), got \(2, 4, 100\)"):
        engine.predict(np.zeros((2, 4, 100), np.float32))
    assert engine.predict(np.zeros((0, 4, 8192), np.float32)).shape == (0, 8, 48)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        Engine(tiny_model, batch_size=0)


def test_predict_genome_windows(tiny_model, tmp_path):
    rng = np.random.default_rng(2)
    seq = "".join(rng.choice(list("ACGT"), 20_000))
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": seq})
    engine = Engine(tiny_model, device="cpu", batch_size=2)
    with Genome(fasta) as genome:
        out = engine.predict_intervals(genome, [("chr1", 0), ("chr1", 15_000), ("chr1", -100)])
        direct = engine.predict(genome.encode("chr1", 15_000, 15_000 + 8192)[None])
    assert out.shape == (3, 8, 48)
    np.testing.assert_allclose(out[1], direct[0], atol=1e-5)


def test_out_of_memory_splits_the_batch(tiny_model):
    """A batch that runs out of device memory is split and retried, with the same predictions."""
    x = np.random.default_rng(1).random((6, 4, 8192), dtype=np.float32)
    expected = Engine(tiny_model, device="cpu", batch_size=1).predict(x)
    original = tiny_model.forward

    def limited(batch):
        if len(batch) > 2:          # two windows, one with its reverse complement
            raise torch.OutOfMemoryError("CUDA out of memory (forced by the test)")
        return original(batch)

    tiny_model.forward = limited
    engine = Engine(tiny_model, device="cpu", batch_size=6)
    np.testing.assert_allclose(engine.predict(x), expected, atol=1e-5)
    assert engine.oom_splits > 0

    def always(batch):
        raise torch.OutOfMemoryError("CUDA out of memory (forced by the test)")

    tiny_model.forward = always
    with pytest.raises(torch.OutOfMemoryError):
        engine.predict(x[:1])
