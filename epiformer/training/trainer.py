"""Training: one process, or many under torchrun (DistributedDataParallel, one GPU to many nodes).

    epiformer train --preset tiny -i demo_out/datasets -o runs/demo
    torchrun --nproc_per_node=4 -m epiformer.cli train -c brain.yaml -i datasets/brain -o runs/brain

Recipe: Poisson NLL (``log_input=False``) on the centre-cropped targets plus a multinomial NLL of
each bin's profile across targets (``loss``; :mod:`epiformer.training.metrics`), AdamW, a per-step linear
warm-up then cosine decay to ``min_lr``, gradient accumulation and clipping, bf16 autocast on
CUDA, augmentation on training data only, validation in eval mode; ``recipe: original`` sets the
original script's settings instead (:data:`RECIPES`). Metrics per target (Pearson R and the
cell-type-specific R) are computed from sufficient statistics summed over all ranks, so they cover
every bin of the split.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from epiformer.inference.settings import InferenceSettings
from epiformer.io.provenance import code_version
from epiformer.io.reading import sha256_file
from epiformer.model.checkpoints import read_checkpoint, save_checkpoint
from epiformer.model.config import ConfigError, ModelConfig, preset, read_config_file
from epiformer.model.network import Epiformer
from epiformer.parallel import torchrun as dist_utils
from epiformer.training.datasets import DatasetError, ShardDataset, SplitOptions, dataset_has_conservation, open_split
from epiformer.training.metrics import (
    LOSSES,
    SPECIFIC_MIN,
    SPECIFICITY_STARTED,
    TrackMetrics,
    nan_mean,
    specificity_not_started,
    training_loss,
    window_is_specific,
)


@dataclass
class TrainConfig:
    """Training hyperparameters (the original's names where it had them) plus the model preset.

    ``if_cons`` left unset (None) follows the dataset: true when its shards hold conservation.
    ``recipe`` names a set of defaults (:data:`RECIPES`) that the other settings given override.
    ``schedule_per`` says whether the learning rate's warm-up and decay advance each optimizer
    step or once per epoch. ``loss`` is ``poisson`` or ``poisson_multinomial`` (plus
    ``multinomial_weight`` times the across-target multinomial term, :func:`training_loss`);
    ``cons_dropout`` sets a training window's conservation to 0 with that probability, so the
    sequence must carry the signal. ``best_corr_metric`` chooses what ``best_corr`` keeps: the
    highest validation ``pearson`` or cell-type-``specific`` R (over bins where some target is at
    least ``specific_min``; :mod:`epiformer.training.metrics`). ``specific_oversample`` draws
    training windows that hold a cell-type-specific peak (:func:`~epiformer.training.metrics.
    window_is_specific`) that many times as often as the others. ``ema_decay`` above 0 keeps an
    exponential moving average of the weights, updated after each optimizer step, which is
    validated and saved as the checkpoints' weights (the trained weights stay in ``last`` for
    ``--resume``).
    """

    recipe: str = "default"
    preset: str = "paper"
    num_epoches: int = 20
    learning_rate: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.01
    batch_size: int = 8
    accum_iter: int = 1
    warmup_epoches: float = 1.0
    grad_clip: float = 1.0
    optimizer: str = "adamw"
    schedule_per: str = "step"
    if_augment: bool = True
    max_shift: int = 3
    if_cons: bool | None = None
    cons_dropout: float = 0.0
    loss: str = "poisson_multinomial"
    multinomial_weight: float = 10.0
    specific_oversample: float = 1.0
    ema_decay: float = 0.0
    best_corr_metric: str = "pearson"
    specific_min: float = SPECIFIC_MIN
    sync_bn: bool = False
    bf16: bool = True
    num_workers: int = 2
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)

    def model_config(self, n_targets: int) -> ModelConfig:
        """The preset with the config's model overrides; ``multiout_dim`` follows the targets."""
        overrides = dict(self.model)
        if overrides.get("multiout_dim", n_targets) != n_targets:
            raise ConfigError(f"multiout_dim {overrides['multiout_dim']} does not match the "
                              f"{n_targets} target(s) being trained")
        overrides["multiout_dim"] = n_targets
        return preset(self.preset, **overrides)


