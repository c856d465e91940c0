"""Training: configuration, schedule, metrics, one process and torchrun, checkpoints and resume."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from epiformer import load_model
from epiformer.cli import main
from epiformer.inference.settings import InferenceSettings
from epiformer.model.config import ConfigError
from epiformer.training.datasets import DatasetError, DatasetParameters, ShardDataset, generate_datasets
from epiformer.training.metrics import (
    SPECIFIC_MIN,
    SPECIFICITY_STARTED,
    TrackMetrics,
    multinomial_loss,
    specificity_not_started,
    training_loss,
    window_is_specific,
)
from epiformer.training.trainer import (
    WeightedDistributedSampler,
    evaluate,
    load_train_config,
    lr_factor,
    plot_learning_curves,
    train,
)

from .helpers import free_port

SMALL = {"preset": "tiny", "seq_len": 2048, "crop_size": 2, "batch_size": 8, "num_epoches": 1,
         "learning_rate": 2e-3, "min_lr": 1e-4, "num_workers": 0, "warmup_epoches": 0.5}
EXACT = {**SMALL, "att_dropout": 0.0, "enc_dropout": 0.0, "ptw_dropout": 0.0, "if_augment": False}


def demo_dataset(demo_data, out, conservation=True):
    """2,048 bp windows of the small demo genome (about 190 train, 45 valid, 50 test), with or
    without its conservation track."""
    d = demo_data
    params = DatasetParameters(fasta=str(d / "genome.fa"), chrom_sizes=str(d / "chrom.sizes"),
                               targets=str(d / "targets.txt"), blacklist=str(d / "blacklist.bed"),
                               conservation=str(d / "conservation.bw") if conservation else None,
                               seq_len=2048, nchunk=64)
    generate_datasets(params, out, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def dataset(demo_data, tmp_path_factory):
    return demo_dataset(demo_data, tmp_path_factory.mktemp("train_ds") / "demo")


@pytest.fixture(scope="module")
def nocons_dataset(demo_data, tmp_path_factory):
    """The same windows made without a conservation track (generate-datasets without --seqcons)."""
    return demo_dataset(demo_data, tmp_path_factory.mktemp("train_nocons") / "demo", conservation=False)


def cli(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "epiformer.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)


def test_config_file_names_and_overrides(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("preset: tiny\nnum_epoches: 3\nlearning_rate: 0.001\nembed_size: 64\nif_augment: false\n")
    cfg = load_train_config(yaml_file, num_epoches=5, batch_size=None)
    assert (cfg.preset, cfg.num_epoches, cfg.learning_rate, cfg.if_augment) == ("tiny", 5, 0.001, False)
    assert cfg.model == {"embed_size": 64}
    assert cfg.model_config(8).multiout_dim == 8
    toml_file = tmp_path / "c.toml"
    toml_file.write_text('preset = "tiny"\naccum_iter = 4\n')
    assert load_train_config(toml_file).accum_iter == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_epochs: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown setting 'num_epochs'"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="batch_size must be int, got 'eight'"):
        load_train_config(None, batch_size="eight")
    assert load_train_config(None).if_cons is None, "unset: the dataset decides"
    assert load_train_config(yaml_file, if_cons=False).if_cons is False
    with pytest.raises(ConfigError, match="if_cons must be bool, got 'yes'"):
        load_train_config(None, if_cons="yes")
    with pytest.raises(ConfigError, match="multiout_dim 3 does not match the 8 target"):
        load_train_config(None, preset="tiny", multiout_dim=3).model_config(8)
    with pytest.raises(ConfigError, match="no such file"):
        load_train_config(tmp_path / "none.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml cannot be parsed"):
        load_train_config(broken)


def test_recipe_original_sets_the_original_settings_and_explicit_ones_win(tmp_path):
    default, original = load_train_config(None), load_train_config(None, recipe="original")
    assert (default.optimizer, default.weight_decay, default.accum_iter, default.schedule_per) == ("adamw", 0.01, 1, "step")
    assert (original.optimizer, original.weight_decay, original.learning_rate, original.min_lr) == ("adam", 0.0, 1e-4, 1e-6)
    assert (original.num_epoches, original.warmup_epoches, original.schedule_per) == (100, 10, "epoch")
    assert (original.grad_clip, original.accum_iter, original.batch_size, original.bf16) == (5.0, 8, 8, False)
    assert (default.loss, original.loss) == ("poisson_multinomial", "poisson")
    config = tmp_path / "c.yaml"
    config.write_text("recipe: original\nnum_epoches: 30\n")
    cfg = load_train_config(config, accum_iter=2)
    assert (cfg.recipe, cfg.num_epoches, cfg.accum_iter, cfg.optimizer) == ("original", 30, 2, "adam")
    with pytest.raises(ConfigError, match=r"unknown recipe 'paper' \(choose default or original\)"):
        load_train_config(None, recipe="paper")
    with pytest.raises(ConfigError, match="optimizer must be adamw or adam, got 'sgd'"):
        load_train_config(None, optimizer="sgd")
    with pytest.raises(ConfigError, match="loss must be poisson or poisson_multinomial, got 'mse'"):
        load_train_config(None, loss="mse")
    with pytest.raises(ConfigError, match="best_corr_metric must be pearson or specific"):
        load_train_config(None, best_corr_metric="spearman")
    with pytest.raises(ConfigError, match=r"cons_dropout must be in \[0, 1\], got 1.5"):
        load_train_config(None, cons_dropout=1.5)
    with pytest.raises(ConfigError, match=r"ema_decay must be in \[0, 1\), got 1.0"):
        load_train_config(None, ema_decay=1.0)
    with pytest.raises(ConfigError, match="specific_oversample must be at least 1, got 0.5"):
        load_train_config(None, specific_oversample=0.5)
    with pytest.raises(ConfigError, match="schedule_per must be step or epoch"):
        load_train_config(None, schedule_per="batch")


def test_recipe_original_trains_with_adam_and_a_per_epoch_warm_up(dataset, tmp_path):
    run = tmp_path / "run"
    settings = {k: v for k, v in SMALL.items() if k not in ("warmup_epoches", "min_lr", "batch_size")}
    assert main(run_args(dataset, run, {**settings, "recipe": "original", "num_epoches": 2, "learning_rate": 1e-3})) == 0
    history = [json.loads(line) for line in (tmp_path / "run.metrics.jsonl").read_text().splitlines()]
    # 10 warm-up epochs stepped once per epoch, from above zero: 0.1 of the rate in the first, 0.2 after it, ...
    assert [h["lr"] for h in history] == pytest.approx([2e-4, 3e-4])
    raw = torch.load(tmp_path / "run.last.pth.tar", weights_only=True)
    assert raw["train_config"]["recipe"] == "original" and raw["train_config"]["optimizer"] == "adam"
    group = raw["optimizer"]["param_groups"][0]
    assert group["weight_decay"] == 0.0 and group.get("decoupled_weight_decay", False) is False
    assert raw["scheduler"]["last_epoch"] == 2, "one scheduler step per epoch"
    batches = len(ShardDataset.from_manifest(dataset, "train")) // 8
    assert batches % 8, "a short last accumulation, stepped too"
    assert raw["optimizer"]["state"][0]["step"] == 2 * -(-batches // 8)


def test_learning_rate_warms_up_from_above_zero_then_decays():
    factors = [lr_factor(s, warmup_steps=10, total_steps=100, min_ratio=0.01) for s in range(100)]
    assert factors[0] == pytest.approx(0.1), "never 0 in the first epoch"
    assert factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert lr_factor(100, 10, 100, 0.01) == pytest.approx(0.01)


def test_metrics_match_numpy_and_mask_nan():
    rng = np.random.default_rng(0)
    pred = rng.gamma(1.0, 1.0, (6, 2, 10))
    target = rng.poisson(pred + 0.5).astype(float)
    target[0, 1, :3] = np.nan
    metrics = TrackMetrics(2, torch.device("cpu"))
    for lo in (0, 3):
        metrics.update(torch.tensor(pred[lo: lo + 3]), torch.tensor(target[lo: lo + 3]))
    out = metrics.compute()
    for i in range(2):
        keep = ~np.isnan(target[:, i])
        expected = np.corrcoef(np.log2(pred[:, i][keep] + 1), np.log2(target[:, i][keep] + 1))[0, 1]
        assert out["pearson"][i] == pytest.approx(expected, abs=1e-10)
        poisson = pred[:, i][keep] - target[:, i][keep] * np.log(pred[:, i][keep] + 1e-8)
        assert out["loss"][i] == pytest.approx(poisson.mean(), rel=1e-6)
    assert out["nan_bins"] == [0, 3] and out["bins"] == [60, 57]


def specific_case(n_bins: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Observed tracks of 4 targets in which elements open in some targets only, (1, 4, bins)."""
    rng = np.random.default_rng(seed)
    observed = rng.gamma(0.3, 0.1, (1, 4, n_bins))
    peaks = rng.choice(n_bins, 40, replace=False)
    observed[0, rng.integers(0, 4, 40), peaks] += rng.uniform(1, 5, 40)
    observed[0, :, peaks[:10]] += 2.0                                   # shared elements
    return observed, peaks


