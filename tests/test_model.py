"""The network: presets, shapes, parameter counts and the two attention paths."""
import pytest
import torch

from epiformer.model.config import PRESETS, ConfigError, ModelConfig, preset
from epiformer.model.network import Epiformer, RelativeMultiheadAttention


def test_paper_preset_has_published_size():
    model = Epiformer(preset("paper"))
    assert model.num_parameters() == 54_819_693
    assert preset("paper").tower_channels == [384, 431, 484, 543, 610, 684, 768]
    assert preset("paper").n_output_bins == 640


def test_tiny_preset_size_is_the_documented_one():
    model = Epiformer(preset("tiny"))
    assert model.num_parameters() == 158_011
    assert model.target_names == [f"target_{i}" for i in range(8)]


def test_tiny_output_shape_and_non_negative(tiny_model):
    x = torch.rand(3, 4, 8192)
    with torch.inference_mode():
        y = tiny_model(x)
    assert y.shape == (3, 8, 48)
    assert (y >= 0).all()


@pytest.mark.slow
def test_paper_output_shape():
    model = Epiformer(preset("paper")).eval()
    with torch.inference_mode():
        y = model(torch.rand(1, 4, 98_304))
    assert y.shape == (1, 1, 640)
    assert (y >= 0).all()


@pytest.mark.parametrize("seq_len", [8192, 4096, 1024])
def test_fast_and_reference_attention_agree(seq_len):
    model = Epiformer(preset("tiny", seq_len=seq_len, crop_size=2)).eval()
    x = torch.rand(2, 4, seq_len)
    with torch.inference_mode():
        model.attention = "reference"
        ref = model(x)
        model.attention = "fast"
        fast = model(x)
    assert torch.allclose(fast, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("length", [1, 2, 20])
def test_relative_logits_match_the_literal_table(length):
    mha = RelativeMultiheadAttention(embed_size=48, num_heads=3, dropout=0.0)
    q = torch.randn(2, 3, length, 16)
    pos = torch.arange(length)
    table = mha.distance_embedding(pos[:, None] - pos[None, :] + 47)
    expected = torch.einsum("bhid,ijd->bhij", q, table)
    assert torch.allclose(mha.relative_logits(q), expected, atol=1e-5)


def _with_running_statistics(model: Epiformer) -> Epiformer:
    """Non-trivial BatchNorm statistics and affine weights, so folding them is really tested."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            for tensor, low, high in [(module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0),
                                      (module.weight.data, 0.5, 1.5), (module.bias.data, -0.2, 0.2)]:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return model.eval()


@pytest.mark.parametrize("tile_bins", [None, 3, 10])
@pytest.mark.parametrize("length_bins", [64, 21, 6])
def test_fused_tower_equals_the_modules_one_by_one(tile_bins, length_bins):
    """Whole windows, windows in tiles (with halos, at the window ends too) and the short slices
    the incremental path runs all give the reference tower's outputs."""
    torch.manual_seed(0)
    model = _with_running_statistics(Epiformer(preset("tiny")))
    tower = model.conv
    if tile_bins:
        tower.tile_bins = tile_bins
    x = torch.rand(3, 4, length_bins * model.config.bin_size)
    with torch.inference_mode():
        tower.mode = "reference"
        expected = tower(x)
        tower.mode = "fused"
        fused = tower(x)
    assert fused.shape == expected.shape
    assert torch.allclose(fused, expected, atol=1e-4 * expected.abs().max().item(), rtol=0)


def test_fused_tower_takes_lengths_off_the_bin_grid():
    model = _with_running_statistics(Epiformer(preset("tiny")))
    x = torch.rand(2, 4, 1000)
    with torch.inference_mode():
        model.conv.mode = "reference"
        expected = model.conv(x)
        model.conv.mode = "fused"
        assert torch.allclose(model.conv(x), expected, atol=1e-4 * expected.abs().max().item(), rtol=0)


def test_training_runs_the_modules_one_by_one():
    """In train mode BatchNorm uses batch statistics and updates its running ones: the fused path
    (running statistics only) must not be taken."""
    model = Epiformer(preset("tiny")).train()
    norm = model.conv.stem[1].module[0]
    before = norm.running_mean.clone()
    model(torch.rand(2, 4, model.config.seq_len)).sum().backward()
    assert not torch.equal(norm.running_mean, before)
    assert model.conv.stem[0].weight.grad is not None


def test_fast_path_trains_like_the_reference():
    """Gradients flow through the relative shift and match the literal formula."""
    cfg = preset("tiny", att_dropout=0.0, enc_dropout=0.0, ptw_dropout=0.0)
    x = torch.rand(2, 4, cfg.seq_len)
    grads = {}
    for mode in ("fast", "reference"):
        torch.manual_seed(0)
        model = Epiformer(cfg).train()
        model.attention = mode
        model(x).sum().backward()
        grads[mode] = model.trans.layers[0].mha.distance_embedding.weight.grad
    assert torch.allclose(grads["fast"], grads["reference"], atol=1e-4)


def test_wrong_input_shape_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match=r"expected input \(batch, 4, 8192\)"):
        tiny_model(torch.rand(1, 4, 1000))


def test_unknown_attention_mode(tiny_model):
    with pytest.raises(ValueError, match="attention must be one of"):
        tiny_model.attention = "flash"


@pytest.mark.parametrize("changes, message", [
    ({"bin_size": 64}, "bin_size 64 does not match num_cnn_layer 6"),
    ({"seq_len": 8000}, "not a multiple of bin_size"),
    ({"seq_len": 16384}, "128 bins exceeds embed_size 64"),
    ({"num_heads": 5}, "divisible by num_heads"),
    ({"crop_size": 32}, "leaves no output bins"),
    ({"att_dropout": 1.5}, "att_dropout must be in"),
    ({"embed_size": 0}, "embed_size must be a positive integer"),
])
def test_impossible_configs_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        preset("tiny", **changes)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset("huge")


def test_config_round_trip_keeps_original_training_keys():
    params = {**PRESETS["tiny"].to_dict(), "learning_rate": 1e-4, "batch_first": True}
    cfg = ModelConfig.from_dict(params)
    assert cfg == PRESETS["tiny"]
    assert cfg.to_dict()["learning_rate"] == 1e-4
