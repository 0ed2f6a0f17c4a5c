"""Leakage-free split and YOLO training sets for the badge detector.

* Split: near-duplicate images (perceptual hash, also against the mirrored image) are
  grouped with union-find, and whole groups go to train / val / test, stratified by
  brand. The result is committed as models/logo_detector/split.json (keys only).
* Training images are *vehicle-sized crops*, like the ones the pipeline feeds the
  detector at run time: the COCO vehicle detector from ../shared finds the vehicle that
  carries each labelled badge, and the crop is that vehicle plus a jittered margin. Extra
  random windows around the badges add scale variety, and windows away from any vehicle
  add background negatives. Crops stay in the photo's pixels; ultralytics resizes them
  to the training size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import numpy as np

from stream_pipeline.core.errors import UserError
from stream_pipeline.core.paths import shared_dir
from stream_pipeline.training.grouping import UnionFind
from stream_pipeline.training.logo_detector.common import (
    CLASS_NAMES,
    SPLIT_MANIFEST,
    WORK_DIR,
    Box,
    Sample,
    load_samples,
)

log = logging.getLogger(__name__)

PHASH_THRESHOLD = 12  # Hamming distance (of 64 bits) under which two photos are one group
SPLIT_FRACTIONS = {"test": 0.15, "val": 0.15}
SPLIT_SEED = 20261125
VEHICLE_CLASSES = (2, 3, 5, 7)  # COCO car, motorcycle, bus, truck
VEHICLES_CACHE = WORK_DIR / "vehicles.json"
CLOSE_MIN_BADGE_PX = 40.0  # run 4 (20 px): blurry upscaled blobs became confident 150-300 px false boxes on whole photos
CLOSE_BADGE_FRACTION = (0.2, 0.5)  # badge width / window width of the close-range windows


# --------------------------------------------------------------------------- split
def _phashes(samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
    import imagehash
    from PIL import Image, ImageOps

    plain, mirrored = [], []
    for s in samples:
        with Image.open(s.image) as im:
            gray = im.convert("L")
            plain.append(imagehash.phash(gray).hash.flatten())
            mirrored.append(imagehash.phash(ImageOps.mirror(gray)).hash.flatten())
    return np.array(plain, dtype=bool), np.array(mirrored, dtype=bool)


def group_near_duplicates(samples: list[Sample], threshold: int = PHASH_THRESHOLD) -> list[int]:
    """Group id per sample: connected components of 'phash distance <= threshold' or 'cut from
    the same photo' (windows of one source photo, Sample.origin)."""
    plain, mirrored = _phashes(samples)
    sets = UnionFind(len(samples))
    first_of_origin: dict[str, int] = {}
    for i, s in enumerate(samples):
        if s.origin:
            sets.union(i, first_of_origin.setdefault(s.origin, i))
    for i in range(len(samples)):
        d = np.minimum((plain[i] != plain).sum(1), (mirrored[i] != plain).sum(1))
        for j in np.nonzero(d <= threshold)[0]:  # mirror distance is not symmetric: test every j
            if j != i:
                sets.union(i, int(j))
    return sets.groups()


def make_split(samples: list[Sample], threshold: int = PHASH_THRESHOLD, seed: int = SPLIT_SEED) -> dict:
    groups = group_near_duplicates(samples, threshold)
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    # Stratify by (source, brand of the group's first image).
    strata: dict[str, list[list[int]]] = {}
    for members in by_group.values():
        first = samples[members[0]]
        strata.setdefault(f"{first.key.split('/')[0]}:{first.brand}", []).append(members)
    split = {"train": [], "val": [], "test": []}
    _assign_strata(samples, strata, split, seed)
    n_multi = sum(1 for m in by_group.values() if len(m) > 1)
    return {
        "description": "Leakage-free split of ../shared/data/logo-boxes and logo-boxes-flickr (keys: <set>/<file>). "
        f"Near-duplicates (pHash of image or its mirror within {threshold}/64 bits, union-find) share a split; "
        "groups are stratified by set and brand.",
        "phash_threshold": threshold,
        "seed": seed,
        "groups_with_several_images": n_multi,
        "counts": {k: len(v) for k, v in split.items()},
        "train": sorted(split["train"]),
        "val": sorted(split["val"]),
        "test": sorted(split["test"]),
    }