def test_specific_r_is_zero_for_identical_tracks_and_one_for_exact_differences():
    observed, _ = specific_case()
    identical = np.repeat(observed.mean(1, keepdims=True), 4, axis=1)
    scaled = (observed + 1) ** 1.7 - 1            # the same across-target differences, stronger, in log2(x+1)
    out = {}
    for name, pred in (("identical", identical), ("exact", observed), ("scaled", scaled)):
        metrics = TrackMetrics(4)
        metrics.update(torch.tensor(pred), torch.tensor(observed))
        out[name] = metrics.compute()
    assert out["identical"]["specific"] == pytest.approx([0.0] * 4, abs=1e-6)
    assert min(out["identical"]["pearson"]) > 0.3, "while the overall R rewards the shared signal"
    assert out["exact"]["specific"] == pytest.approx([1.0] * 4, abs=1e-9)
    assert out["scaled"]["specific"] == pytest.approx([1.0] * 4, abs=1e-9), "a Pearson R: scale-free"


def test_specific_r_covers_active_bins_only_and_matches_numpy():
    observed, _ = specific_case(seed=1)
    rng = np.random.default_rng(2)
    pred = observed * rng.uniform(0.5, 1.5, observed.shape) + rng.gamma(0.5, 0.2, observed.shape)
    observed[0, 2, 5] = np.nan
    metrics = TrackMetrics(4, specific_min=0.8)
    for lo in (0, 120):
        metrics.update(torch.tensor(pred[..., lo: lo + 120]), torch.tensor(observed[..., lo: lo + 120]))
    out = metrics.compute()
    active = (np.nan_to_num(observed[0], nan=0) >= 0.8).any(0) & ~np.isnan(observed[0]).any(0)
    lp, lo_ = np.log2(pred[0][:, active] + 1), np.log2(observed[0][:, active] + 1)
    cp, co = lp - lp.mean(0), lo_ - lo_.mean(0)
    for i in range(4):
        assert out["specific"][i] == pytest.approx(np.corrcoef(cp[i], co[i])[0, 1], abs=1e-9)
    assert out["specific_bins"] == [int(active.sum())] * 4 and 0 < active.sum() < 200
    single = TrackMetrics(1)
    single.update(torch.tensor(pred[:, :1]), torch.tensor(observed[:, :1]))
    assert np.isnan(single.compute()["specific"][0]), "one target has no cell-type-specific part"


