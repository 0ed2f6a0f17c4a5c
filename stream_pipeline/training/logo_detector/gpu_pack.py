"""Pack a logo-detector training run for a GPU machine that has PyTorch but not this project.

`python -m stream_pipeline.training.logo_detector.gpu_pack DATASET OUT_DIR [--quality Q]`
writes OUT_DIR/data.tar.gz (the dataset's training images as WebP, long side at most the
training size, so the trainer loses nothing but compression; a val subset for ultralytics'
final check), the starting checkpoints, gpu_train.py, and a stand-in `polars` (ultralytics
only reads its results.csv back with it, inside a try). The folder then travels on its own,
e.g. under a 64 MiB transfer limit; there: `python3 gpu_train.py ...` (see that file).
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import tarfile
from pathlib import Path

import cv2

from stream_pipeline.core.paths import MODELS_DIR, shared_dir

POLARS_STUB = '''"""Stand-in: ultralytics reads results.csv back with polars only inside a try."""
def read_csv(*args, **kwargs):
    raise RuntimeError("polars stand-in")
def DataFrame(*args, **kwargs):
    raise RuntimeError("polars stand-in")
'''


def pack(dataset: Path, out: Path, quality: int = 70, imgsz: int = 416, val_images: int = 150) -> int:
    """Write the bundle; returns its size in bytes."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    with tarfile.open(out / "data.tar.gz", "w:gz", compresslevel=6) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for split in ("train", "val"):
            images = sorted((dataset / "images" / split).glob("*.jpg"))
            if split == "val":
                images = rng.sample(images, min(val_images, len(images)))
            for path in images:
                image = cv2.imread(str(path))
                if image is None:
                    raise RuntimeError(f"unreadable image in the dataset: {path}")
                h, w = image.shape[:2]
                scale = min(1.0, imgsz / max(h, w))
                if scale < 1:
                    image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                       interpolation=cv2.INTER_AREA)
                ok, webp = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, quality])
                if not ok:
                    raise RuntimeError(f"could not encode {path}")
                add(f"ds/images/{split}/{path.stem}.webp", webp.tobytes())
                label = dataset / "labels" / split / f"{path.stem}.txt"
                add(f"ds/labels/{split}/{path.stem}.txt", label.read_bytes() if label.exists() else b"")
    shutil.copy(MODELS_DIR / "logo_detector" / "best.pt", out / "shipped.pt")
    coco = shared_dir() / "models" / "yolo11n.pt"
    if coco.exists():
        shutil.copy(coco, out / "yolo11n.pt")
    else:  # offline there: a run from COCO would fail after the transfer
        print(f"warning: {coco} not found; the bundle can only continue shipped.pt")
    (out / "stub" / "polars").mkdir(parents=True, exist_ok=True)
    (out / "stub" / "polars" / "__init__.py").write_text(POLARS_STUB)
    shutil.copy(Path(__file__).with_name("gpu_train.py"), out / "gpu_train.py")
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a train-logo-detector dataset (work/logo_detector/dataset_<run>)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--quality", type=int, default=70, help="WebP quality (70: 5,486 crops in 52 MB)")
    args = parser.parse_args(argv)
    size = pack(args.dataset, args.out, args.quality)
    print(f"{args.out}: {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
