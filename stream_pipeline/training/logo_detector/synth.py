"""Synthetic badge images: catalogue logos composited onto vehicles cut from the footage.

Brands with no labelled road photos (Fiat, Jaguar, Opel, ...) can only be checked this
way. Vehicles come from ../shared/videos (COCO detector, vehicles >= 100 px wide); the
logo (alpha-cropped, ~8-16 % of the vehicle width, near the centre line where badges sit)
gets a random perspective warp, a chrome-like grey version half of the time, lighting
matched to the spot it lands on, blur, noise and JPEG re-compression.

    python -m stream_pipeline.training.logo_detector.synth OUT_DIR --brands fiat,jaguar --n 200 --seed 1

Badge swap (more realistic): the labelled badges of a split's vehicle crops are painted out and
replaced by catalogue logos fitted to their boxes, so the logo sits where a real badge sits:

    python -m stream_pipeline.training.logo_detector.synth OUT_DIR --swap train --brands training
    python -m stream_pipeline.training.logo_detector.synth OUT_DIR --swap test   # held-out brands

Either writes OUT_DIR/images/*.jpg and OUT_DIR/labels/*.txt (YOLO, class 0), usable as an
evaluation set (evaluate.evaluate_folder) or as `train-logo-detector --synthetic OUT_DIR`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path

import numpy as np

from stream_pipeline.core.paths import shared_dir
from stream_pipeline.training.logo_detector.common import WORK_DIR

log = logging.getLogger(__name__)

# Brands with no labelled road photo in ../shared (held out for the unseen-brand check).
UNSEEN_BRANDS = (
    "fiat", "jaguar", "opel", "alfa-romeo", "peugeot", "skoda", "tesla", "seat", "dacia", "land-rover", "lancia", "saab",
)
# Brands present in the labelled sets (never used as synthetic *training* logos' complement check).
LABELLED_BRANDS = (
    "audi", "citroen", "gmc", "honda", "hyundai", "infiniti", "mazda", "mercedes-benz", "mitsubishi", "nissan",
    "renault", "toyota", "volkswagen", "bmw", "cadillac", "chevrolet", "ford", "jeep", "kia", "lexus", "mini",
    "porsche", "ram", "range-rover", "subaru", "suzuki", "volvo", "ferrari",
)
VEHICLE_CROPS_DIR = WORK_DIR / "video_vehicles"


def cut_vehicle_crops(out_dir: Path = VEHICLE_CROPS_DIR, every_s: float = 1.0, min_width: int = 100) -> list[Path]:
    """Vehicle crops from ../shared/videos, one look per `every_s` seconds of footage."""
    existing = sorted(out_dir.glob("*.jpg"))
    if existing:
        return existing
    import cv2

    from stream_pipeline.training.logo_detector.common import setup_offline_ultralytics

    setup_offline_ultralytics()
    from ultralytics import YOLO

    model = YOLO(str(shared_dir() / "models" / "yolo11n_int8_openvino_model"), task="detect")
    out_dir.mkdir(parents=True, exist_ok=True)
    for video in sorted((shared_dir() / "videos").iterdir()):
        cap = cv2.VideoCapture(str(video))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25
        step = max(1, int(round(fps * every_s)))
        idx = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if idx % step == 0:
                r = model.predict(frame, imgsz=640, conf=0.5, classes=[2, 5, 7], verbose=False)[0]
                for k, (x1, y1, x2, y2) in enumerate(r.boxes.xyxy.cpu().numpy().astype(int)):
                    if x2 - x1 >= min_width and y2 - y1 >= 0.5 * min_width:
                        cv2.imwrite(str(out_dir / f"{video.stem}_{idx:05d}_{k}.jpg"), frame[y1:y2, x1:x2])
            idx += 1
        cap.release()
    return sorted(out_dir.glob("*.jpg"))


def _load_logo(slug: str) -> np.ndarray:
    import cv2

    rgba = cv2.imread(str(shared_dir() / "data" / "logo-catalogue" / f"{slug}.png"), cv2.IMREAD_UNCHANGED)
    if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"no RGBA catalogue logo for {slug}")
    ys, xs = np.nonzero(rgba[:, :, 3] > 20)
    return rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def paste_logo(image: np.ndarray, logo_rgba: np.ndarray, target: tuple[float, float, float, float],
               rng: random.Random):
    """Paste a catalogue logo (BGRA) into `image` fitted to the target box (xyxy), with a
    chrome-like grey version half of the time, a small perspective warp, lighting pulled towards
    the spot it lands on, and blur. Returns (image, xyxy box of the pasted logo) or None."""
    import cv2

    H, W = image.shape[:2]
    tx1, ty1, tx2, ty2 = target
    # fit inside the target box, keeping the logo's aspect ratio
    scale = min((tx2 - tx1) / logo_rgba.shape[1], (ty2 - ty1) / logo_rgba.shape[0]) * rng.uniform(0.85, 1.1)
    lw, lh = logo_rgba.shape[1] * scale, logo_rgba.shape[0] * scale
    if lw < 4 or lh < 4:
        return None
    logo = cv2.resize(logo_rgba, (max(2, int(lw)), max(2, int(lh))), interpolation=cv2.INTER_AREA).astype(np.float32)
    bgr, alpha = logo[:, :, :3], logo[:, :, 3] / 255.0
    if rng.random() < 0.5:  # chrome-like: grey with boosted contrast
        g = cv2.cvtColor(bgr.astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
        g = np.clip((g - g.mean()) * rng.uniform(1.0, 1.8) + rng.uniform(120, 200), 0, 255)
        bgr = np.repeat(g[:, :, None], 3, 2)
    # Perspective: jitter the corners by up to 12 % of the logo size.
    h, w = alpha.shape
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    j = 0.12
    dst = src + np.float32([[rng.uniform(-j, j) * w, rng.uniform(-j, j) * h] for _ in range(4)])
    dst -= dst.min(0)
    ow, oh = int(np.ceil(dst[:, 0].max())) + 1, int(np.ceil(dst[:, 1].max())) + 1
    M = cv2.getPerspectiveTransform(src, dst)
    bgr = cv2.warpPerspective(bgr, M, (ow, oh), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(alpha, M, (ow, oh), flags=cv2.INTER_LINEAR)
    if ow >= W or oh >= H:
        return None
    x1 = int(np.clip((tx1 + tx2) / 2 - ow / 2, 0, W - ow))
    y1 = int(np.clip((ty1 + ty2) / 2 - oh / 2, 0, H - oh))
    region = image[y1 : y1 + oh, x1 : x1 + ow].astype(np.float32)
    # Lighting: pull the logo's brightness towards the spot it lands on.
    local = region.mean()
    logo_mean = (bgr * alpha[:, :, None]).sum() / max(alpha.sum() * 3, 1e-6)
    bgr = np.clip(bgr * (0.6 + 0.4 * (local + 40) / max(logo_mean, 1.0)) * rng.uniform(0.8, 1.1), 0, 255)
    sigma = rng.uniform(0.0, 1.2)
    if sigma > 0.3:
        bgr = cv2.GaussianBlur(bgr, (0, 0), sigma)
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
    out = image.astype(np.float32).copy()
    out[y1 : y1 + oh, x1 : x1 + ow] = region * (1 - alpha[:, :, None]) + bgr * alpha[:, :, None]
    ys, xs = np.nonzero(alpha > 0.3)
    if len(xs) == 0:
        return None
    box = [x1 + xs.min(), y1 + ys.min(), x1 + xs.max() + 1, y1 + ys.max() + 1]
    return out, [float(v) for v in box]


def _finish(image: np.ndarray, rng: random.Random) -> np.ndarray:
    """Sensor noise and JPEG re-compression over the whole composite."""
    import cv2

    out = image.astype(np.float32) + np.random.default_rng(rng.randrange(1 << 30)).normal(
        0, rng.uniform(1, 5), image.shape)
    ok, buf = cv2.imencode(".jpg", np.clip(out, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, rng.randint(55, 92)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def composite(vehicle: np.ndarray, logo_rgba: np.ndarray, rng: random.Random):
    """Paste one logo near the centre line of a vehicle crop; returns (image, xyxy box) or None."""
    H, W = vehicle.shape[:2]
    lw = rng.uniform(0.08, 0.16) * W
    lh = min(lw * logo_rgba.shape[0] / logo_rgba.shape[1], 0.3 * H)
    lw = lh * logo_rgba.shape[1] / logo_rgba.shape[0]
    cx, cy = W / 2 + rng.uniform(-0.06, 0.06) * W, rng.uniform(0.35, 0.72) * H
    res = paste_logo(vehicle, logo_rgba, (cx - lw / 2, cy - lh / 2, cx + lw / 2, cy + lh / 2), rng)
    if res is None:
        return None
    return _finish(res[0], rng), res[1]


def paint_out(image: np.ndarray, badges: list[list[float]]) -> np.ndarray:
    """The photo with each badge box (xyxy, plus a 10 % margin) inpainted from its surroundings."""
    import cv2

    H, W = image.shape[:2]
    mask = np.zeros((H, W), np.uint8)
    for x1, y1, x2, y2 in badges:
        pad = max(2, int(0.1 * max(x2 - x1, y2 - y1)))
        mask[max(0, int(y1) - pad):int(y2) + pad + 1, max(0, int(x1) - pad):int(x2) + pad + 1] = 255
    return cv2.inpaint(image, mask, 3, cv2.INPAINT_TELEA)


def swap_badges(image: np.ndarray, badges: list[list[float]], logos: list[np.ndarray], rng: random.Random):
    """Replace each labelled badge (xyxy) of a photo with a catalogue logo: the badge is painted
    out (inpainting from its surroundings) and a logo fitted to its box is pasted in its place, so
    position, size, viewing angle and surroundings are those of a real badge. Returns the image
    and the pasted boxes (a badge that could not be replaced stays painted out, unlabelled)."""
    out = paint_out(image, badges)
    boxes = []
    for badge, logo in zip(badges, logos):
        res = paste_logo(out, logo, tuple(badge), rng)
        if res is not None:
            out, box = res[0].astype(np.uint8), res[1]
            boxes.append(box)
    return _finish(out, rng), boxes


def build_swapped(out_dir: Path, split_name: str, brands: list[str], seed: int = 0) -> Path:
    """One badge-swapped vehicle crop per labelled vehicle of a split (the crops evaluation and
    training use): `train` with training brands, `val`/`test` with held-out brands for the
    unseen-brand measurement. Writes YOLO images/labels and a manifest."""
    import cv2

    from stream_pipeline.training.logo_detector.dataset import (
        crop_labels,
        detect_vehicles,
        samples_by_split,
        vehicle_crops,
    )

    samples = samples_by_split()[split_name]
    vehicles = detect_vehicles(samples)
    rng = random.Random(seed)
    logos = {}
    for b in brands:
        try:
            logos[b] = _load_logo(b)
        except ValueError as exc:  # a few catalogue files have no transparency: skip them
            log.info("skipped %s: %s", b, exc)
    brands = sorted(logos)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    manifest = []
    for s in samples:
        image = cv2.imread(str(s.image))
        # training crops get jittered margins, evaluation crops are the deterministic ones
        crops = vehicle_crops(s, vehicles[s.key], rng if split_name == "train" else None)
        for k, crop in enumerate(crops):
            badges = crop_labels(s, crop)
            if not badges:
                continue
            x1, y1, x2, y2 = crop
            chosen = [rng.choice(brands) for _ in badges]
            patch, boxes = swap_badges(image[y1:y2, x1:x2].copy(), badges, [logos[b] for b in chosen], rng)
            if not boxes:
                continue
            h, w = patch.shape[:2]
            name = f"{s.key.replace('/', '__').rsplit('.', 1)[0]}_s{k}"
            cv2.imwrite(str(out_dir / "images" / f"{name}.jpg"), patch, [cv2.IMWRITE_JPEG_QUALITY, 95])
            (out_dir / "labels" / f"{name}.txt").write_text("".join(
                f"0 {(a + c) / 2 / w:.6f} {(b + d) / 2 / h:.6f} {(c - a) / w:.6f} {(d - b) / h:.6f}\n"
                for a, b, c, d in boxes))
            manifest.append({"image": f"{name}.jpg", "brands": chosen, "photo": s.key})
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=0))
    log.info("badge-swapped %s crops: %d in %s", split_name, len(manifest), out_dir)
    return out_dir


def training_brands() -> list[str]:
    """Catalogue slugs used for synthetic training logos: every catalogue brand except the
    held-out UNSEEN_BRANDS (kept for measuring how the detector does on brands it never saw)."""
    data = json.loads((shared_dir() / "data" / "logo-catalogue" / "data.json").read_text())
    slugs = sorted({d["slug"] for d in data} if isinstance(data, list) else set(data))
    return [s for s in slugs if s not in UNSEEN_BRANDS
            and (shared_dir() / "data" / "logo-catalogue" / f"{s}.png").is_file()]


def build(out_dir: Path, brands: list[str], n: int, seed: int = 0) -> Path:
    import cv2

    vehicles = cut_vehicle_crops()
    if not vehicles:
        raise RuntimeError("no vehicle crops cut from ../shared/videos")
    rng = random.Random(seed)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    logos = {b: _load_logo(b) for b in brands}
    made, manifest = 0, []
    while made < n:
        vpath = rng.choice(vehicles)
        brand = rng.choice(brands)
        res = composite(cv2.imread(str(vpath)), logos[brand], rng)
        if res is None:
            continue
        image, (x1, y1, x2, y2) = res
        h, w = image.shape[:2]
        name = f"{made:04d}_{brand}"
        cv2.imwrite(str(out_dir / "images" / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        (out_dir / "labels" / f"{name}.txt").write_text(
            f"0 {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n"
        )
        manifest.append({"image": f"{name}.jpg", "brand": brand, "vehicle": vpath.name})
        made += 1
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=0))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--brands", default=None,
                   help="catalogue slugs, comma-separated, or 'training' for every brand not held out "
                        "(default: the held-out UNSEEN_BRANDS)")
    p.add_argument("--n", type=int, default=200, help="composites onto video vehicles (without --swap)")
    p.add_argument("--swap", choices=["train", "val", "test"], default=None,
                   help="instead: replace the labelled badges of this split's vehicle crops with catalogue logos")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if a.brands == "training":
        brands = training_brands()
    else:
        brands = [b.strip() for b in (a.brands or ",".join(UNSEEN_BRANDS)).split(",") if b.strip()]
    if a.swap:
        build_swapped(a.out, a.swap, brands, a.seed)
    else:
        build(a.out, brands, a.n, a.seed)
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
