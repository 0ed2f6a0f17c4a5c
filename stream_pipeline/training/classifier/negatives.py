"""Non-badges for the gallery: what the logo detector fires on that is not a badge.

On the road the badge detector also boxes lettering, lamps, grille slats and bodywork. A brand
enrolled from a few small, blurry photos has a prototype close to such boxes (chrysler's drew
most of them), so the gallery named them as that brand. `build-gallery` therefore keeps
embeddings of such boxes as the gallery's negatives (`Gallery.negatives`): a badge the gallery
would give to an enrolled brand but that is closer to the negatives is unknown.

The boxes are found as the pipeline finds badges: COCO vehicles -> vehicle crops -> the logo
detector (a low confidence, to collect the near misses too) -> the badge chooser's plausibility
filter; a box touching a labelled badge is not a negative. They are cut with the classifier's
badge margin. Featureless crops (flat colour, gradients, blur, noise: a washed-out or dark
frame) are added, so a blank crop is not a brand either.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from stream_pipeline.brands.classifier import BrandClassifier

log = logging.getLogger(__name__)

DETECTOR_CONF = 0.05  # near misses too: the runtime threshold leaves too few to learn from
PER_CROP = {"train": 2, "val": 3, "test": 3}
FEATURELESS = 120


def _overlaps(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def detector_boxes(split_name: str, detector_path: Path) -> list[tuple[str, list[float]]]:
    """(image path, box xyxy) of the non-badges of one logo-detector split; cached per detector."""
    from stream_pipeline.brands.badge_choice import BadgeChooser
    from stream_pipeline.brands.logo_detector import LogoDetector
    from stream_pipeline.core.config import BrandsConfig
    from stream_pipeline.training.logo_detector.common import WORK_DIR
    from stream_pipeline.training.logo_detector.dataset import detect_vehicles, samples_by_split, vehicle_crops
    from stream_pipeline.training.logo_detector.evaluate import _read

    weights = sorted(detector_path.glob("*.bin")) or sorted(detector_path.glob("*"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in weights if p.is_file())).hexdigest()[:12]
    cache = WORK_DIR / f"negatives_{split_name}_{digest}.json"
    if cache.is_file():
        return [(p, b) for p, b in json.loads(cache.read_text())]
    detector = LogoDetector.load(detector_path, conf=DETECTOR_CONF)
    choose = BadgeChooser(BrandsConfig())
    photos = samples_by_split()[split_name]
    vehicles = detect_vehicles(photos)
    out = []
    for n, sample in enumerate(photos):
        image = _read(sample.image)
        labelled = [(b.x1, b.y1, b.x2, b.y2) for b in sample.boxes]
        for x1, y1, x2, y2 in vehicle_crops(sample, vehicles[sample.key]):
            crop = np.ascontiguousarray(image[y1:y2, x1:x2])
            [logos] = detector.detect([crop])
            plausible = choose.plausible(logos, crop.shape[1], crop.shape[0]) if len(logos) else []
            taken = 0
            for i in np.argsort(-logos.confidence):
                if taken >= PER_CROP[split_name]:
                    break
                box = [float(v) for v in logos.xyxy[i] + np.array([x1, y1, x1, y1], np.float32)]
                if not plausible[i] or box[2] - box[0] < 6 or any(_overlaps(box, g) for g in labelled):
                    continue
                out.append((str(sample.image), box))
                taken += 1
        if n % 500 == 0:
            log.info("negatives (%s): %d of %d photos, %d boxes", split_name, n, len(photos), len(out))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


def featureless_crops(count: int = FEATURELESS, seed: int = 0) -> list[np.ndarray]:
    """Flat colours, gradients, blurred and plain noise, at badge-crop sizes."""
    import cv2

    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        h, w = int(rng.integers(12, 80)), int(rng.integers(12, 80))
        kind = i % 4
        if kind == 0:
            img = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
        elif kind == 1:
            a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            t = np.linspace(0, 1, w)[None, :, None]
            img = (a * (1 - t) + b * t).repeat(h, 0).astype(np.uint8)
        elif kind == 2:
            img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (0, 0), rng.uniform(1, 4))
        else:
            img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        crops.append(img)
    return crops


def embed_negatives(clf: BrandClassifier, split_name: str, detector_path: Path,
                    featureless: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, crop widths) of a split's non-badges, cut as the pipeline cuts badges."""
    import cv2

    from stream_pipeline.brands.gallery import normalise
    from stream_pipeline.brands.recognizer import crop

    crops = []
    images: dict[str, np.ndarray] = {}
    for path, box in detector_boxes(split_name, detector_path):
        if path not in images:
            images = {path: cv2.imread(path)}  # boxes come grouped by photo
        cut, _ = crop(images[path], np.asarray(box, np.float32), clf.badge_margin(box[2] - box[0]))
        if cut.size:
            crops.append(cut)
    if featureless:
        crops += featureless_crops()
    feats = []
    for start in range(0, len(crops), 256):
        feats.append(normalise(clf.infer(crops[start:start + 256])[1]))
    emb = np.concatenate(feats) if feats else np.zeros((0, 1), np.float32)
    return emb, np.asarray([c.shape[1] for c in crops], np.int64)