# The original train_signals.py: Adam without weight decay, 100 epochs, 10 warm-up epochs with the
# schedule stepped once per epoch, gradients accumulated over 8 batches and clipped at norm 5, fp32.
# Its learning rate was 0 for the whole first epoch; here the warm-up starts above zero. Its loss was
# the Poisson NLL alone.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "original": {"optimizer": "adam", "weight_decay": 0.0, "learning_rate": 1e-4, "min_lr": 1e-6,
                 "num_epoches": 100, "warmup_epoches": 10, "schedule_per": "epoch", "grad_clip": 5.0,
                 "accum_iter": 8, "batch_size": 8, "bf16": False, "loss": "poisson"},
}
OPTIMIZERS = ("adamw", "adam")
SCHEDULE_UNITS = ("step", "epoch")
CORR_METRICS = ("pearson", "specific")

TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig) if f.name != "model"}
MODEL_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig) if f.name != "extra"}


def setting_type(spec: dataclasses.Field) -> str:
    """The type of a setting: int, float, bool or str (a ``bool | None`` one may also be left unset)."""
    return str(spec.type).removesuffix(" | None")


def load_train_config(path: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
    """Read a YAML or TOML file of flat ``name: value`` pairs (training and model names mixed, as
    in the original), then apply ``overrides`` (None values are ignored)."""
    values: dict[str, Any] = {}
    if path is not None:
        values = read_config_file(path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    where = f"config file {path}" if path else "configuration"
    recipe = values.get("recipe", "default")
    if not isinstance(recipe, str) or recipe not in RECIPES:
        raise ConfigError(f"{where}: unknown recipe {recipe!r} (choose {' or '.join(RECIPES)})")
    values = {**RECIPES[recipe], **values}
    train: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for key, value in values.items():
        if key in TRAIN_FIELDS:
            train[key] = value
        elif key in MODEL_FIELDS:
            model[key] = value
        else:
            raise ConfigError(f"{where}: unknown setting {key!r}")
    cfg = TrainConfig(**train, model=model)
    for name, spec in TRAIN_FIELDS.items():
        value, kind_name = getattr(cfg, name), setting_type(spec)
        if value is None and kind_name != str(spec.type):
            continue
        kind = {"int": int, "float": (int, float), "bool": bool, "str": str}[kind_name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{name} must be {kind_name}, got {value!r}")
    for name, choices in (("optimizer", OPTIMIZERS), ("schedule_per", SCHEDULE_UNITS), ("loss", LOSSES),
                          ("best_corr_metric", CORR_METRICS)):
        if getattr(cfg, name) not in choices:
            raise ConfigError(f"{name} must be {' or '.join(choices)}, got {getattr(cfg, name)!r}")
    for name in ("num_epoches", "batch_size", "accum_iter"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.learning_rate <= 0 or cfg.min_lr < 0 or cfg.min_lr > cfg.learning_rate:
        raise ConfigError("need 0 <= min_lr <= learning_rate and learning_rate > 0")
    if not 0 <= cfg.cons_dropout <= 1:
        raise ConfigError(f"cons_dropout must be in [0, 1], got {cfg.cons_dropout}")
    if cfg.multinomial_weight < 0:
        raise ConfigError(f"multinomial_weight must be at least 0, got {cfg.multinomial_weight}")
    if cfg.specific_oversample < 1:
        raise ConfigError(f"specific_oversample must be at least 1, got {cfg.specific_oversample}")
    if not 0 <= cfg.ema_decay < 1:
        raise ConfigError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
    return cfg


class WeightedDistributedSampler(torch.utils.data.Sampler):
    """Each epoch, ``len(weights)`` windows (rounded down to a multiple of the ranks) drawn with
    replacement in proportion to ``weights``, from a generator seeded by ``seed`` and the epoch, so
    every rank draws the same list and takes its own share of it."""

    def __init__(self, weights: np.ndarray, num_replicas: int, rank: int, seed: int = 0) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.per_rank = len(weights) // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.per_rank * self.num_replicas, replacement=True,
                                  generator=generator)
        return iter(drawn[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.per_rank


def training_sampler(train_ds: ShardDataset, cfg: TrainConfig, ctx: dist_utils.DistributedContext,
                     verbose: bool = True):
    """The training windows' sampler: every window once per epoch, shuffled, or with
    ``specific_oversample`` above 1 the windows with a cell-type-specific peak drawn that many
    times as often (their count printed when ``verbose``)."""
    if cfg.specific_oversample == 1:
        return torch.utils.data.DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank,
                                                   shuffle=True, seed=cfg.seed, drop_last=True)
    specific = np.array([window_is_specific(targets, cfg.specific_min) for targets in train_ds.window_targets()])
    if verbose and ctx.is_main:
        print(f"specific_oversample: {int(specific.sum()):,} of {len(specific):,} training windows hold a "
              f"cell-type-specific peak and are drawn {cfg.specific_oversample:g}x as often", flush=True)
    return WeightedDistributedSampler(np.where(specific, cfg.specific_oversample, 1.0), ctx.world_size, ctx.rank,
                                      cfg.seed)


class IndexSampler(torch.utils.data.Sampler):
    """Every index once, split over ranks without padding (for evaluation)."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up from 1/warmup_steps to 1 (never 0), then cosine decay to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def crop_targets(y: torch.Tensor, crop: int) -> torch.Tensor:
    return y[..., crop: y.shape[-1] - crop] if crop else y


def evaluate_loader(model: nn.Module, loader, crop: int, n_targets: int,
                    ctx: dist_utils.DistributedContext, bf16: bool,
                    specific_min: float = SPECIFIC_MIN) -> dict[str, list[float]]:
    """Metrics of ``model`` (eval mode, inference mode) over a loader, summed over ranks."""
    model.eval()
    metrics = TrackMetrics(n_targets, ctx.device, specific_min)
    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), autocast:
        for x, y in loader:
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            metrics.update(model(x).float(), crop_targets(y, crop))
    return metrics.compute(ctx)


def dataset_if_cons(if_cons: bool | None, has_conservation: bool, dataset: str | os.PathLike) -> bool:
    """``if_cons`` for a dataset: as set, or when unset whether the dataset holds conservation.
    Set true for a dataset without conservation, it is an error rather than training on zeros."""
    if if_cons and not has_conservation:
        raise ConfigError(f"if_cons is true but the dataset {dataset} has no conservation (it was made "
                          "without --seqcons): leave if_cons unset or set it false, or regenerate the "
                          "dataset with --seqcons")
    return has_conservation if if_cons is None else if_cons


def check_split(ds: ShardDataset, split: str, model_cfg: ModelConfig, model_name: str = "the model") -> None:
    """Stop with one message when a split is empty or its windows do not fit the model."""
    if len(ds) == 0:
        raise DatasetError(f"the {split} split of the dataset has no windows")
    if ds.seq_len != model_cfg.seq_len or ds.bin_size != model_cfg.bin_size:
        raise DatasetError(f"the dataset has windows of {ds.seq_len} bp in {ds.bin_size} bp bins, but "
                           f"{model_name} expects seq_len {model_cfg.seq_len} and bin_size {model_cfg.bin_size} "
                           "(choose another model or preset, or regenerate the dataset)")


def plot_learning_curves(history: list[dict], target_names: list[str], path: Path) -> None:
    """Loss (train and validation), validation Pearson R and cell-type-specific R per target
    against epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from epiformer.io.writing import atomic_path

    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax_loss, ax_r, ax_s) = plt.subplots(1, 3, figsize=(15, 4))
    ax_loss.plot(epochs, [h.get("train_poisson", h["train_loss"]) for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["valid_loss"] for h in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="Poisson loss", title="loss")
    ax_objective = ax_loss.twinx()
    ax_objective.plot(epochs, [h["train_loss"] for h in history], "k--", lw=1, label="train objective (right)")
    ax_objective.set_ylabel("training objective")
    lines = ax_loss.get_legend_handles_labels(), ax_objective.get_legend_handles_labels()
    ax_loss.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=8)
    for ax, key, title in ((ax_r, "valid_pearson", "validation correlation, every bin"),
                           (ax_s, "valid_specific", "cell-type-specific correlation, active bins")):
        for i, name in enumerate(target_names):
            ax.plot(epochs, [h.get(key, [math.nan] * len(target_names))[i] for h in history], ".-", lw=1,
                    label=name)
        ax.plot(epochs, [h.get(f"{key}_mean", math.nan) for h in history], "k-", lw=2.5, label="mean")
        ax.set(xlabel="epoch", ylabel="Pearson R, log2(x+1)" + (" centred across targets" if ax is ax_s else ""),
               title=title)
        ax.legend(fontsize=7, ncol=2)
    ax_s.axhline(SPECIFICITY_STARTED, color="grey", ls=":", lw=1)
    if specificity_not_started(history):
        ax_s.set_title("cell-type specificity not learned yet", color="tab:red")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def train(cfg: TrainConfig, dataset: str | os.PathLike, outprefix: str | os.PathLike,
          index: int | None = None, resume: bool = False, device: str = "auto",
          progress: bool = True, split_options: SplitOptions | None = None) -> dict[str, Any]:
    """Train and write ``OUTPREFIX.{last,best_loss,best_corr}.pth.tar``, ``OUTPREFIX.metrics.jsonl``
    and ``OUTPREFIX.learning_curves.png``; return the last epoch's metrics. ``dataset`` is a
    generate-datasets dataset or a folder of the original's files (split by ``split_options``)."""
    from tqdm import tqdm

    ctx = dist_utils.setup(device)
    try:
        has_conservation = dataset_has_conservation(dataset)
        if cfg.if_cons is None and not has_conservation and ctx.is_main:
            print(f"note: the dataset {dataset} has no conservation (made without --seqcons): training "
                  "with if_cons false", flush=True)
        cfg = dataclasses.replace(cfg, if_cons=dataset_if_cons(cfg.if_cons, has_conservation, dataset))
        train_ds = open_split(dataset, "train", split_options, augment=cfg.if_augment, max_shift=cfg.max_shift,
                              use_conservation=cfg.if_cons, target_index=index, cons_dropout=cfg.cons_dropout)
        valid_ds = open_split(dataset, "valid", split_options, use_conservation=cfg.if_cons, target_index=index)
        targets = train_ds.target_names
        model_cfg = cfg.model_config(len(targets))
        check_split(train_ds, "train", model_cfg)
        check_split(valid_ds, "valid", model_cfg)
        if cfg.best_corr_metric == "specific" and len(targets) < 2:
            raise ConfigError("best_corr_metric specific needs two targets or more: one target has no "
                              "cell-type-specific part (use pearson)")
        if cfg.batch_size % ctx.world_size:
            raise ConfigError(f"batch_size {cfg.batch_size} is the global batch and must divide evenly "
                              f"over {ctx.world_size} processes")
        per_rank = cfg.batch_size // ctx.world_size
        outprefix = Path(outprefix)
        paths = {k: Path(f"{outprefix}.{k}.pth.tar") for k in ("last", "best_loss", "best_corr")}

        torch.manual_seed(cfg.seed)
        model: nn.Module = Epiformer(model_cfg, targets).to(ctx.device)
        model.uses_conservation = cfg.if_cons
        if cfg.sync_bn and ctx.enabled:
            model = dist_utils.convert_sync_batchnorm(model, ctx.device)
        optimizer = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[cfg.optimizer](
            model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        sampler = training_sampler(train_ds, cfg, ctx, verbose=progress)
        loader_opts = {"num_workers": cfg.num_workers, "pin_memory": ctx.device.type == "cuda"}
        train_loader = torch.utils.data.DataLoader(train_ds, batch_size=per_rank, sampler=sampler,
                                                   drop_last=True, **loader_opts)
        valid_loader = torch.utils.data.DataLoader(
            valid_ds, batch_size=per_rank, sampler=IndexSampler(len(valid_ds), ctx.rank, ctx.world_size),
            **loader_opts)
        if len(train_loader) == 0:
            raise DatasetError(f"the train split has {len(train_ds)} windows, fewer than one batch of "
                               f"{cfg.batch_size}")
        steps_per_epoch = -(-len(train_loader) // cfg.accum_iter) if cfg.schedule_per == "step" else 1
        total_steps = steps_per_epoch * cfg.num_epoches
        warmup = max(1, round(cfg.warmup_epoches * steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, warmup, total_steps, cfg.min_lr / cfg.learning_rate))

        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay),
            use_buffers=True) if cfg.ema_decay else None
        start_epoch, history = 0, []
        best = {"loss": math.inf, "corr": -math.inf}
        if resume:
            start_epoch, history, best = _resume(paths["last"], model, optimizer, scheduler, targets,
                                                 model_cfg, ctx, ema)
            scores = [h.get(f"valid_{cfg.best_corr_metric}_mean", math.nan) for h in history]
            best["corr"] = max((v for v in scores if not math.isnan(v)), default=-math.inf)
        else:
            torch.manual_seed(cfg.seed * 7919 + ctx.rank)
        if ctx.enabled:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        raw_model = getattr(model, "module", model)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and ctx.device.type == "cuda")
        genome = train_ds.genome
        record: dict[str, Any] = history[-1] if history else {}

        for epoch in range(start_epoch, cfg.num_epoches):
            sampler.set_epoch(epoch)
            model.train()
            train_sum = torch.zeros(3, dtype=torch.float64, device=ctx.device)
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.num_epoches}", unit="batch",
                       disable=not (progress and ctx.is_main), leave=False)
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            for i, (x, y) in enumerate(bar):
                x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
                y = crop_targets(y, model_cfg.crop_size)
                last_micro = (i + 1) % cfg.accum_iter == 0 or i + 1 == len(train_loader)
                sync = model.no_sync() if ctx.enabled and not last_micro else contextlib.nullcontext()
                with sync:
                    with autocast:
                        pred = model(x)
                    loss, poisson = training_loss(pred.float(), y, cfg.loss, cfg.multinomial_weight)
                    (loss / cfg.accum_iter).backward()
                if last_micro:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    if ema is not None:
                        ema.update_parameters(raw_model)
                    if cfg.schedule_per == "step":
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                train_sum += torch.tensor([loss.item(), poisson.item(), 1.0], dtype=torch.float64, device=ctx.device)
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if cfg.schedule_per == "epoch":
                scheduler.step()
            dist_utils.all_reduce_sum(train_sum, ctx)
            validated = model if ema is None else ema.module
            valid = evaluate_loader(validated, valid_loader, model_cfg.crop_size, len(targets), ctx,
                                    cfg.bf16 and ctx.device.type == "cuda", cfg.specific_min)
            record = {
                "epoch": epoch, "train_loss": float(train_sum[0] / train_sum[2].clamp_min(1)),
                "train_poisson": float(train_sum[1] / train_sum[2].clamp_min(1)),
                "valid_loss": float(np.mean(valid["loss"])), "valid_pearson_mean": float(np.mean(valid["pearson"])),
                "valid_pearson": valid["pearson"], "valid_specific_mean": nan_mean(valid["specific"]),
                "valid_specific": valid["specific"], "valid_specific_bins": valid["specific_bins"][0],
                "specific_min": cfg.specific_min, "valid_loss_per_target": valid["loss"],
                "valid_bins": valid["bins"], "valid_nan_bins": valid["nan_bins"],
                "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started,
            }
            history.append(record)
            rng_states = dist_utils.gather_objects(_rng_state(), ctx)
            if ctx.is_main:
                corr = record[f"valid_{cfg.best_corr_metric}_mean"]
                improved = {"loss": record["valid_loss"] < best["loss"],
                            "corr": not math.isnan(corr) and corr > best["corr"]}
                if improved["loss"]:
                    best["loss"] = record["valid_loss"]
                if improved["corr"]:
                    best["corr"] = corr
                state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "rng_states": rng_states, "history": history, "best": best,
                         "train_config": dataclasses.asdict(cfg), "dataset": str(dataset)}
                if ema is not None:
                    state.update(train_state_dict=raw_model.state_dict(), ema_updates=int(ema.n_averaged))
                weights = raw_model if ema is None else ema.module
                metrics = {k: record[k] for k in ("valid_loss", "valid_pearson_mean", "valid_pearson",
                                                  "valid_specific_mean", "valid_specific", "specific_min")}
                save_checkpoint(paths["last"], weights, genome=genome, metrics=metrics, **state)
                for key, name in (("loss", "best_loss"), ("corr", "best_corr")):
                    if improved[key]:
                        save_checkpoint(paths[name], weights, genome=genome, metrics=metrics, **state)
                _write_history(Path(f"{outprefix}.metrics.jsonl"), history)
                plot_learning_curves(history, targets, Path(f"{outprefix}.learning_curves.png"))
                if progress:
                    warning = specificity_not_started(history)
                    print(f"epoch {epoch + 1}/{cfg.num_epoches}: train loss {record['train_loss']:.4f}, "
                          f"valid loss {record['valid_loss']:.4f}, valid R {record['valid_pearson_mean']:.3f}, "
                          f"cell-type-specific R {record['valid_specific_mean']:.3f} "
                          f"({record['seconds']:.0f} s)" + (f"; {warning}" if warning else ""), flush=True)
            dist_utils.barrier(ctx)
        return record
    finally:
        dist_utils.teardown(ctx)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _resume(path: Path, model: nn.Module, optimizer, scheduler, targets: list[str], model_cfg: ModelConfig,
            ctx: dist_utils.DistributedContext, ema=None) -> tuple[int, list, dict]:
    """Restore weights (and their moving average), optimizer, scheduler and every rank's random
    state from ``last``."""
    ckpt = read_checkpoint(path)
    if ckpt.get("target_names") != targets:
        raise DatasetError(f"checkpoint {path} was trained on targets {ckpt.get('target_names')}, "
                           f"the dataset has {targets}")
    if ModelConfig.from_dict(ckpt["param"]) != model_cfg:
        raise ConfigError(f"checkpoint {path} has another model configuration than this run")
    model.load_state_dict(ckpt.get("train_state_dict", ckpt["state_dict"]))
    if ema is not None and "ema_updates" in ckpt:
        ema.module.load_state_dict(ckpt["state_dict"])
        ema.n_averaged.fill_(ckpt["ema_updates"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    states = ckpt["rng_states"]
    if len(states) != ctx.world_size:
        raise ConfigError(f"checkpoint {path} was written by {len(states)} process(es); resume with the "
                          f"same number (this run has {ctx.world_size})")
    torch.set_rng_state(states[ctx.rank]["torch"])
    if "cuda" in states[ctx.rank] and ctx.device.type == "cuda":
        torch.cuda.set_rng_state(states[ctx.rank]["cuda"])
    return ckpt["epoch"] + 1, list(ckpt["history"]), dict(ckpt["best"])


def _write_history(path: Path, history: list[dict]) -> None:
    from epiformer.io.writing import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history))


