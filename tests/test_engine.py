"""Inference basics: eval mode, device choice, batching."""
import numpy as np
import pytest
import torch

from epiformer.genome.encoding import sequence_codes
from epiformer.genome.reader import Genome
from epiformer.inference.device import DeviceError, select_device
from epiformer.inference.engine import Engine
from epiformer.inference.incremental import predict_alternates
from epiformer.model.network import Epiformer

from .helpers import write_fasta


def test_auto_device_without_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    assert select_device(None).type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_cuda():
    with pytest.raises(DeviceError, match="CUDA is not available here"):
        select_device("cuda")
    with pytest.raises(DeviceError, match="CUDA is not available here"):
        select_device("cuda:1")


def test_unknown_device_is_a_user_error():
    for bad in ("gpu", "mps", "cuda:x"):
        with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:N"):
            select_device(bad)


def test_batches_give_the_same_predictions(tiny_model):
    tiny_model.train()
    x = np.random.default_rng(0).random((5, 4, 8192), dtype=np.float32)
    one = Engine(tiny_model, device="cpu", batch_size=1).predict(x)
    three = Engine(tiny_model, device="cpu", batch_size=3).predict(x)
    assert not tiny_model.training, "the engine runs the model in eval mode"
    assert one.shape == (5, 8, 48) and one.dtype == np.float32
    np.testing.assert_allclose(one, three, atol=1e-5)
    np.testing.assert_array_equal(three, Engine(tiny_model, device="cpu", batch_size=3).predict(x))


def test_bf16_runs_on_cpu_too(tiny_model):
    """bf16 is bfloat16 autocast on every device: on a CPU the numbers move by bf16 rounding."""
    x = np.random.default_rng(0).random((2, 4, 8192), dtype=np.float32)
    fp32 = Engine(tiny_model, device="cpu").predict(x)
    bf16 = Engine(tiny_model, device="cpu", bf16=True).predict(x)
    assert not np.array_equal(fp32, bf16)
    np.testing.assert_allclose(bf16, fp32, rtol=0.05, atol=0.02)


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


def test_coded_windows_with_shifts_are_the_shifted_windows(tiny_model, demo_data):
    """Codes and float16 conservation travel to the device, which makes every shifted window of
    one coded window: the same as encoding each shifted window on the host."""
    from epiformer.genome.encoding import CONSERVATION_DTYPE, encode_codes

    engine = Engine(tiny_model, device="cpu", batch_size=2, shifts=(-3, 0, 5))
    intervals = [("chr1", 40_000), ("chr2", -200), ("chr1", 40_128)]
    with Genome(demo_data / "genome.fa", demo_data / "conservation.bw") as genome:
        got = engine.predict_intervals(genome, intervals)
        host = [[encode_codes(sequence_codes(genome.sequence(c, s + d, s + d + 8192)),
                              genome.conservation(c, s + d, s + d + 8192).astype(CONSERVATION_DTYPE).astype(np.float32))
                 for c, s in intervals] for d in (-3, 0, 5)]
        float32 = np.mean([engine.predict(np.stack([genome.encode(c, s + d, s + d + 8192) for c, s in intervals]))
                           for d in (-3, 0, 5)], axis=0)
    expected = np.mean([engine.predict(np.stack(windows)) for windows in host], axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # float16 conservation moves a prediction by its rounding (steps of 2^-11 below 1) only
    np.testing.assert_allclose(got, float32, rtol=2e-3, atol=1e-4)


def test_coded_windows_of_the_wrong_length(tiny_model):
    from epiformer.genome.encoding import CodedWindows

    engine = Engine(tiny_model, device="cpu", shifts=(0, 2))
    with pytest.raises(ValueError, match=r"\(N, 8194\)"):
        engine.predict_coded(CodedWindows(np.zeros((1, 8192), np.uint8), None))


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


@pytest.mark.slow
def test_compiled_engine_gives_the_same_predictions(tiny_model):
    """``compile`` (torch.compile) changes speed, not numbers, state_dict keys or the incremental path."""
    from epiformer.genome.encoding import CodedWindows

    rng = np.random.default_rng(0)
    x = rng.random((3, 4, 8192), dtype=np.float32)
    keys = list(tiny_model.state_dict())
    eager = Engine(tiny_model, device="cpu", batch_size=2)
    expected = eager.predict(x)
    compiled = Engine(Epiformer(tiny_model.config, tiny_model.target_names), device="cpu", batch_size=2, compile=True)
    compiled.model.load_state_dict(tiny_model.state_dict())
    assert list(compiled.model.state_dict()) == keys
    np.testing.assert_allclose(compiled.predict(x), expected, atol=1e-4 * np.abs(expected).max(), rtol=0)
    reference = CodedWindows(rng.integers(0, 5, (1, 8192)).astype(np.uint8), None)
    alternate = CodedWindows(reference.codes.copy(), None)
    alternate.codes[0, 4000] = (alternate.codes[0, 4000] + 1) % 4
    (state, alt), = predict_alternates(compiled, [(reference, alternate, None)])
    (state_eager, alt_eager), = predict_alternates(eager, [(reference, alternate, None)])
    np.testing.assert_allclose(state.prediction, state_eager.prediction,
                               atol=1e-4 * np.abs(state_eager.prediction).max(), rtol=0)
    np.testing.assert_allclose(alt, alt_eager, atol=1e-4 * np.abs(alt_eager).max(), rtol=0)
