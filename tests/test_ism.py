"""Saturation mutagenesis: incremental equals full recomputation, outputs, limits."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from epiformer import save_checkpoint
from epiformer.cli import main
from epiformer.inference.engine import Engine
from epiformer.inference.incremental import predict_substitutions
from epiformer.inference.predictor import open_predictor
from epiformer.inference.settings import InferenceSettings, ModelSetOptions, ScoringSettings
from epiformer.model.config import preset
from epiformer.model.model_set import load_model_set
from epiformer.model.network import Epiformer
from epiformer.variants.alleles import Variant, VariantError
from epiformer.variants.effects import SCORE_FIELDS
from epiformer.variants.mutagenesis import saturation_mutagenesis
from epiformer.variants.scorer import VariantScorer


@pytest.fixture
def model_set(tmp_path):
    """Two tiny checkpoints with non-trivial batch-norm statistics, as one set."""
    paths = []
    for i, names in enumerate((["A", "B"], ["C"])):
        torch.manual_seed(10 + i)
        model = Epiformer(preset("tiny", multiout_dim=len(names)), names).eval()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
        paths.append(str(save_checkpoint(tmp_path / f"m{i}.pth.tar", model)))
    return load_model_set(paths)


def test_incremental_equals_full_recomputation(model_set):
    engine = Engine(model_set, device="cpu", batch_size=5)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, 8192)
    window = np.eye(4, dtype=np.float32)[codes].T * np.exp(rng.random(8192, dtype=np.float32))
    positions = [0, 1, 127, 128, 2000, 4095, 4096, 6000, 8063, 8191]
    subs = [(p, np.eye(4, dtype=np.float32)[(codes[p] + k) % 4] * 1.5) for p in positions for k in (1, 2, 3)]
    full_reference, full = predict_substitutions(engine, window, subs, incremental=False)
    reference, fast = predict_substitutions(engine, window, subs, incremental=True)
    assert full.shape == (30, 3, 48) and reference.shape == (3, 48)
    np.testing.assert_allclose(fast, full, atol=1e-4)
    np.testing.assert_allclose(reference, engine.predict(window[None])[0], atol=1e-4)
    np.testing.assert_allclose(full_reference, engine.predict(window[None])[0], atol=1e-6)
    one = window.copy()
    one[:, 2000] = subs[12][1]
    np.testing.assert_allclose(engine.predict(one[None])[0], fast[12], atol=1e-4)
    reach = model_set.config.tower_radius
    assert reach == 386, "stem 7 + blocks 2*(2+4+...+64) + pools 127"


def open_tiny(demo_data, ckpt, **settings):
    return open_predictor(ModelSetOptions((str(ckpt),)), demo_data / "genome.fa",
                          InferenceSettings(device="cpu", batch_size=16, conservation=str(demo_data / "conservation.bw"),
                                            **settings))


def test_ism_region_outputs(demo_data, tmp_path, capsys, tiny_checkpoint):
    ckpt = tiny_checkpoint
    with open_tiny(demo_data, ckpt) as predictor:
        scorer = VariantScorer(predictor)
        result = saturation_mutagenesis(scorer, "chr1", 150_000, 150_040)
        reference = predictor.genome.sequence("chr1", 150_000, 150_040).upper()
        with pytest.raises(VariantError, match="at most"):
            saturation_mutagenesis(scorer, "chr1", 100_000, 110_000)
    assert result.effects.shape == (2, 40, 4)
    for offset, base in enumerate(reference):
        assert result.effects[:, offset, "ACGT".index(base)].tolist() == [0.0, 0.0]
    assert np.isfinite(result.effects).all() and np.abs(result.effects).max() > 0
    assert main(["ism", "-m", str(ckpt), "--fa", str(demo_data / "genome.fa"), "--seqcons",
                 str(demo_data / "conservation.bw"), "-r", "chr1:150,001-150,040", "-o", str(tmp_path / "ism"),
                 "--device", "cpu"]) == 0
    assert "120 substitutions over 40 bp" in capsys.readouterr().out
    with h5py.File(tmp_path / "ism.h5") as f:
        np.testing.assert_allclose(f["effects"][:], result.effects, atol=1e-5)
        assert json.loads(f.attrs["settings"])["score_bp"] == 1024
    lines = (tmp_path / "ism.tsv").read_text().splitlines()
    assert lines[0].startswith("#epiformer_settings=") and len(lines) == 122
    assert (tmp_path / "ism.X.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("shifts", [(0,), (-1, 0, 2)])
def test_ism_effects_are_the_variant_scores(demo_data, tiny_checkpoint, shifts):
    """A substitution's ISM effect is the SAD score-variants and the server give it: one scorer,
    one window, the same shifts."""
    with open_tiny(demo_data, tiny_checkpoint, shifts=shifts) as predictor:
        scorer = VariantScorer(predictor, ScoringSettings(score_bp=300))
        result = saturation_mutagenesis(scorer, "chr2", 80_000, 80_006)
        variants = [Variant("chr2", 80_001 + offset, ref, alt) for offset, ref in enumerate(result.reference)
                    for alt in "ACGT" if alt != ref]
        scored = scorer.score(variants)
    sad = SCORE_FIELDS.index("sad")
    for variant, score in zip(variants, scored):
        effect = result.effects[:, variant.pos - 80_001, "ACGT".index(variant.alt)]
        np.testing.assert_allclose(effect, score.scores[:, sad], rtol=1e-3, atol=1e-5)