def test_a_run_that_has_not_begun_to_learn_specificity_is_told_so(tmp_path):
    """After two epochs below SPECIFICITY_STARTED a run is told so (the epoch line and the plot's
    title: see the one-process run); once an epoch reaches it, or with one target (NaN), not."""
    def epochs(*specific):
        return [{"epoch": i, "train_loss": 1.0, "valid_loss": 1.0, "valid_pearson_mean": 0.6,
                 "valid_pearson": [0.6, 0.6], "valid_specific_mean": r, "valid_specific": [r, r]}
                for i, r in enumerate(specific)]

    assert specificity_not_started(epochs(0.01)) is None, "one epoch is too early to tell"
    warning = specificity_not_started(epochs(0.01, 0.04, 0.03))
    assert warning and "not learned yet" in warning and "3 epochs" in warning and "0.040" in warning
    assert specificity_not_started(epochs(0.02, SPECIFICITY_STARTED, 0.05)) is None
    assert specificity_not_started(epochs(float("nan"), float("nan"))) is None
    plot_learning_curves(epochs(0.01, 0.02), ["A", "B"], tmp_path / "stuck.png")
    assert (tmp_path / "stuck.png").read_bytes()[:4] == b"\x89PNG"


def test_multinomial_loss_rewards_the_right_share_of_each_bin():
    observed, _ = specific_case()
    target = torch.tensor(observed)
    shared = torch.tensor(np.repeat(observed.mean(1, keepdims=True), 4, axis=1))
    right = target.clone() + 1e-3
    assert multinomial_loss(right, target) < multinomial_loss(shared, target)
    assert multinomial_loss(right * 7, target) == pytest.approx(multinomial_loss(right, target)), "scale-free"
    poisson, part = training_loss(right, target)
    assert part == poisson and training_loss(right, target, "poisson_multinomial", 0.0)[0] == pytest.approx(poisson)
    objective, part = training_loss(right, target, "poisson_multinomial", 2.0)
    assert objective > poisson and part == pytest.approx(poisson)
    target[0, 1, :5] = float("nan")
    right.requires_grad_(True)
    objective = training_loss(right, target, "poisson_multinomial")[0]
    objective.backward()
    assert torch.isfinite(objective) and torch.isfinite(right.grad).all(), "NaN targets are left out, gradients too"