def _assign_strata(samples: list[Sample], strata: dict[str, list[list[int]]], split: dict[str, list[str]],
                   seed: int) -> None:
    """Deal each stratum's groups (shuffled, seed) to test and val up to SPLIT_FRACTIONS of its
    images, the rest to train; appends the keys to `split`."""
    rng = random.Random(seed)
    for stratum in sorted(strata):
        glist = sorted(strata[stratum], key=lambda m: samples[m[0]].key)
        rng.shuffle(glist)
        total = sum(len(m) for m in glist)
        counts = {"test": 0, "val": 0}
        for members in glist:
            target = next(
                (name for name in ("test", "val") if counts[name] + len(members) / 2 <= SPLIT_FRACTIONS[name] * total),
                "train",
            )
            if target != "train":
                counts[target] += len(members)
            split[target].extend(samples[i].key for i in members)


def extend_split(samples: list[Sample], manifest: dict, threshold: int = PHASH_THRESHOLD, seed: int = SPLIT_SEED) -> dict:
    """Add the samples a manifest lacks (a new set) without moving any image it already has.

    All images (old and new) are grouped together (pHash + source photo). A group holding
    already-split images takes their split; a new image whose group holds old images of two
    splits would join a leak either way and is left out (`excluded`). New-only groups are
    stratified by set and brand, 70/15/15, as make_split does.
    """
    old = {k: name for name in ("train", "val", "test") for k in manifest[name]}
    groups = group_near_duplicates(samples, threshold)
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    split = {name: list(manifest[name]) for name in ("train", "val", "test")}
    excluded, joined, strata = [], 0, {}
    for members in by_group.values():
        new = [i for i in members if samples[i].key not in old]
        if not new:
            continue
        owners = {old[samples[i].key] for i in members if samples[i].key in old}
        if len(owners) > 1:
            excluded.extend(samples[i].key for i in new)
        elif owners:
            split[owners.pop()].extend(samples[i].key for i in new)
            joined += len(new)
        else:
            first = samples[new[0]]
            strata.setdefault(f"{first.key.split('/')[0]}:{first.brand}", []).append(new)
    _assign_strata(samples, strata, split, seed)
    sources = sorted({k.split("/", 1)[0] for keys in split.values() for k in keys})
    n_multi = sum(1 for m in by_group.values() if len(m) > 1)
    return {
        "description": f"Leakage-free split of ../shared/data/{{{', '.join(sources)}}} (keys: <set>/<file>). "
        f"Near-duplicates (pHash of image or its mirror within {threshold}/64 bits) and windows cut from one "
        "photo (street-badges/sources.csv) are grouped with union-find across all sets and share a split; "
        "images split before a set was added keep their split; new groups are stratified by set and brand.",
        "phash_threshold": threshold,
        "seed": seed,
        "groups_with_several_images": n_multi,
        "new_images_joining_old_groups": joined,
        "counts": {k: len(v) for k, v in split.items()},
        "counts_by_set": {
            name: {src: sum(1 for k in keys if k.startswith(src + "/")) for src in sources} for name, keys in split.items()
        },
        "excluded": sorted(excluded),
        "train": sorted(split["train"]),
        "val": sorted(split["val"]),
        "test": sorted(split["test"]),
    }


def load_split(path: Path = SPLIT_MANIFEST) -> dict[str, list[str]]:
    if not path.exists():
        raise UserError(f"split manifest not found: {path} (run `stream-pipeline train-logo-detector --prepare-only`)")
    data = json.loads(path.read_text())
    return {k: data[k] for k in ("train", "val", "test")}


def samples_by_split(split: dict[str, list[str]] | None = None) -> dict[str, list[Sample]]:
    split = split or load_split()
    samples = {s.key: s for s in load_samples()}
    missing = [k for keys in split.values() for k in keys if k not in samples]
    if missing:
        raise UserError(f"{len(missing)} images of the split manifest are missing from the shared data, e.g. {missing[0]}")
    return {name: [samples[k] for k in keys] for name, keys in split.items()}


