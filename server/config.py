"""Server configuration: defaults, then a config file, then ``EPIFORMER_*`` environment variables.

Every field can be set in the environment as ``EPIFORMER_<FIELD>`` (upper case), e.g.
``EPIFORMER_PRECOMPUTE_DIR=/data/hg38_tracks``; ``EPIFORMER_CONFIG`` names a TOML, YAML or JSON
file with the same fields in lower case. Lists (``models``) are comma-separated in the
environment.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class ServerConfigError(ValueError):
    """A setting that cannot be used, naming the setting and where it came from."""


@dataclass
class ServerConfig:
    """What the server serves and how it predicts."""

    precompute_dir: str = ""             # the -o folder of epiformer precompute (manifest.json)
    hub_dir: str = ""                    # default: PRECOMPUTE_DIR/hub, built on start when missing
    models: list[str] = field(default_factory=list)   # -m specs; none: files and tracks only
    fasta: str = ""                      # default: the manifest's genome FASTA
    conservation: str = ""               # default: the manifest's conservation bigWig
    targets: str = ""                    # targets.txt naming original checkpoints' outputs
    device: str = "auto"
    public_url: str = ""                 # the URL users reach the server at, for hub links
    max_batch: int = 16                  # windows per forward pass gathered from concurrent requests
    max_delay_ms: float = 10.0           # longest wait for more requests before running a batch
    cache_windows: int = 512             # reference-window predictions kept (LRU)
    request_timeout_s: float = 60.0
    max_variants: int = 100              # per /api/variants request
    max_body_bytes: int = 1_000_000
    max_concurrent_predictions: int = 32  # per worker; more get 429 with Retry-After
    max_predictions_per_client: int = 8   # per worker and client address, so one client cannot take all
    proxy_hops: int = 0                  # proxies in front that set X-Forwarded-For/-Proto (client address)
    api_token: str = ""                  # when set, prediction endpoints need "Authorization: Bearer TOKEN"
    log_requests: bool = True
    bind: str = "127.0.0.1:8000"         # gunicorn's listening address
    workers: int = 0                     # 0: one per GPU, or 2 without GPUs
    threads: int = 8                     # threads per worker: concurrent requests the batcher can gather

    def replace(self, **changes: Any) -> "ServerConfig":
        return dataclasses.replace(self, **changes)


def _coerce(name: str, kind: Any, value: Any, source: str) -> Any:
    if isinstance(value, str) and kind not in ("str", str):
        text = value.strip()
        try:
            if kind in ("int", int):
                return int(text)
            if kind in ("float", float):
                return float(text)
            if kind in ("bool", bool):
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(text)
            if "list" in str(kind):
                return [item.strip() for item in text.split(",") if item.strip()]
        except ValueError:
            raise ServerConfigError(f"{source}: {name} must be {kind}, got {value!r}") from None
    if "list" in str(kind) and isinstance(value, str):
        return [value]
    return value


def _read_file(path: Path) -> dict:
    if not path.is_file():
        raise ServerConfigError(f"config file {path}: no such file")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text) or {}
        return json.loads(text)
    except Exception as err:  # noqa: BLE001 - any parser's error becomes one message naming the file
        raise ServerConfigError(f"config file {path} cannot be read: {err}") from None


def load_config(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Defaults, then ``EPIFORMER_CONFIG``'s file, then ``EPIFORMER_*`` variables, then ``overrides``."""
    environ = os.environ if environ is None else environ
    fields = {f.name: f.type for f in dataclasses.fields(ServerConfig)}
    values: dict[str, Any] = {}
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if environ.get("EPIFORMER_CONFIG"):
        layers.append((environ["EPIFORMER_CONFIG"], _read_file(Path(environ["EPIFORMER_CONFIG"]))))
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
    return ServerConfig(**values)
