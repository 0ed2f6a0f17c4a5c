"""Rebuild the vehicle detector's int8 OpenVINO export at another input shape.

The shared int8 export is fixed at 640x640: a 16:9 frame letterboxed into it is ~44 %
grey bars. This exports the float `yolo11n.pt` (the same network) at e.g. 384x640 and
quantises it with NNCF, calibrated on frames of the shared clips, extracted locally
(nothing is downloaded). Needs the `export` extra (nncf) and torch; the runtime only
needs the resulting folder, which is committed under models/.

    python -m stream_pipeline.detection.export --imgsz 384 640 --out models/vehicle_detector_384x640
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import cv2
import yaml

from stream_pipeline.core.paths import MODELS_DIR, shared_path

CALIBRATION_FRAMES = 320


def calibration_set(videos: Path, out: Path, frames: int = CALIBRATION_FRAMES) -> Path:
    """Evenly spaced frames of every clip in `videos` as a YOLO dataset yaml (images only)."""
    images = out / "images" / "val"
    images.mkdir(parents=True, exist_ok=True)
    clips = sorted(p for p in videos.iterdir() if p.suffix.lower() in {".mp4", ".avi"})
    per_clip = max(1, frames // len(clips))
    for clip in clips:
        capture = cv2.VideoCapture(str(clip))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        wanted = {int(i * count / per_clip) for i in range(per_clip)}
        index = 0
        while True:
            ok, image = capture.read()
            if not ok:
                break
            if index in wanted:
                cv2.imwrite(str(images / f"{clip.stem}_{index:05d}.jpg"), image)
            index += 1
        capture.release()
    names = yaml.safe_load((shared_path("models", "yolo11n_int8_openvino_model") / "metadata.yaml").read_text())["names"]
    data = out / "calibration.yaml"
    data.write_text(yaml.safe_dump({"path": str(out), "train": "images/val", "val": "images/val", "names": names}))
    return data


def export(imgsz: tuple[int, int], out: Path, frames: int = CALIBRATION_FRAMES) -> Path:
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory(prefix="sp-export-") as tmp:
        work = Path(tmp)
        data = calibration_set(shared_path("videos"), work / "calib", frames)
        weights = work / "yolo11n.pt"
        shutil.copy(shared_path("models", "yolo11n.pt"), weights)  # the export lands beside the weights
        exported = Path(YOLO(str(weights)).export(format="openvino", int8=True, imgsz=list(imgsz), data=str(data),
                                                  batch=1, device="cpu"))
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(exported, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, nargs=2, default=[384, 640], metavar=("H", "W"))
    parser.add_argument("--out", type=Path, default=MODELS_DIR / "vehicle_detector_384x640")
    parser.add_argument("--frames", type=int, default=CALIBRATION_FRAMES)
    args = parser.parse_args()
    print(export(tuple(args.imgsz), args.out, args.frames))


if __name__ == "__main__":
    main()