# --------------------------------------------------------------------------- vehicles
def detect_vehicles(samples: list[Sample], cache: Path = VEHICLES_CACHE) -> dict[str, list[list[float]]]:
    """COCO vehicle boxes (xyxy, pixels) per sample key, cached in the work dir."""
    cached: dict[str, list[list[float]]] = json.loads(cache.read_text()) if cache.exists() else {}
    for s in samples:
        if s.is_window:  # a window around one badge is its own "vehicle crop" (see vehicle_crops)
            cached[s.key] = []
    todo = [s for s in samples if s.key not in cached]
    if todo:
        from stream_pipeline.training.logo_detector.common import setup_offline_ultralytics

        setup_offline_ultralytics()
        from ultralytics import YOLO

        model_path = shared_dir() / "models" / "yolo11n_int8_openvino_model"
        model = YOLO(str(model_path), task="detect")
        log.info("finding vehicles in %d photos with %s", len(todo), model_path.name)
        for s in todo:
            r = model.predict(str(s.image), imgsz=640, conf=0.2, classes=list(VEHICLE_CLASSES), verbose=False)[0]
            cached[s.key] = [[round(float(v), 1) for v in b] for b in r.boxes.xyxy.cpu().numpy()]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(cached))
    return {s.key: cached[s.key] for s in samples}


def _stable_rng(*parts: object) -> random.Random:
    digest = hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()
    return random.Random(int(digest[:12], 16))