def test_cons_dropout_leaves_a_window_its_sequence_only(dataset):
    kept = ShardDataset.from_manifest(dataset, "train", augment=True)
    dropped = ShardDataset.from_manifest(dataset, "train", augment=True, cons_dropout=1.0)
    assert kept.use_conservation and kept[0][0].max() > 1.5, "exp(conservation) scales the one-hot"
    for i in range(5):
        x = dropped[i][0]
        assert set(x.unique().tolist()) <= {0.0, 1.0}, "a factor of 1: the one-hot alone"
    torch.manual_seed(0)
    half = ShardDataset.from_manifest(dataset, "train", cons_dropout=0.5)
    scaled = [bool(half[i][0].max() > 1.0) for i in range(40)]
    assert 5 < sum(scaled) < 35, "each window draws its own"


def test_a_window_is_specific_where_one_cell_type_stands_above_the_others():
    shared = np.full((4, 10), 0.1)
    shared[:, 5] = 20.0
    assert not window_is_specific(shared), "a peak open in every cell type alike"
    one = shared.copy()
    one[2, 5] = 80.0
    assert window_is_specific(one)
    small = np.full((4, 10), 0.1)
    small[1, 3] = 4.0
    assert window_is_specific(small)
    assert not window_is_specific(small, specific_min=5.0), "below specific_min no bin is active"
    masked = one.copy()
    masked[0, 5] = np.nan
    assert not window_is_specific(masked), "a bin with a NaN target is not scored"
    assert not window_is_specific(one[2:3]), "one target has no specific part"