def evaluate(checkpoint: str | os.PathLike, dataset: str | os.PathLike, split: str = "test",
             out: str | os.PathLike | None = None, settings: InferenceSettings | None = None,
             index: int | None = None, split_options: SplitOptions | None = None,
             specific_min: float = SPECIFIC_MIN) -> list[dict[str, Any]]:
    """Per-target metrics of a checkpoint on one split (default: the test chromosomes) of a
    dataset (as for :func:`train`), run with the inference settings' device, precision, batch
    size and threads (the dataset's windows are encoded already): Pearson R of log2(x+1), the
    cell-type-specific R over bins where some target is at least ``specific_min``
    (:mod:`epiformer.training.metrics`) and the Poisson loss; written as a TSV to ``out`` when given, with
    the settings. Returns one row per target, then their mean."""
    from epiformer.inference.device import select_device
    from epiformer.inference.predictor import pin_threads
    from epiformer.inference.settings import NO_CONSERVATION
    from epiformer.io.writing import atomic_path, settings_lines
    from epiformer.model.checkpoints import load_model

    settings = settings or InferenceSettings()
    model = load_model(checkpoint)
    ds = open_split(dataset, split, split_options, use_conservation=None if model.uses_conservation else False,
                    target_index=index)
    if model.uses_conservation and not ds.has_conservation and settings.conservation != NO_CONSERVATION:
        raise DatasetError(f"checkpoint {checkpoint} was trained with conservation (if_cons true) but the dataset "
                           f"{dataset} has none (made without --seqcons): pass --no-conservation to run it with "
                           "every base at a factor of 1")
    use_conservation = ds.use_conservation
    if ds.target_names != model.target_names:
        hint = "name the original files' targets with --targets targets.txt, and " \
            if ds.parameters.get("format") == "original" and not (split_options and split_options.targets) else ""
        raise DatasetError(f"checkpoint {checkpoint} predicts {model.target_names} but the {split} split "
                           f"has {ds.target_names} ({hint}use --index for a single-target checkpoint)")
    check_split(ds, split, model.config, f"checkpoint {checkpoint}")
    ctx = dist_utils.DistributedContext(device=select_device(settings.device))
    pin_threads(settings, ctx.device)
    model.to(ctx.device)
    loader = torch.utils.data.DataLoader(ds, batch_size=settings.batch_size)
    metrics = evaluate_loader(model, loader, model.config.crop_size, len(ds.target_names), ctx,
                              bf16=settings.precision == "bf16", specific_min=specific_min)
    rows = [{"target": name, "pearson_log2": metrics["pearson"][i], "specific_r": metrics["specific"][i],
             "poisson_loss": metrics["loss"][i], "bins": metrics["bins"][i],
             "specific_bins": metrics["specific_bins"][i], "nan_bins": metrics["nan_bins"][i]}
            for i, name in enumerate(ds.target_names)]
    rows.append({"target": "mean", "pearson_log2": float(np.mean(metrics["pearson"])),
                 "specific_r": nan_mean(metrics["specific"]), "poisson_loss": float(np.mean(metrics["loss"])),
                 "bins": int(sum(metrics["bins"])), "specific_bins": int(metrics["specific_bins"][0]),
                 "nan_bins": int(sum(metrics["nan_bins"]))})
    if out is not None:
        header = "\t".join(rows[0])
        lines = [header] + ["\t".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in r.values())
                            for r in rows]
        record = {"checkpoints": [{"file": Path(checkpoint).name, "sha256": sha256_file(checkpoint)}],
                  "dataset": str(dataset), "split": split, "missing": ds.missing, "precision": settings.precision,
                  "conservation": "dataset" if use_conservation else
                  NO_CONSERVATION if model.uses_conservation else "not used",
                  "device": ctx.device.type, "specific_min": specific_min, "code_version": code_version()}
        with atomic_path(out) as tmp:
            tmp.write_text(settings_lines(record) + "\n".join(lines) + "\n")
    return rows
