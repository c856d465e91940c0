"""Checkpoints written by the original training script give the original's numbers."""
import numpy as np
import pytest
import torch

from epiformer import CheckpointError, load_model
from epiformer.genome.encoding import encode


@pytest.mark.parametrize("attention", ["fast", "reference"])
def test_reference_checkpoint_reproduces_expected_output(compat_checkpoint, compat_io, attention):
    model = load_model(compat_checkpoint)
    assert not model.training
    model.attention = attention
    with torch.inference_mode():
        out = model(torch.from_numpy(compat_io["model_input"])).numpy()
    assert out.shape == compat_io["expected_output"].shape == (2, 3, 48)
    assert np.abs(out - compat_io["expected_output"]).max() <= 1e-4


def test_own_encoder_reproduces_model_input(compat_io):
    encoded = np.stack([encode(seq, cons) for seq, cons in
                        zip(compat_io["sequence"], compat_io["conservation"])])
    assert np.abs(encoded - compat_io["model_input"]).max() <= 1e-6


def test_sequence_and_conservation_give_expected_output(compat_checkpoint, compat_io):
    model = load_model(compat_checkpoint)
    encoded = np.stack([encode(seq, cons) for seq, cons in
                        zip(compat_io["sequence"], compat_io["conservation"])])
    with torch.inference_mode():
        out = model(torch.from_numpy(encoded)).numpy()
    assert np.abs(out - compat_io["expected_output"]).max() <= 1e-4


def test_original_checkpoint_targets_default_or_given(compat_checkpoint):
    assert load_model(compat_checkpoint).target_names == ["target_0", "target_1", "target_2"]
    named = load_model(compat_checkpoint, target_names=["MGC", "OPC", "VIP"])
    assert named.target_names == ["MGC", "OPC", "VIP"]
    assert named.checkpoint_format == "original"
    assert named.metrics["current_valid_corr"] == pytest.approx(0.5)
    with pytest.raises(CheckpointError, match="3 outputs but 2 target names"):
        load_model(compat_checkpoint, target_names=["MGC", "OPC"])


def test_data_parallel_prefix_and_numpy_metrics_load(compat_checkpoint, compat_io, tmp_path):
    """Checkpoints saved from nn.DataParallel have 'module.' keys and may hold numpy scalars."""
    ckpt = torch.load(compat_checkpoint, map_location="cpu", weights_only=True)
    ckpt["state_dict"] = {f"module.{k}": v for k, v in ckpt["state_dict"].items()}
    ckpt["current_valid_corr"] = np.float64(0.42)
    path = tmp_path / "dp.pth.tar"
    torch.save(ckpt, path)
    model = load_model(path)
    assert model.metrics["current_valid_corr"] == pytest.approx(0.42)
    with torch.inference_mode():
        out = model(torch.from_numpy(compat_io["model_input"])).numpy()
    assert np.abs(out - compat_io["expected_output"]).max() <= 1e-4