def test_weighted_sampler_draws_heavier_windows_more_and_splits_them_over_ranks():
    weights = np.array([1.0] * 90 + [9.0] * 10)
    ranks = [WeightedDistributedSampler(weights, 2, rank, seed=3) for rank in (0, 1)]
    drawn = [list(s) for s in ranks]
    assert [len(d) for d in drawn] == [50, 50] == [len(s) for s in ranks]
    both = np.array(drawn[0] + drawn[1])
    assert 0.3 < (both >= 90).mean() < 0.7, "10 windows of weight 9 against 90 of weight 1: about half"
    again = WeightedDistributedSampler(weights, 2, 0, seed=3)
    assert list(again) == drawn[0], "the same seed and epoch draw the same windows"
    again.set_epoch(1)
    assert list(again) != drawn[0], "each epoch draws anew"


def test_specific_oversample_draws_windows_with_specific_peaks_more_often(dataset, tmp_path, capsys):
    train_ds = ShardDataset.from_manifest(dataset, "train")
    specific = [window_is_specific(t) for t in train_ds.window_targets()]
    assert len(specific) == len(train_ds) and 0 < sum(specific) < len(specific)
    for i in (0, len(train_ds) - 1):
        np.testing.assert_array_equal(list(train_ds.window_targets())[i], train_ds.window(i)[2])
    cfg = load_train_config(None, **{**SMALL, "specific_oversample": 4.0})
    train(cfg, dataset, tmp_path / "run", progress=True)
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("specific_oversample")]
    assert said == [f"specific_oversample: {sum(specific):,} of {len(specific):,} training windows hold a "
                    "cell-type-specific peak and are drawn 4x as often"]


