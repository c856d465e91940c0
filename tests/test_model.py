"""The network: presets, shapes, parameter counts and the two attention paths."""
import pytest
import torch

from epiformer.config import PRESETS, ConfigError, ModelConfig, preset
from epiformer.model import Epiformer, RelativeMultiheadAttention


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


def test_relative_logits_match_the_literal_table():
    mha = RelativeMultiheadAttention(embed_size=48, num_heads=3, dropout=0.0)
    length = 20
    q = torch.randn(2, 3, length, 16)
    pos = torch.arange(length)
    table = mha.distance_embedding(pos[:, None] - pos[None, :] + 47)
    expected = torch.einsum("bhid,ijd->bhij", q, table)
    assert torch.allclose(mha.relative_logits(q), expected, atol=1e-5)


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
