"""Model configuration: one dataclass, named presets, and the original's hyperparameter names."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from epiformer.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration (model, training or a config file) that cannot be used."""


@dataclass
class ModelConfig:
    """Hyperparameters of the Epiformer network.

    Field names are the original training script's, so an original checkpoint's ``param``
    dictionary maps onto this class directly (see :meth:`from_dict`).
    """

    seq_len: int = 98_304
    bin_size: int = 128
    num_cnn_layer: int = 6
    embed_size: int = 768
    num_heads: int = 4
    att_dropout: float = 0.4
    dim_feedforward: int = 2048
    enc_dropout: float = 0.4
    num_encoder_layers: int = 8
    crop_size: int = 64
    ptw_dropout: float = 0.1
    multiout_dim: int = 1
    max_len: int = 768
    add_positional_encoding: bool = True
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def n_bins(self) -> int:
        """Bins leaving the convolutional tower (before cropping)."""
        return self.seq_len // self.bin_size

    @property
    def n_output_bins(self) -> int:
        """Bins in the model output, after cropping ``crop_size`` from each side."""
        return self.n_bins - 2 * self.crop_size

    @property
    def head_dim(self) -> int:
        return self.embed_size // self.num_heads

    @property
    def tower_channels(self) -> list[int]:
        """Channel counts from the stem through each tower block (num_cnn_layer + 1 values)."""
        half = self.embed_size // 2
        base = (self.embed_size / half) ** (1.0 / self.num_cnn_layer)
        return [int(round(half * base**i)) for i in range(self.num_cnn_layer + 1)]

    @property
    def tower_radius(self) -> int:
        """How far (bp) a base reaches into the tower's output: the stem convolution (15), then per
        block a width-5 convolution at its stride, and each max-pool's extra position."""
        return 7 + sum(2 * 2 ** i for i in range(1, self.num_cnn_layer + 1)) + (self.bin_size - 1)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field that makes the network impossible."""
        positive = ["seq_len", "bin_size", "num_cnn_layer", "embed_size", "num_heads",
                    "dim_feedforward", "num_encoder_layers", "multiout_dim", "max_len"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ["att_dropout", "enc_dropout", "ptw_dropout"]:
            value = getattr(self, name)
            if not 0.0 <= float(value) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        if self.bin_size != 2 ** (self.num_cnn_layer + 1):
            raise ConfigError(
                f"bin_size {self.bin_size} does not match num_cnn_layer {self.num_cnn_layer}: "
                f"the stem and {self.num_cnn_layer} tower blocks each halve the length, "
                f"so bin_size must be {2 ** (self.num_cnn_layer + 1)}")
        if self.seq_len % self.bin_size:
            raise ConfigError(f"seq_len {self.seq_len} is not a multiple of bin_size {self.bin_size}")
        if self.embed_size % 2 or self.embed_size % self.num_heads:
            raise ConfigError(f"embed_size {self.embed_size} must be even and divisible by "
                              f"num_heads {self.num_heads}")
        if self.n_bins > self.embed_size:
            raise ConfigError(
                f"seq_len/bin_size = {self.n_bins} bins exceeds embed_size {self.embed_size}: the "
                f"relative-position table has 2*embed_size-1 rows, so bins may not exceed embed_size")
        if self.add_positional_encoding and self.n_bins > self.max_len:
            raise ConfigError(f"{self.n_bins} bins exceed max_len {self.max_len} of the positional encoding")
        if self.crop_size < 0 or self.n_output_bins <= 0:
            raise ConfigError(f"crop_size {self.crop_size} leaves no output bins out of {self.n_bins}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary with the original's hyperparameter names (plus any extra keys kept)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> "ModelConfig":
        """Build from a dictionary such as an original checkpoint's ``param``.

        Keys that are not model hyperparameters (``learning_rate``, ``batch_first``, ...) are
        kept in ``extra`` so they survive a round trip.
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in params.items() if k in names}
        extra = {k: v for k, v in params.items() if k not in names and k != "extra"}
        return cls(**known, extra=extra)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    # The published configuration: 98,304 bp in, 640 bins of 128 bp out, 54,819,693 parameters
    # with one output.
    "paper": ModelConfig(),
    # For the demo and tests: 8,192 bp in, 48 bins of 128 bp out, eight cell types; trains on a
    # 2-core CPU in minutes.
    "tiny": ModelConfig(seq_len=8192, embed_size=64, num_heads=4, dim_feedforward=128,
                        num_encoder_layers=2, crop_size=8, max_len=64, multiout_dim=8),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset (``paper`` or ``tiny``), with optional field overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides)


def check_window_flags(config: ModelConfig, seq_len: int | None = None, bin_size: int | None = None) -> None:
    """Raise :class:`ConfigError` when ``--seqlen``/``--binsize`` given on a command line disagree
    with the model (the original's flags are checked, not obeyed: the model fixes its windows)."""
    for flag, given, actual in (("--seqlen", seq_len, config.seq_len), ("--binsize", bin_size, config.bin_size)):
        if given is not None and given != actual:
            raise ConfigError(f"{flag} {given} does not match the model, which takes {actual}")


def parse_bool(text: str) -> bool:
    """A yes-or-no setting written as text: ``1``, ``true``, ``yes`` or ``on`` is True, ``0``,
    ``false``, ``no`` or ``off`` False, in any case; anything else is a ValueError."""
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def read_config_file(path: str | os.PathLike) -> dict:
    """The ``name: value`` pairs of a YAML, TOML or JSON file (by its suffix; YAML otherwise), or
    :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: no such file")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            values = tomllib.loads(text)
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
    except Exception as err:  # noqa: BLE001 - each parser raises its own error types
        raise ConfigError(f"config file {path} cannot be parsed: {str(err).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold 'name: value' pairs")
    return values
