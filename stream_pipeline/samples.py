"""Sample clips (copied from ../shared when present, else downloaded) and, without ../shared,
the third-party model files the default config reads from there; every file sha256-checked."""

from __future__ import annotations

import errno
import hashlib
import logging
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from stream_pipeline.core.errors import OutputError, UserError
from stream_pipeline.core.paths import PROJECT_ROOT, SAMPLES_DIR, shared_dir

log = logging.getLogger(__name__)

MANIFEST = PROJECT_ROOT / "samples" / "manifest.yaml"
DEFAULT_DEST = PROJECT_ROOT / "samples" / "videos"


@dataclass(frozen=True)
class Sample:
    name: str
    file: str
    shared: str
    url: str
    sha256: str


@dataclass(frozen=True)
class SharedModel:
    """A model folder of ../shared (`shared`: its path there) and its files' public URLs."""

    name: str
    shared: str
    files: tuple[Sample, ...]


def load_manifest(path: Path = MANIFEST) -> list[Sample]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [Sample(s["name"], s["file"], s["shared"], s["url"], s["sha256"]) for s in data["samples"]]


def load_models(path: Path = MANIFEST) -> list[SharedModel]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [SharedModel(m["name"], m["shared"],
                        tuple(Sample(f"{m['name']}/{f['file']}", f["file"], f"{m['shared']}/{f['file']}", f["url"],
                                     f["sha256"]) for f in m["files"]))
            for m in data.get("models", [])]


def fetch_model(model: SharedModel) -> Path:
    """The model's folder: ../shared's when it holds every file, else samples/<shared path>,
    downloaded there (where `resolve_model_path` finds `shared:` paths missing from ../shared)."""
    base = shared_dir(required=False)
    if base is not None and all((base / f.shared).is_file() for f in model.files):
        return base / model.shared
    target = SAMPLES_DIR / model.shared
    for f in model.files:
        fetch_sample(f, target)
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_sample(sample: Sample, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / sample.file
    if target.exists() and sha256_of(target) == sample.sha256:
        return target
    partial = target.with_suffix(target.suffix + ".part")
    base = shared_dir(required=False)
    local = base / sample.shared if base is not None else None
    if local is not None and local.is_file():
        shutil.copyfile(local, partial)
        origin = str(local)
    else:
        log.info("downloading %s", sample.url)
        try:
            with urllib.request.urlopen(sample.url, timeout=60) as response, partial.open("wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            partial.unlink(missing_ok=True)
            raise UserError(f"cannot download sample {sample.name} from {sample.url}: {exc}") from None
        origin = sample.url
    actual = sha256_of(partial)
    if actual != sample.sha256:
        partial.unlink(missing_ok=True)
        raise UserError(f"sample {sample.name} from {origin} has sha256 {actual}, expected {sample.sha256}")
    partial.replace(target)
    return target


def fetch_samples(dest: str | Path | None = None, names: list[str] | None = None) -> list[Path]:
    samples, models = load_manifest(), load_models()
    if names:
        known = [s.name for s in samples] + [m.name for m in models]
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise UserError(f"unknown sample '{unknown[0]}' (known: {', '.join(known)})")
        samples = [s for s in samples if s.name in names]
        models = [m for m in models if m.name in names]
    dest_dir = Path(dest) if dest else DEFAULT_DEST
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "a file is in the way (not a folder)" if dest_dir.exists() or exc.errno == errno.ENOTDIR else exc.strerror or exc
        raise OutputError(f"cannot write samples to {dest_dir}: {reason}") from None
    paths = [fetch_sample(sample, dest_dir) for sample in samples] + [fetch_model(m) for m in models]
    for path in paths:
        print(path)
    return paths
