"""Where the project, its models and the shared data live.

`../shared` (read-only, beside the project root) holds third-party weights, data and
footage. Set STREAM_PIPELINE_SHARED to point elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from stream_pipeline.core.errors import ModelError, UserError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = PROJECT_ROOT / "models"
CONFIGS_DIR = PROJECT_ROOT / "configs"
# `stream-pipeline fetch-samples` puts the shared models it downloads here, under their shared path
SAMPLES_DIR = PROJECT_ROOT / "samples"
SHARED_ENV = "STREAM_PIPELINE_SHARED"


def shared_dir(required: bool = True) -> Path | None:
    """The shared data folder: $STREAM_PIPELINE_SHARED, else ../shared beside the project."""
    env = os.environ.get(SHARED_ENV)
    candidate = Path(env).expanduser() if env else PROJECT_ROOT.parent / "shared"
    if candidate.is_dir():
        return candidate.resolve()
    if required:
        raise UserError(
            f"shared data folder not found at {candidate} (set {SHARED_ENV} to its location)"
        )
    return None


def shared_path(*parts: str, required: bool = True) -> Path | None:
    base = shared_dir(required=required)
    if base is None:
        return None
    path = base.joinpath(*parts)
    if required and not path.exists():
        raise UserError(f"missing shared file: {path}")
    return path if path.exists() else None


def resolve_model_path(value: str | Path) -> Path:
    """Resolve a model path from config: absolute, `shared:` prefixed, or project-relative.
    A `shared:` path missing from the shared folder is looked for where `fetch-samples`
    downloads it (samples/<path>): users without ../shared fetch what the default config needs."""
    text = str(value)
    if text.startswith("shared:"):
        relative = text[len("shared:"):].lstrip("/")
        base = shared_dir(required=False)
        if base is not None and base.joinpath(relative).exists():
            return base.joinpath(relative)
        if SAMPLES_DIR.joinpath(relative).exists():
            return SAMPLES_DIR.joinpath(relative)
        if base is None:
            env = os.environ.get(SHARED_ENV)
            where = Path(env).expanduser() if env else PROJECT_ROOT.parent / "shared"
            raise ModelError(f"model {text} not found: no shared data folder at {where} (set {SHARED_ENV}, "
                             "or run `stream-pipeline fetch-samples` to download it)")
        raise ModelError(f"model {text} not found in {base} nor in {SAMPLES_DIR} "
                         "(run `stream-pipeline fetch-samples` to download it)")
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    return (PROJECT_ROOT / path).resolve()
