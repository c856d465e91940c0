"""Project checkpoints round-trip; unusable files give one clear error naming the file."""
import shutil

import numpy as np
import pytest
import torch

from epiformer import CheckpointError, load_model, save_checkpoint
from epiformer.model.config import preset
from epiformer.model.network import Epiformer

CELL_TYPES = ["HIP", "ASCT", "OPC", "OGC", "MGC", "VIP", "ITL23", "ET"]


def test_own_checkpoint_round_trip(tmp_path):
    model = Epiformer(preset("tiny"), CELL_TYPES).eval()
    path = save_checkpoint(tmp_path / "run.best_loss.pth.tar", model, genome="demo",
                           metrics={"valid_pearson": 0.61}, epoch=3)
    loaded = load_model(path)
    assert loaded.target_names == CELL_TYPES
    assert loaded.config == model.config
    assert loaded.genome == "demo"
    assert loaded.metrics == {"valid_pearson": 0.61}
    assert loaded.checkpoint_format == "epiformer"
    assert loaded.code_version.startswith("0.")
    assert not loaded.training
    x = torch.rand(2, 4, 8192)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 3
    assert raw["param"]["embed_size"] == 64, "the original's 'param' key is kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.best_loss.pth.tar"]


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    model = Epiformer(preset("tiny"))
    target = tmp_path / "out.pth.tar"

    def broken_save(obj, path):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match=f"cannot write {target}: No space left on device"):
        save_checkpoint(target, model)
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pth\.tar: no such file"):
        load_model(tmp_path / "nope.pth.tar")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth.tar"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pth.tar: the file is empty"):
        load_model(path)


def test_truncated_file(tmp_path, compat_checkpoint):
    path = tmp_path / "cut.pth.tar"
    path.write_bytes(compat_checkpoint.read_bytes()[: compat_checkpoint.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pth.tar: not a readable PyTorch checkpoint"):
        load_model(path)


@pytest.mark.parametrize("content", [b"chr1\t0\t100\n", b"\x89HDF\r\n\x1a\n" + bytes(100)])
def test_foreign_file(tmp_path, content):
    path = tmp_path / "foreign.pth.tar"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="foreign.pth.tar: not a readable PyTorch checkpoint"):
        load_model(path)


def test_torch_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="tensor.pt: not an Epiformer checkpoint.*found weights"):
        load_model(path)


def write_with_param(compat_checkpoint, path, **changes):
    """Save the reference checkpoint with some 'param' entries changed."""
    ckpt = torch.load(compat_checkpoint, weights_only=True)
    ckpt["param"].update(changes)
    torch.save(ckpt, path)
    return path


def test_weights_that_do_not_match_param(tmp_path, compat_checkpoint):
    path = write_with_param(compat_checkpoint, tmp_path / "mismatch.pth.tar", num_encoder_layers=3)
    with pytest.raises(CheckpointError, match=r"mismatch.pth.tar: weights do not match .*missing: trans.layers.2"):
        load_model(path)


def test_param_that_cannot_build_a_model(tmp_path, compat_checkpoint):
    path = write_with_param(compat_checkpoint, tmp_path / "badparam.pth.tar", bin_size=100)
    with pytest.raises(CheckpointError, match="badparam.pth.tar: its 'param' does not describe a model: bin_size 100"):
        load_model(path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "param": {}, "hook": shutil.rmtree}, path)
    with pytest.raises(CheckpointError, match="evil.pth.tar: not a readable PyTorch checkpoint"):
        load_model(path)


def test_loads_onto_requested_device(compat_checkpoint):
    model = load_model(compat_checkpoint, device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    assert np.isfinite(next(model.parameters()).detach().numpy()).all()


def test_conservation_use_is_recorded(tmp_path, compat_checkpoint):
    assert load_model(compat_checkpoint).uses_conservation, "the reference was trained with if_cons"
    path = write_with_param(compat_checkpoint, tmp_path / "nocons.pth.tar", if_cons=False)
    assert not load_model(path).uses_conservation
    own = save_checkpoint(tmp_path / "own.pth.tar", Epiformer(preset("tiny")), train_config={"if_cons": False})
    assert not load_model(own).uses_conservation