def _inside_fraction(box: Box, crop: tuple[int, int, int, int]) -> float:
    x1, y1 = max(box.x1, crop[0]), max(box.y1, crop[1])
    x2, y2 = min(box.x2, crop[2]), min(box.y2, crop[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / max(box.w * box.h, 1e-9)


def _clip_crop(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1 = max(0, int(round(x1))), max(0, int(round(y1)))
    x2, y2 = min(width, int(round(x2))), min(height, int(round(y2)))
    return x1, y1, x2, y2


def vehicle_crops(
    sample: Sample,
    vehicles: list[list[float]],
    rng: random.Random | None = None,
) -> list[tuple[int, int, int, int]]:
    """One vehicle-sized crop per distinct vehicle carrying a labelled badge.

    The vehicle is the smallest COCO vehicle box holding >= 80 % of the badge. With no
    such vehicle (close-ups, missed detections) the crop is a square of ~9 badge widths
    around the badge. `rng` jitters margins (training); without it the crops are
    deterministic (evaluation).
    """
    W, H = sample.width, sample.height
    if sample.is_window:  # already cut around the badge at ~8 badge widths: the window is the crop
        return [(0, 0, W, H)]
    crops: list[tuple[int, int, int, int]] = []
    for box in sample.boxes:
        if any(_inside_fraction(box, c) >= 0.99 for c in crops):
            continue
        holders = []
        for v in vehicles:
            vx1, vy1, vx2, vy2 = v
            inter = max(0.0, min(box.x2, vx2) - max(box.x1, vx1)) * max(0.0, min(box.y2, vy2) - max(box.y1, vy1))
            if inter >= 0.8 * box.w * box.h:
                holders.append(v)
        if holders:
            vx1, vy1, vx2, vy2 = min(holders, key=lambda v: (v[2] - v[0]) * (v[3] - v[1]))
            vw, vh = vx2 - vx1, vy2 - vy1
            if rng is None:
                m = [0.05, 0.05, 0.05, 0.05]
            else:
                m = [rng.uniform(-0.02, 0.2) for _ in range(4)]
            crop = _clip_crop(vx1 - m[0] * vw, vy1 - m[1] * vh, vx2 + m[2] * vw, vy2 + m[3] * vh, W, H)
        else:
            side = min(max(9.0 * max(box.w, box.h), 96.0), float(min(W, H)))
            if side <= 1.2 * max(box.w, box.h):  # close-up: the whole photo is the "vehicle"
                crop = (0, 0, W, H)
            else:
                r = rng or _stable_rng(sample.key, box.x1, box.y1)
                cx = (box.x1 + box.x2) / 2 + r.uniform(-0.25, 0.25) * side
                cy = (box.y1 + box.y2) / 2 + r.uniform(-0.2, 0.2) * side
                x1 = min(max(0.0, cx - side / 2), W - side)
                y1 = min(max(0.0, cy - side / 2), H - side)
                crop = _clip_crop(x1, y1, x1 + side, y1 + side, W, H)
        # Make sure this badge is fully inside (vehicle boxes can cut it).
        crop = _clip_crop(min(crop[0], box.x1 - 2), min(crop[1], box.y1 - 2), max(crop[2], box.x2 + 2), max(crop[3], box.y2 + 2), W, H)
        crops.append(crop)
    return crops


def crop_labels(sample: Sample, crop: tuple[int, int, int, int], min_inside: float = 0.5) -> list[list[float]]:
    """Labelled badges inside a crop, in the crop's pixels (xyxy), clipped."""
    out = []
    for b in sample.boxes:
        if _inside_fraction(b, crop) >= min_inside:
            x1, y1 = max(b.x1, crop[0]) - crop[0], max(b.y1, crop[1]) - crop[1]
            x2, y2 = min(b.x2, crop[2]) - crop[0], min(b.y2, crop[3]) - crop[1]
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                out.append([x1, y1, x2, y2])
    return out


def _random_window(sample: Sample, rng: random.Random) -> tuple[int, int, int, int] | None:
    """A square window of random size holding one random badge."""
    box = rng.choice(sample.boxes)
    W, H = sample.width, sample.height
    big = max(box.w, box.h)
    lo = max(1.3 * big, 128.0)
    hi = min(float(min(W, H)), max(lo, 400.0))
    if lo > hi:
        return None
    side = rng.uniform(lo, hi)
    x1 = rng.uniform(max(0.0, box.x2 + 2 - side), min(box.x1 - 2, W - side))
    y1 = rng.uniform(max(0.0, box.y2 + 2 - side), min(box.y1 - 2, H - side))
    return _clip_crop(x1, y1, x1 + side, y1 + side, W, H)


def _negative_window(sample: Sample, vehicles: list[list[float]], rng: random.Random) -> tuple[int, int, int, int] | None:
    """A window touching no labelled badge and no detected vehicle (unlabelled badges live on vehicles)."""
    W, H = sample.width, sample.height
    avoid = [b.xyxy() for b in sample.boxes] + vehicles
    for _ in range(30):
        side = rng.uniform(96, min(W, H, 320))
        x1, y1 = rng.uniform(0, W - side), rng.uniform(0, H - side)
        c = (x1, y1, x1 + side, y1 + side)
        if all(min(c[2], a[2]) <= max(c[0], a[0]) or min(c[3], a[3]) <= max(c[1], a[1]) for a in avoid):
            return _clip_crop(*c, W, H)
    return None


def _overlaps(c, boxes, grow: float = 0.15) -> bool:
    for b in boxes:
        gx, gy = grow * (b[2] - b[0]), grow * (b[3] - b[1])
        if min(c[2], b[2] + gx) > max(c[0], b[0] - gx) and min(c[3], b[3] + gy) > max(c[1], b[1] - gy):
            return True
    return False


def close_window(sample: Sample, rng: random.Random, min_badge: float = CLOSE_MIN_BADGE_PX) -> tuple[int, int, int, int] | None:
    """A close-range view: a window where one badge is 20-50 % of the width (a badge seen from a
    few metres fills much of its vehicle crop; the labelled sets hardly have such crops, and
    ultralytics' scale jitter (x0.5-1.5) does not reach them). Only badges of >= min_badge px,
    so the up-scaled window is not just blur."""
    boxes = [b for b in sample.boxes if max(b.w, b.h) >= min_badge]
    if not boxes:
        return None
    box = rng.choice(boxes)
    side = max(box.w, box.h) / rng.uniform(*CLOSE_BADGE_FRACTION)
    side = min(side, float(min(sample.width, sample.height)))
    x1 = rng.uniform(max(0.0, box.x2 - side), min(box.x1, sample.width - side))
    y1 = rng.uniform(max(0.0, box.y2 - side), min(box.y1, sample.height - side))
    return _clip_crop(x1, y1, x1 + side, y1 + side, sample.width, sample.height)


def hard_negative(sample: Sample, vehicles: list[list[float]], rng: random.Random) -> tuple[int, int, int, int] | None:
    """A window on the badge's own vehicle that holds no labelled badge: licence plate, lamps,
    wheels, grille bars and model lettering, the parts a badge detector confuses with badges.

    Half of the tries sit below the badge (the plate is under the badge on most cars), the rest
    anywhere on the vehicle. Sizes span close-range views (a few badge widths) to a third of the
    vehicle, so plates are seen at the scales badges are."""
    if not sample.boxes:
        return None
    W, H = sample.width, sample.height
    box = rng.choice(sample.boxes)
    region = (0.0, 0.0, float(W), float(H))
    if not sample.is_window:
        holders = [v for v in vehicles if _inside_fraction(box, (v[0], v[1], v[2], v[3])) >= 0.8]
        if holders:
            region = tuple(min(holders, key=lambda v: (v[2] - v[0]) * (v[3] - v[1])))
        else:  # no vehicle found: ~9 badge widths around the badge stand for it
            side = 9.0 * max(box.w, box.h)
            cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
            region = (max(0.0, cx - side / 2), max(0.0, cy - side / 2), min(W, cx + side / 2), min(H, cy + side / 2))
    rw, rh = region[2] - region[0], region[3] - region[1]
    badges = [b.xyxy() for b in sample.boxes]
    big = max(box.w, box.h)
    for _ in range(40):
        side = rng.uniform(max(2.5 * big, 40.0), max(2.5 * big, 40.0, 0.45 * min(rw, rh)))
        if side > min(rw, rh):
            side = min(rw, rh)
        if side < 32:
            return None
        if rng.random() < 0.5:  # below the badge: the plate zone
            cx = (box.x1 + box.x2) / 2 + rng.uniform(-0.5, 0.5) * side
            y1 = box.y2 + rng.uniform(0.15, 1.0) * big
            x1 = cx - side / 2
        else:
            x1, y1 = rng.uniform(region[0], region[2] - side), rng.uniform(region[1], region[3] - side)
        x1 = min(max(region[0], x1), region[2] - side)
        y1 = min(max(region[1], y1), region[3] - side)
        c = (x1, y1, x1 + side, y1 + side)
        if c[3] <= H and not _overlaps(c, badges):
            return _clip_crop(*c, W, H)
    return None


def _write_crop(image: np.ndarray, crop, boxes: list[list[float]], out_images: Path, out_labels: Path, name: str) -> None:
    import cv2

    x1, y1, x2, y2 = crop
    patch = image[y1:y2, x1:x2]
    h, w = patch.shape[:2]
    cv2.imwrite(str(out_images / f"{name}.jpg"), patch, [cv2.IMWRITE_JPEG_QUALITY, 95])
    lines = []
    for bx1, by1, bx2, by2 in boxes:
        lines.append(f"0 {(bx1 + bx2) / 2 / w:.6f} {(by1 + by2) / 2 / h:.6f} {(bx2 - bx1) / w:.6f} {(by2 - by1) / h:.6f}")
    (out_labels / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))


def build_yolo_dataset(
    out_dir: Path,
    split: dict[str, list[Sample]],
    vehicles: dict[str, list[list[float]]],
    windows_per_image: int = 1,
    negative_fraction: float = 0.3,
    close_fraction: float = 0.35,
    hard_negative_fraction: float = 0.35,
    seed: int = 0,
    synthetic_dir: Path | None = None,
) -> Path:
    """Write crops + labels under out_dir and return the dataset YAML path."""
    import shutil

    import cv2

    if out_dir.exists():
        shutil.rmtree(out_dir)
    counts = {}
    for part, samples in (("train", split["train"]), ("val", split["val"])):
        img_dir, lbl_dir = out_dir / "images" / part, out_dir / "labels" / part
        img_dir.mkdir(parents=True)
        lbl_dir.mkdir(parents=True)
        n = 0
        for s in samples:
            image = cv2.imread(str(s.image))
            stem = s.key.replace("/", "__").rsplit(".", 1)[0]
            if part == "val":  # deterministic vehicle crops, as evaluation uses
                for k, crop in enumerate(vehicle_crops(s, vehicles[s.key])):
                    _write_crop(image, crop, crop_labels(s, crop), img_dir, lbl_dir, f"{stem}_v{k}")
                    n += 1
                continue
            rng = _stable_rng(seed, s.key)
            crops = [(c, "v") for c in vehicle_crops(s, vehicles[s.key], rng)]
            if not s.is_window:  # windows are already random windows around the badge
                for _ in range(windows_per_image):
                    w = _random_window(s, rng)
                    if w:
                        crops.append((w, "w"))
                if rng.random() < negative_fraction:
                    w = _negative_window(s, vehicles[s.key], rng)
                    if w:
                        crops.append((w, "n"))
            if rng.random() < close_fraction:
                w = close_window(s, rng)
                if w:
                    crops.append((w, "c"))
            if rng.random() < hard_negative_fraction:
                w = hard_negative(s, vehicles[s.key], rng)
                if w:
                    crops.append((w, "h"))
            for k, (crop, kind) in enumerate(crops):
                labels = [] if kind in ("n", "h") else crop_labels(s, crop)
                _write_crop(image, crop, labels, img_dir, lbl_dir, f"{stem}_{kind}{k}")
                n += 1
        counts[part] = n
    kinds: dict[str, int] = {}
    for f in (out_dir / "images" / "train").iterdir():
        kind = f.stem.rsplit("_", 1)[-1][0]
        kinds[kind] = kinds.get(kind, 0) + 1
    counts["train_by_kind"] = {
        name: kinds.get(k, 0) for k, name in (("v", "vehicle_or_window"), ("w", "random_window"), ("n", "background"),
                                              ("c", "close_range"), ("h", "hard_negative"))
    }
    if synthetic_dir is not None:
        img_dir, lbl_dir = out_dir / "images" / "train", out_dir / "labels" / "train"
        n = 0
        for img in sorted((synthetic_dir / "images").glob("*.jpg")):
            shutil.copy(img, img_dir / f"syn_{img.name}")
            shutil.copy(synthetic_dir / "labels" / f"{img.stem}.txt", lbl_dir / f"syn_{img.stem}.txt")
            n += 1
        counts["synthetic"] = n
    yaml_path = out_dir / "data.yaml"
    yaml_path.write_text(
        f"path: {out_dir}\ntrain: images/train\nval: images/val\nnames:\n  0: {CLASS_NAMES[0]}\n"
    )
    (out_dir / "counts.json").write_text(json.dumps(counts, indent=2))
    log.info("dataset %s: %s", out_dir, counts)
    return yaml_path


def prepare(out_dir: Path | None = None, resplit: bool = False, synthetic_dir: Path | None = None) -> Path:
    """Split (if no manifest yet or resplit), find vehicles, write the crop dataset; returns data.yaml."""
    samples = load_samples()
    manifest = None
    if resplit or not SPLIT_MANIFEST.exists():
        manifest = make_split(samples)
    else:
        old = json.loads(SPLIT_MANIFEST.read_text())
        known = {k for name in ("train", "val", "test") for k in old[name]} | set(old.get("excluded", []))
        if any(s.key not in known for s in samples):  # a new set: split it, keep the old images' splits
            manifest = extend_split(samples, old)
    if manifest is not None:
        SPLIT_MANIFEST.parent.mkdir(parents=True, exist_ok=True)
        SPLIT_MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
        log.info("wrote split manifest %s: %s", SPLIT_MANIFEST, manifest["counts"])
    split = samples_by_split()
    vehicles = detect_vehicles([s for part in split.values() for s in part])
    return build_yolo_dataset(out_dir or WORK_DIR / "dataset", split, vehicles, synthetic_dir=synthetic_dir)
