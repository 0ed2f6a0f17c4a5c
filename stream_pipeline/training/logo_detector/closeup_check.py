"""How often the badge detector finds a badge on real close-up photos of brands it never trained on.

`../shared/data/logos-closeup` has no box labels, so "found" is any box at the model's own
threshold on the photo at 416 or 640 px. Brands in no detector training set are compared with
trained brands as a control. Real badges, unlike the badge-swap set (catalogue logos pasted
into road photos), which favours a model trained on such swaps.

    python -m stream_pipeline.training.logo_detector.closeup_check [--model FOLDER]...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from stream_pipeline.core.paths import shared_dir

# Folders of logos-closeup whose brand is in no detector training set (logo-boxes, flickr, street-badges).
UNSEEN = ("alfa romeo", "dacia 1", "daewoo 1", "lancia 1", "opel", "peugeot", "seat", "smart 2", "tesla")
TRAINED = ("bmw", "ford", "honda 1", "hyundai", "kia 1", "mazda", "nissan", "toyota", "volkswagen")
SIZES = (416, 640)


def found_rate(model_dir: Path, brands: tuple[str, ...], root: Path, low_conf: float = 0.25) -> dict:
    from stream_pipeline.brands.logo_detector import LogoDetector

    conf = json.loads((model_dir / "metadata.json").read_text())["conf"]
    detector = LogoDetector.load(model_dir / "best_openvino_model")
    scores: dict[str, list[float]] = {}  # brand -> best box confidence per photo (0: no box)
    for brand in brands:
        scores[brand] = []
        for path in sorted((root / brand).iterdir()):
            image = cv2.imread(str(path))
            if image is not None:
                scores[brand].append(max((float(d.confidence.max()) for size in SIZES
                                          for d in detector.detect([image], conf=0.1, imgsz=size) if len(d)), default=0.0))
    every = [s for photos in scores.values() for s in photos]
    return {"model": str(model_dir), "conf": conf, "photos": len(every),
            "found": round(sum(s >= conf for s in every) / len(every), 3),
            f"found_at_{low_conf}": round(sum(s >= low_conf for s in every) / len(every), 3),
            "per_brand": {brand: sum(s >= conf for s in photos) for brand, photos in scores.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model folder (default: models/logo_detector)")
    args = parser.parse_args(argv)
    root = shared_dir() / "data" / "logos-closeup"
    for model in args.model or ["models/logo_detector"]:
        for name, brands in (("never trained", UNSEEN), ("trained", TRAINED)):
            print(name, json.dumps(found_rate(Path(model), brands, root)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