def test_ema_weights_are_validated_saved_and_resumed(dataset, tmp_path, monkeypatch):
    settings = {**EXACT, "num_epoches": 2, "ema_decay": 0.9}
    train(load_train_config(None, **settings), dataset, tmp_path / "full", progress=False)
    full = torch.load(tmp_path / "full.last.pth.tar", weights_only=True)
    steps = 2 * (len(ShardDataset.from_manifest(dataset, "train")) // 8)
    assert full["ema_updates"] == steps, "one update per optimizer step"
    key = next(k for k, v in full["state_dict"].items() if v.is_floating_point() and v.dim() > 1)
    assert not torch.equal(full["state_dict"][key], full["train_state_dict"][key]), \
        "the checkpoint's weights are the average, not the last step's"
    model = load_model(tmp_path / "full.last.pth.tar")
    torch.testing.assert_close(model.state_dict()[key], full["state_dict"][key])
    rows = evaluate(tmp_path / "full.last.pth.tar", dataset, split="valid")
    assert rows[-1]["pearson_log2"] == pytest.approx(full["history"][-1]["valid_pearson_mean"], abs=1e-4), \
        "validation scored the weights the checkpoint holds"

    def stop(*args):
        raise InterruptedError("stopped after the first epoch's checkpoints")

    with monkeypatch.context() as patch:
        patch.setattr("epiformer.training.trainer.plot_learning_curves", stop)
        with pytest.raises(InterruptedError):
            train(load_train_config(None, **settings), dataset, tmp_path / "cut", progress=False)
    train(load_train_config(None, **settings), dataset, tmp_path / "cut", resume=True, progress=False)
    cut = torch.load(tmp_path / "cut.last.pth.tar", weights_only=True)
    for name in ("state_dict", "train_state_dict"):
        for k, value in full[name].items():
            torch.testing.assert_close(cut[name][k], value, rtol=0, atol=1e-6)


def test_best_corr_can_keep_the_most_cell_type_specific_epoch(dataset, tmp_path):
    cfg = load_train_config(None, **{**SMALL, "num_epoches": 3, "best_corr_metric": "specific"})
    train(cfg, dataset, tmp_path / "run", progress=False)
    history = [json.loads(line) for line in (tmp_path / "run.metrics.jsonl").read_text().splitlines()]
    scores = [h["valid_specific_mean"] for h in history]
    best = torch.load(tmp_path / "run.best_corr.pth.tar", weights_only=True)
    assert best["epoch"] == int(np.argmax(scores)) and best["train_config"]["loss"] == "poisson_multinomial"
    assert best["best"]["corr"] == pytest.approx(max(scores))
    cfg = load_train_config(None, **{**SMALL, "num_epoches": 4, "best_corr_metric": "pearson"})
    train(cfg, dataset, tmp_path / "run", resume=True, progress=False)
    history = [json.loads(line) for line in (tmp_path / "run.metrics.jsonl").read_text().splitlines()]
    resumed = torch.load(tmp_path / "run.last.pth.tar", weights_only=True)
    assert resumed["best"]["corr"] == pytest.approx(max(h["valid_pearson_mean"] for h in history)), \
        "a resumed run ranks its epochs by the metric it is given"


def test_one_process_run_writes_checkpoints_metrics_and_plot(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("epiformer.training.metrics.SPECIFICITY_STARTED", 1.01)    # out of reach: always told
    cfg = load_train_config(None, **{**SMALL, "num_epoches": 2})
    record = train(cfg, dataset, tmp_path / "run", progress=True)
    assert record["epoch"] == 1 and len(record["valid_pearson"]) == 8
    first, second = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert "not learned yet" not in first and "cell-type specificity not learned yet" in second
    for name in ("last", "best_loss", "best_corr"):
        model = load_model(tmp_path / f"run.{name}.pth.tar")
        assert model.target_names == ["HIP", "ASCT", "OPC", "OGC", "MGC", "VIP", "ITL23", "ET"]
        assert model.uses_conservation, "if_cons unset and the dataset has conservation"
        assert model.genome == "genome" and model.config.seq_len == 2048
    history = [json.loads(line) for line in (tmp_path / "run.metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[-1]["valid_bins"][0] > 0 and history[-1]["valid_nan_bins"] == [0] * 8
    assert 0 < history[-1]["train_poisson"] < history[-1]["train_loss"], "the objective adds the multinomial term"
    assert (tmp_path / "run.learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    raw = torch.load(tmp_path / "run.last.pth.tar", weights_only=True)
    assert raw["epoch"] == 1 and "optimizer" in raw and "scheduler" in raw
    assert raw["metrics"]["valid_pearson_mean"] == pytest.approx(record["valid_pearson_mean"])
    rows = evaluate(tmp_path / "run.last.pth.tar", dataset, out=tmp_path / "test.tsv")
    assert [r["target"] for r in rows][-1] == "mean" and -1 <= rows[-1]["pearson_log2"] <= 1
    settings, header = (tmp_path / "test.tsv").read_text().splitlines()[:2]
    assert header.startswith("target\tpearson_log2\tspecific_r\tpoisson_loss")
    assert json.loads(settings.removeprefix("#epiformer_settings="))["precision"] == "fp32"
    assert json.loads(settings.removeprefix("#epiformer_settings="))["specific_min"] == SPECIFIC_MIN
    assert len(history[-1]["valid_specific"]) == 8 and -1 <= history[-1]["valid_specific_mean"] <= 1
    assert 0 < history[-1]["valid_specific_bins"] < history[-1]["valid_bins"][0]
    assert raw["metrics"]["valid_specific_mean"] == pytest.approx(history[-1]["valid_specific_mean"])


def test_dataset_without_conservation_trains_an_if_cons_false_model(nocons_dataset, tmp_path, capsys):
    assert main(run_args(nocons_dataset, tmp_path / "run", SMALL)) == 0
    out = capsys.readouterr().out
    assert f"note: the dataset {nocons_dataset} has no conservation (made without --seqcons): training " \
           "with if_cons false" in out
    raw = torch.load(tmp_path / "run.last.pth.tar", weights_only=True)
    assert raw["train_config"]["if_cons"] is False
    model = load_model(tmp_path / "run.last.pth.tar")
    assert model.uses_conservation is False
    rows = evaluate(tmp_path / "run.last.pth.tar", nocons_dataset)
    assert rows[-1]["target"] == "mean" and -1 <= rows[-1]["pearson_log2"] <= 1
    assert "note" not in capsys.readouterr().out

    from epiformer import save_checkpoint
    from epiformer.model.config import preset
    from epiformer.model.network import Epiformer

    names = ["HIP", "ASCT", "OPC", "OGC", "MGC", "VIP", "ITL23", "ET"]
    with_cons = save_checkpoint(tmp_path / "cons.pth.tar", Epiformer(preset("tiny", seq_len=2048, crop_size=2), names),
                                train_config={"if_cons": True})
    assert main(["evaluate", "-m", str(with_cons), "-i", str(nocons_dataset)]) == 2
    assert "trained with conservation (if_cons true) but the dataset" in capsys.readouterr().err
    assert len(evaluate(with_cons, nocons_dataset, settings=InferenceSettings(conservation="none"))) == 9
    assert main(["evaluate", "-m", str(with_cons), "-i", str(nocons_dataset), "--no-conservation",
                 "-o", str(tmp_path / "e.tsv")]) == 0
    assert '"conservation": "none"' in (tmp_path / "e.tsv").read_text().splitlines()[0]


@pytest.mark.parametrize("how", ["flag", "config file"])
def test_if_cons_true_on_a_dataset_without_conservation_is_one_line(nocons_dataset, tmp_path, capsys, how):
    args = run_args(nocons_dataset, tmp_path / "run", SMALL)
    if how == "flag":
        args += ["--if_cons", "true"]
    else:
        (tmp_path / "c.yaml").write_text("if_cons: true\n")
        args += ["-c", str(tmp_path / "c.yaml")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (f"epiformer train: error: if_cons is true but the dataset {nocons_dataset} has no conservation "
                   "(it was made without --seqcons): leave if_cons unset or set it false, or regenerate the "
                   "dataset with --seqcons\n")
    assert not list(tmp_path.glob("run*"))


def test_if_cons_false_on_a_dataset_with_conservation(dataset, tmp_path, capsys):
    assert main(run_args(dataset, tmp_path / "run", {**SMALL, "if_cons": "false"})) == 0
    assert "note" not in capsys.readouterr().out
    assert load_model(tmp_path / "run.last.pth.tar").uses_conservation is False


def test_single_target_with_index(dataset, tmp_path):
    cfg = load_train_config(None, **SMALL)
    train(cfg, dataset, tmp_path / "mgc", index=4, progress=False)
    model = load_model(tmp_path / "mgc.last.pth.tar")
    assert model.target_names == ["MGC"] and model.config.multiout_dim == 1
    with pytest.raises(DatasetError, match="use --index"):
        evaluate(tmp_path / "mgc.last.pth.tar", dataset)
    assert evaluate(tmp_path / "mgc.last.pth.tar", dataset, index=4)[0]["target"] == "MGC"


@pytest.mark.parametrize("overrides, index, message", [
    ({"seq_len": 8192}, None, "windows of 2048 bp .* the model expects seq_len 8192"),
    ({}, 9, "target index 9 is out of range"),
    ({"batch_size": 1000}, None, "fewer than one batch of 1000"),
])
def test_bad_runs_stop_with_one_message(dataset, tmp_path, overrides, index, message):
    cfg = load_train_config(None, **{**SMALL, **overrides})
    with pytest.raises((DatasetError, ConfigError), match=message):
        train(cfg, dataset, tmp_path / "bad", index=index, progress=False)
    assert not list(tmp_path.iterdir())


def test_corrupt_shard_and_empty_split_via_cli(dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset.parent, copy)
    (copy / "demo.valid.0.h5").write_bytes(b"not hdf5")
    result = cli("train", "-i", str(copy / "demo"), "-o", str(tmp_path / "r"), "--preset", "tiny",
                 "--seq_len", "2048", "--crop_size", "2", "-q")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "shard" in result.stderr and "demo.valid.0.h5 cannot be read" in result.stderr
    manifest = json.loads((copy / "demo.json").read_text())
    manifest["splits"]["valid"]["shards"] = []
    (copy / "demo.json").write_text(json.dumps(manifest))
    result = cli("train", "-i", str(copy / "demo"), "-o", str(tmp_path / "r"), "--preset", "tiny", "-q")
    assert result.returncode == 2 and "the valid split of" in result.stderr and "has no shards" in result.stderr


def run_args(dataset, out, settings):
    args = ["train", "-i", str(dataset), "-o", str(out), "-q"]
    for key, value in settings.items():
        args += [f"--{key}", str(value)]
    return args


def test_split_flags_are_refused_for_a_dataset_split_already(dataset, tmp_path, capsys):
    args = run_args(dataset, tmp_path / "run", SMALL)
    assert main(args + ["--valid-chroms", "chr1"]) == 2
    assert "--valid-chroms applies to the original's datasets only" in capsys.readouterr().err
    assert main(args + ["--fa", "genome.fa"]) == 2
    assert "--fa applies to the original's datasets only" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(dataset, tmp_path):
    """Same global batch, no dropout or augmentation, batch norm synchronised across ranks."""
    settings = {**EXACT, "sync_bn": True, "learning_rate": 5e-4}
    single_thread = {"OMP_NUM_THREADS": "1"}
    for name, extra in (("one", {}), ("other_seed", {"seed": 1})):
        result = cli(*run_args(dataset, tmp_path / name, {**settings, **extra}), env=single_thread)
        assert result.returncode == 0, result.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", "-m", "epiformer.cli",
                          *run_args(dataset, tmp_path / "two", settings)],
                         capture_output=True, text=True, env={**os.environ, **single_thread})
    assert two.returncode == 0, two.stderr[-3000:]
    a, b, c = (json.loads((tmp_path / f"{n}.metrics.jsonl").read_text().splitlines()[0])
               for n in ("one", "two", "other_seed"))
    assert b["valid_bins"] == a["valid_bins"], "every validation bin counted once across ranks"
    np.testing.assert_allclose(b["valid_pearson"], a["valid_pearson"], atol=1e-3)
    np.testing.assert_allclose(b["valid_loss_per_target"], a["valid_loss_per_target"], atol=1e-3)
    assert np.abs(np.subtract(c["valid_pearson"], a["valid_pearson"])).max() > 1e-2, \
        "the comparison is sensitive: another data order changes the metrics"


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(dataset, tmp_path):
    settings = {**SMALL, "num_epoches": 3}
    full = cli(*run_args(dataset, tmp_path / "full", settings))
    assert full.returncode == 0, full.stderr
    proc = subprocess.Popen([sys.executable, "-m", "epiformer.cli", *run_args(dataset, tmp_path / "cut", settings)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "cut.metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = metrics.read_text().count("\n")
    assert 1 <= done < 3, "killed after the first epoch's checkpoint, before the end"
    resumed = cli(*run_args(dataset, tmp_path / "cut", settings), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "full.last.pth.tar", weights_only=True)
    b = torch.load(tmp_path / "cut.last.pth.tar", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-6)
    assert [h["valid_loss"] for h in a["history"]] == pytest.approx([h["valid_loss"] for h in b["history"]])
    assert not list(tmp_path.glob(".*.tmp")), "no temporary files left by the kill"


def test_evaluate_refuses_a_checkpoint_of_another_window_size(dataset, tmp_path):
    from epiformer import save_checkpoint
    from epiformer.model.config import preset
    from epiformer.model.network import Epiformer

    names = ["HIP", "ASCT", "OPC", "OGC", "MGC", "VIP", "ITL23", "ET"]
    ckpt = save_checkpoint(tmp_path / "big.pth.tar", Epiformer(preset("tiny"), names))
    with pytest.raises(DatasetError, match=r"windows of 2048 bp .* checkpoint .*big.pth.tar expects seq_len 8192"):
        evaluate(ckpt, dataset)


def test_a_single_target_run_cannot_keep_its_most_specific_epoch(dataset, tmp_path, capsys):
    args = run_args(dataset, tmp_path / "run", {**SMALL, "best_corr_metric": "specific"}) + ["--index", "4"]
    assert main(args) == 2
    assert "best_corr_metric specific needs two targets or more" in capsys.readouterr().err
