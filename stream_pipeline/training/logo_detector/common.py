"""Paths, sources and small helpers shared by the logo-detector training code."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stream_pipeline.core.errors import UserError
from stream_pipeline.core.paths import MODELS_DIR, PROJECT_ROOT, shared_dir

MODEL_DIR = MODELS_DIR / "logo_detector"
WORK_DIR = PROJECT_ROOT / "work" / "logo_detector"
SPLIT_MANIFEST = MODEL_DIR / "split.json"
METADATA_FILE = MODEL_DIR / "metadata.json"

# Labelled sources inside ../shared (YOLO format, every class collapsed to "logo").
SOURCES = {
    "logo-boxes": "data/logo-boxes",
    "logo-boxes-flickr": "data/logo-boxes-flickr",
    # Windows (~8 badge widths, 128-288 px) cut around the badges of 2,764 further street
    # photos; sources.csv names each window's photo (windows of one photo share a split).
    "street-badges": "data/street-badges",
}
# Sets whose images are windows around a badge, not whole photos: no vehicle detection
# and no whole-photo evaluation on them; the window is the "vehicle crop".
WINDOW_SOURCES = ("street-badges",)
CLASS_NAMES = ["logo"]


def setup_offline_ultralytics(threads: int | None = None) -> None:
    """Keep ultralytics off the network and its settings inside the work dir.

    Must run before `import ultralytics`.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    cfg = WORK_DIR / "ultralytics_config"
    cfg.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cfg))
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MKL_NUM_THREADS"] = str(threads)
        os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:  # pragma: no cover
            pass


@dataclass(frozen=True)
class Box:
    """A labelled badge in pixels (x1, y1, x2, y2) and its source brand."""

    x1: float
    y1: float
    x2: float
    y2: float
    brand: str

    @property
    def w(self) -> float:
        return self.x2 - self.x1

    @property
    def h(self) -> float:
        return self.y2 - self.y1

    def xyxy(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]


@dataclass(frozen=True)
class Sample:
    key: str  # "<source>/<file name>", stable id used by the split manifest
    image: Path
    width: int
    height: int
    boxes: tuple[Box, ...]
    origin: str = ""  # the photo a window was cut from ("" for whole photos: the key is the photo)

    @property
    def is_window(self) -> bool:
        return self.key.split("/", 1)[0] in WINDOW_SOURCES

    @property
    def brand(self) -> str:
        return self.boxes[0].brand if self.boxes else "none"


def shared_source_dir(source: str) -> Path:
    path = shared_dir() / SOURCES[source]
    if not path.is_dir():
        raise UserError(f"missing shared data set: {path}")
    return path


def read_labels(label_file: Path, width: int, height: int, names: list[str]) -> tuple[Box, ...]:
    boxes = []
    if not label_file.exists():
        return ()
    for line in label_file.read_text().splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        cls = int(float(parts[0]))
        cx, cy, bw, bh = (float(v) for v in parts[1:5])
        x1 = max(0.0, (cx - bw / 2) * width)
        y1 = max(0.0, (cy - bh / 2) * height)
        x2 = min(float(width), (cx + bw / 2) * width)
        y2 = min(float(height), (cy + bh / 2) * height)
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        brand = names[cls] if 0 <= cls < len(names) else str(cls)
        boxes.append(Box(x1, y1, x2, y2, brand.lower()))
    return tuple(boxes)


def load_samples(sources: list[str] | None = None) -> list[Sample]:
    """Every labelled image of the shared sets, sorted by key."""
    from PIL import Image

    samples = []
    for source in sources or list(SOURCES):
        root = shared_source_dir(source)
        names_file = root / "classes.txt"
        names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()] if names_file.exists() else []
        origins = _window_origins(root)
        for image in sorted((root / "images").iterdir()):
            if image.suffix.lower() not in {".jpg", ".jpeg", ".png", ".bmp"}:
                continue
            with Image.open(image) as im:
                width, height = im.size
            boxes = read_labels(root / "labels" / (image.stem + ".txt"), width, height, names)
            samples.append(Sample(f"{source}/{image.name}", image, width, height, boxes, origins.get(image.name, "")))
    return samples


def _window_origins(root: Path) -> dict[str, str]:
    """window file -> "repository:commit:path" of its photo, from a set's sources.csv (if any)."""
    import csv

    table = root / "sources.csv"
    if not table.is_file():
        return {}
    with table.open(newline="") as f:
        return {row["window"]: f"{row['repository']}:{row['commit:path']}" for row in csv.DictReader(f)}

