"""Server configuration: defaults, then a config file, then ``EPIFORMER_*`` environment variables.

Every setting can be set in the environment as ``EPIFORMER_<NAME>`` (upper case), e.g.
``EPIFORMER_PRECOMPUTE_DIR=/data/hg38_tracks``; ``EPIFORMER_CONFIG`` names a TOML, YAML or JSON
file with the same names in lower case. Lists (``models``, ``shifts``) are comma-separated in the
environment; a checkpoint path holding a comma goes in a config file. ``epiformer serve`` hands
its settings to gunicorn as a :class:`ServerConfig`, not through the environment.

The names are flat: those of :data:`SETTINGS_FIELDS` set a field of the config's
:class:`~epiformer.inference.settings.InferenceSettings` or :class:`~epiformer.inference.settings.ScoringSettings`
(whose defaults they keep), every other one a field of :class:`ServerConfig`.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

from epiformer.errors import UserError
from epiformer.inference.settings import InferenceSettings, ModelSetOptions, ScoringSettings
from epiformer.model.config import ConfigError, parse_bool, read_config_file


class ServerConfigError(UserError, ValueError):
    """A setting that cannot be used, naming the setting and where it came from."""


class SettingsField(NamedTuple):
    """Where a flat setting lives: a field of the config's ``inference`` or ``scoring`` object;
    ``zero_unset`` reads 0 as None (not set)."""

    section: str
    name: str
    zero_unset: bool = False


SETTINGS_FIELDS: dict[str, SettingsField] = {
    "conservation": SettingsField("inference", "conservation"),   # default: the precompute's track; "none": run without
    "device": SettingsField("inference", "device"),
    "precision": SettingsField("inference", "precision"),
    "reverse_complement": SettingsField("inference", "reverse_complement"),
    "shifts": SettingsField("inference", "shifts"),
    "compile": SettingsField("inference", "compile"),
    # torch CPU threads per worker (0 or unset: cores / workers), apart from gunicorn's threads
    "torch_threads": SettingsField("inference", "threads", zero_unset=True),
    "max_batch": SettingsField("inference", "batch_size"),   # windows per forward pass, gathered across requests
    "score_bp": SettingsField("scoring", "score_bp"),         # /api/variants' and /api/ism's default
    "share_bins": SettingsField("scoring", "share_bins"),
    "max_indel": SettingsField("scoring", "max_indel"),
    "on_mismatch": SettingsField("scoring", "on_mismatch"),   # /api/variants' default
}
SECTIONS = {"inference": InferenceSettings, "scoring": ScoringSettings}
SERVER_BATCH_SIZE = 16   # the server gathers windows from concurrent requests: larger batches than a command's


@dataclass
class ServerConfig:
    """What the server serves and how it predicts."""

    precompute_dir: str = ""             # the -o folder of epiformer precompute (manifest.json)
    hub_dir: str = ""                    # default: PRECOMPUTE_DIR/hub, built on start when missing
    annotation: str = ""                 # a GTF or BED of genes, added to the hub and the page
    models: list[str] = field(default_factory=list)   # -m specs; none: files and tracks only
    targets: str = ""                    # targets.txt naming original checkpoints' outputs
    index: int | None = None             # row of targets.txt a single-output original checkpoint predicts
    average: bool = False                # average checkpoints that predict the same target
    fasta: str = ""                      # default: the manifest's genome FASTA
    # every command's settings and their defaults (flat names: SETTINGS_FIELDS)
    inference: InferenceSettings = field(default_factory=lambda: InferenceSettings(batch_size=SERVER_BATCH_SIZE))
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    public_url: str = ""                 # the URL users reach the server at, for hub links
    allowed_hosts: list[str] = field(default_factory=list)  # Host names that may choose links without public_url (default: bind address, localhost)
    max_delay_ms: float = 10.0           # longest wait for more requests before running a batch
    cache_windows: int = 512             # reference-window predictions kept (LRU)
    request_timeout_s: float = 60.0
    max_variants: int = 100              # per /api/variants request
    max_edits: int = 1_000               # per /api/predict request
    max_windows_per_request: int = 256   # model windows one variant request may run (distinct windows x shifts)
    max_body_bytes: int = 1_000_000
    client_timeout_s: float = 10.0       # time a client has to send a whole request (else 408), or to take any of an answer
    max_connections_per_client: int = 64  # per worker and client address without proxies (0: no limit), as nginx's limit_conn
    max_concurrent_predictions: int = 0  # per worker, below threads; more get 429 with Retry-After (0: threads - 2)
    max_predictions_per_client: int = 0  # per worker and client address (0: half the above); all taken: by 4 addresses at least
    proxy_hops: int = 0                  # proxies in front that set X-Forwarded-For/-Proto (client address)
    api_token: str = ""                  # when set, prediction endpoints need "Authorization: Bearer TOKEN"
    log_requests: bool = True
    bind: str = "127.0.0.1:8000"         # gunicorn's listening address
    workers: int = 0                     # 0: one per GPU, or 2 without GPUs
    threads: int = 8                     # threads per worker: concurrent requests the batcher can gather

    def replace(self, **changes: Any) -> "ServerConfig":
        return dataclasses.replace(self, **changes)

    def prediction_limits(self) -> tuple[int, int]:
        """Prediction requests one worker runs at once, in all and for one client address. Both
        stay below ``threads`` so /healthz and the hub's files always find a thread, and a client
        gets 429 before it holds every thread."""
        if self.threads < 2:
            raise ServerConfigError(f"threads must be 2 or more (got {self.threads}): one thread stays free for "
                                    "health checks and the hub's files")
        total = self.max_concurrent_predictions or max(1, self.threads - 2)
        per_client = self.max_predictions_per_client or max(1, total // 2)
        if not 0 < total < self.threads:
            raise ServerConfigError(f"max_concurrent_predictions must be from 1 to threads - 1 = {self.threads - 1} "
                                    f"(got {total}), so a thread stays free for health checks and files")
        if not 0 < per_client <= total:
            raise ServerConfigError(f"max_predictions_per_client must be from 1 to max_concurrent_predictions = "
                                    f"{total} (got {per_client})")
        return total, per_client

    def model_set(self) -> ModelSetOptions:
        """The model set to load (``models`` with ``targets``, ``index`` and ``average``)."""
        return ModelSetOptions(tuple(self.models), self.targets or None, self.index, self.average)

    def inference_for(self, manifest: dict) -> InferenceSettings:
        """The inference settings; conservation defaults to the precompute's own, so the API and
        the tracks are made alike."""
        conservation = self.inference.conservation or manifest["genome"].get("conservation")
        return dataclasses.replace(self.inference, conservation=None if conservation == "not used" else conservation)


def body_limit_message(limit: int) -> str:
    """What a client whose request body is over ``max_body_bytes`` is told."""
    return f"the request body is over this server's limit of {limit:,} bytes (max_body_bytes)"


def _coerce(name: str, kind: Any, value: Any, source: str) -> Any:
    kind = str(kind)
    base = kind.split(" |")[0]
    try:
        if isinstance(value, str) and base != "str":
            text = value.strip()
            if base == "int":
                return None if "None" in kind and not text else int(text)
            if base == "float":
                return float(text)
            if base == "bool":
                return parse_bool(text) if text else False
            if base.startswith(("list", "tuple")):
                value = [item.strip() for item in text.split(",") if item.strip()]
        if base in ("list[int]", "tuple[int, ...]"):
            return [int(item) for item in value]
    except (TypeError, ValueError):
        raise ServerConfigError(f"{source}: {name} must be {kind}, got {value!r}") from None
    return value


def setting_types() -> dict[str, Any]:
    """Every flat setting name and its field's type (a :data:`SETTINGS_FIELDS` name its object's field's)."""
    types = {f.name: f.type for f in dataclasses.fields(ServerConfig) if f.name not in SECTIONS}
    of_sections = {section: {f.name: f.type for f in dataclasses.fields(kind)} for section, kind in SECTIONS.items()}
    return {**types, **{name: of_sections[where.section][where.name] for name, where in SETTINGS_FIELDS.items()}}


