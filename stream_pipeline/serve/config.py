"""CAMERAS.yaml: the cameras of `stream-pipeline serve`, validated like the run config.

Each camera's run configuration is the base config (`--config`, default configs/default.yaml),
then the file's `defaults:`, then the camera's own `overrides:` and `zones:`. It is validated
as a whole (unknown keys rejected, the key named). One detector and one brand model set are
shared by all cameras, so the settings that choose or feed those models must agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stream_pipeline.core.config import PipelineConfig, _describe, load_config, read_yaml
from stream_pipeline.core.errors import ConfigError
from stream_pipeline.zones.config import Zones

# Brand settings that pick or tune the shared models; the others (scheduling, voting) may differ.
SHARED_BRAND_KEYS = ("logo_detector", "classifier", "gallery", "logo_confidence", "classifier_threshold", "gallery_threshold")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryConfig(_Section):
    """A camera that cannot be opened, or is lost after its own reconnects, is retried after
    `initial_s`, doubling up to `max_s`; `max_attempts` in a row (null = forever) before it is given up."""

    initial_s: float = Field(2.0, gt=0, le=3600)
    max_s: float = Field(60.0, gt=0, le=86400)
    max_attempts: int | None = Field(None, ge=1, le=1_000_000)


class CameraConfig(_Section):
    # Folder name of its outputs and its name in the status table and events.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # rtsp:// URL, webcam (0, /dev/video0) or video file.
    source: str = Field(min_length=1)
    zones: Zones | None = None
    # Sections of the run config for this camera only (source, tracker, brands voting, output, mqtt...).
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _not_an_output_name(cls, name: str) -> str:
        from stream_pipeline.report import ASSETS, INDEX_FILE

        if name.lower() in (INDEX_FILE, ASSETS):  # serve's --out holds these beside the camera folders
            raise ValueError(f"'{name}' is the name of serve's own output; choose another")
        return name


class ServeConfig(_Section):
    # Sections of the run config applied to every camera.
    defaults: dict[str, Any] = Field(default_factory=dict)
    # Seconds between two `status` events (and status log lines) per camera.
    status_interval_s: float = Field(5.0, gt=0, le=3600)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    cameras: list[CameraConfig] = Field(min_length=1, max_length=256)

    @field_validator("cameras")
    @classmethod
    def _unique_names(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        names = [c.name for c in cameras]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate camera names: {', '.join(duplicates)}")
        return cameras


def _describe_at(error: ValidationError, prefix: str) -> str:
    """As the run config names a key, with the key's place in the cameras file before it."""
    errors = error.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = ".".join([prefix, *(str(part) for part in first["loc"])])
    if first["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    return f"'{key}': {first['msg']}"


def _merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, section by section (mappings merged, anything else replaced)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict:
    data = read_yaml(path, "cameras file")
    if not isinstance(data, dict):
        raise ConfigError(f"cameras file {path} must be a mapping with a 'cameras' list")
    return data


def load_cameras(path: str | Path, base_config: str | Path | None = None) -> tuple[ServeConfig, dict[str, PipelineConfig]]:
    """The validated cameras file and each camera's full run configuration, by camera name."""
    path = Path(path)
    try:
        serve = ServeConfig.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise ConfigError(f"invalid cameras file {path}: {_describe(exc)}") from None
    base = load_config(base_config).model_dump(mode="json")
    try:
        defaults = PipelineConfig.model_validate(_merge(base, serve.defaults)).model_dump(mode="json")
    except ValidationError as exc:
        raise ConfigError(f"invalid cameras file {path}: {_describe_at(exc, 'defaults')}") from None
    configs: dict[str, PipelineConfig] = {}
    for i, camera in enumerate(serve.cameras):
        where = f"cameras[{i}] ({camera.name})"
        data = _merge(defaults, camera.overrides)
        if camera.zones is not None:
            data["zones"] = [zone.model_dump(mode="json", exclude_none=True) for zone in camera.zones]
        try:
            config = PipelineConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid cameras file {path}: {where}: {_describe_at(exc, 'overrides')}") from None
        configs[camera.name] = config
    _check_shared_models(path, serve, configs)
    return serve, configs


def _check_shared_models(path: Path, serve: ServeConfig, configs: dict[str, PipelineConfig]) -> None:
    first = serve.cameras[0].name
    detector = configs[first].detector
    brands = [c.brands for c in configs.values() if c.brands.enabled]
    for i, camera in enumerate(serve.cameras):
        config = configs[camera.name]
        where = f"cameras[{i}] ({camera.name})"
        # Named where it is written: comparing with the first camera would blame the other one.
        shared = [f"brands.{k}" for k in SHARED_BRAND_KEYS if k in (camera.overrides.get("brands") or {})]
        if "detector" in camera.overrides or shared:
            key = "detector" if "detector" in camera.overrides else shared[0]
            raise ConfigError(
                f"invalid cameras file {path}: {where}: 'overrides.{key}' is shared by all cameras (one model set): "
                "set it under 'defaults'"
            )
        if config.detector != detector:
            raise ConfigError(
                f"invalid cameras file {path}: {where}: 'overrides.detector' differs from camera {first}; "
                "one vehicle detector is shared by all cameras: set it under 'defaults'"
            )
        if config.brands.enabled and brands:
            for key in SHARED_BRAND_KEYS:
                if getattr(config.brands, key) != getattr(brands[0], key):
                    raise ConfigError(
                        f"invalid cameras file {path}: {where}: 'overrides.brands.{key}' differs from the other "
                        "cameras; the brand models are shared: set it under 'defaults'"
                    )