def load_config(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Defaults, then ``EPIFORMER_CONFIG``'s file, then ``EPIFORMER_*`` variables, then ``overrides``."""
    environ = os.environ if environ is None else environ
    fields = setting_types()
    values: dict[str, Any] = {}
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if environ.get("EPIFORMER_CONFIG"):
        try:
            layers.append((environ["EPIFORMER_CONFIG"], read_config_file(environ["EPIFORMER_CONFIG"])))
        except ConfigError as err:
            raise ServerConfigError(str(err)) from None
    layers.append(("environment", {k[len("EPIFORMER_"):].lower(): v for k, v in environ.items()
                                   if k.startswith("EPIFORMER_") and k != "EPIFORMER_CONFIG"}))
    layers.append(("arguments", overrides or {}))
    for source, layer in layers:
        for name, value in layer.items():
            label = f"EPIFORMER_{name.upper()}" if source == "environment" else name
            if name not in fields:
                raise ServerConfigError(f"{source}: unknown setting {label} (known: {', '.join(fields)})")
            if value is not None:
                values[name] = _coerce(label, fields[name], value, source)
    defaults = ServerConfig()
    changes: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for name, where in SETTINGS_FIELDS.items():
        if name in values:
            value = values.pop(name)
            changes[where.section][where.name] = None if where.zero_unset and value == 0 else value
    try:
        sections = {section: dataclasses.replace(getattr(defaults, section), **changed)
                    for section, changed in changes.items()}
    except UserError as err:
        raise ServerConfigError(str(err)) from None
    return ServerConfig(**values, **sections)
