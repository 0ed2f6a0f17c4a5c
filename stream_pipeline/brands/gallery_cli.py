"""`stream-pipeline enroll` and `stream-pipeline gallery list|remove`: manage the brand gallery
without retraining.

Enrolling embeds badge photos with the shipped classifier and adds them as a brand's references.
Its input is checked as `import-brands` checks a folder: unreadable, tiny and duplicate images are
reported and skipped. With `--detect-badge` the logo detector first finds the badge in each photo
(for photos of a vehicle rather than of its badge).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stream_pipeline.core.errors import UserError

log = logging.getLogger("stream_pipeline.gallery")


def gallery_path(args) -> Path:
    """--gallery, else `brands.gallery` of the config (the shipped gallery by default)."""
    if getattr(args, "gallery", None):
        return Path(args.gallery)
    from stream_pipeline.core.config import load_config
    from stream_pipeline.core.paths import resolve_model_path

    config = load_config(Path(args.config) if getattr(args, "config", None) else None)
    if not config.brands.gallery:
        raise UserError("no gallery: pass --gallery FILE or set brands.gallery in the config")
    return resolve_model_path(config.brands.gallery)


def shipped_gallery_path() -> Path:
    from stream_pipeline.brands.classifier import DEFAULT_MODEL_DIR
    from stream_pipeline.brands.gallery import GALLERY_NAME

    return DEFAULT_MODEL_DIR / GALLERY_NAME


def writable_gallery_path(args) -> Path:
    """The gallery `enroll` / `gallery remove` change: never the shipped one, which is part of the
    committed model (the default config names it; `gallery remove bmw` there would drop the
    trained brand's references for every user of the checkout)."""
    path = gallery_path(args)
    if path.resolve() == shipped_gallery_path().resolve():
        raise UserError(f"the shipped gallery {path} is part of the model and is not changed: pass "
                        "--gallery FILE (created from it when missing) and set brands.gallery: FILE in your config")
    return path


def image_key(img) -> str:
    """The key a gallery stores for an enrolled image: its 64-bit perceptual hash, hex."""
    import cv2

    from stream_pipeline.training.classifier.dataset import phash64

    return f"{phash64(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)):016x}"


def _hamming(keys: np.ndarray, key: int) -> np.ndarray:
    """Bits differing between one 64-bit key and each of `keys` (uint64)."""
    x = np.bitwise_xor(keys, np.uint64(key))
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


# An image with nothing to recognise: a solid or near-solid colour (grey-level standard deviation
# under BLANK_STD; the flattest real badge photo of ../shared's 544 close-ups: 19.7, of every set:
# 7.9), or noise (neighbouring pixels uncorrelated; real photos of every set: 0.34 and up, random
# pixels: about 0).
BLANK_STD = 4.0
NOISE_CORRELATION = 0.15


def featureless(img: np.ndarray) -> bool:
    import cv2

    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    if gray.std() < BLANK_STD:
        return True
    correlation = []
    for a, b in ((gray[:, :-1], gray[:, 1:]), (gray[:-1], gray[1:])):  # each pixel and its right / lower neighbour
        a, b = a - a.mean(), b - b.mean()
        correlation.append(float((a * b).sum() / max(float(np.sqrt((a * a).sum() * (b * b).sum())), 1e-6)))
    return min(correlation) < NOISE_CORRELATION


def load_enrolment_images(paths: list[str], existing: dict[str, str], skip_blank: bool = True
                          ) -> tuple[list, list[str], list[Path], dict, dict[str, int]]:
    """Readable, large-enough, non-blank, non-duplicate images -> (images, perceptual-hash keys,
    paths, report of the skipped ones, {brand: images already in the gallery under it}).
    `paths`: the images (`image_inputs`); `existing`: the gallery's keys and the brand each
    belongs to; `skip_blank`: skip `featureless` images (with --detect-badge the detector judges
    the photo instead: a blank one has no badge, and is reported so)."""
    from stream_pipeline.training.classifier.dataset import MIN_SIDE_PX, PHASH_MAX_DISTANCE, read_image

    paths = [Path(p) for p in paths]
    report = {"unreadable": [], "tiny": [], "blank": [], "duplicates": [], "already_enrolled": []}
    held_as: Counter = Counter()
    images, keys, kept, md5s = [], [], [], set()
    known = [(k, b) for k, b in existing.items() if k]
    held = np.array([int(k, 16) for k, _ in known], np.uint64)
    held_brands = [b for _, b in known]
    taken = np.zeros(0, np.uint64)
    for path in paths:
        img = read_image(path)
        if img is None:
            report["unreadable"].append(str(path))
            continue
        if min(img.shape[:2]) < MIN_SIDE_PX:
            report["tiny"].append(str(path))
            continue
        if skip_blank and featureless(img):
            report["blank"].append(str(path))
            continue
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        key = image_key(img)
        ph = int(key, 16)
        if md5 in md5s or (len(taken) and _hamming(taken, ph).min() <= PHASH_MAX_DISTANCE):
            report["duplicates"].append(str(path))
            continue
        if len(held):
            distance = _hamming(held, ph)
            if distance.min() <= PHASH_MAX_DISTANCE:
                report["already_enrolled"].append(str(path))
                held_as[held_brands[int(distance.argmin())]] += 1
                continue
        md5s.add(md5)
        taken = np.append(taken, np.uint64(ph))
        images.append(img)
        keys.append(key)
        kept.append(path)
    return images, keys, kept, report, dict(held_as)


def _crop_badges(images: list, paths: list[Path], report: dict, clf) -> tuple[list, list[int]]:
    """The most confident badge of each photo, found as `detect-logos` finds it (whole-image
    passes, the COCO vehicles' crops and tiles, fused; vehicles skipped without ../shared) and
    cut as the pipeline cuts it for `clf`."""
    from stream_pipeline.brands.logo_detector import LogoDetector
    from stream_pipeline.brands.photo import VehicleFinder, detect_in_photo
    from stream_pipeline.brands.recognizer import crop
    from stream_pipeline.core.config import BrandsConfig
    from stream_pipeline.core.paths import resolve_model_path

    cfg = BrandsConfig()
    detector = LogoDetector.load(resolve_model_path(cfg.logo_detector))
    try:
        vehicles = VehicleFinder()
    except UserError as exc:  # ModelError included: no ../shared, whole-image passes only
        log.warning("no vehicle detector (%s): whole-image passes only", exc)
        vehicles = None
    crops, kept = [], []
    report["no_badge_found"] = []
    for i, img in enumerate(images):
        found = detect_in_photo(detector, img, vehicles)
        if len(found) == 0:
            report["no_badge_found"].append(str(paths[i]))
            continue
        box = found.xyxy[0]  # sorted by fused score
        badge, _ = crop(img, box, clf.badge_margin(float(box[2] - box[0])))
        if badge.size:
            crops.append(badge)
            kept.append(i)
    return crops, kept


def _load_or_start(path: Path):
    """(the gallery at `path`, False), or (the shipped one to start it from, True). Writes nothing:
    a failed enroll leaves no gallery, and no folder, behind."""
    from stream_pipeline.brands.gallery import Gallery

    if path.is_file():
        return Gallery.load(path), False
    shipped = shipped_gallery_path()
    if not shipped.is_file():
        raise UserError(f"no gallery at {path} and no shipped gallery at {shipped} to start it from")
    return Gallery.load(shipped), True


def _check_can_write(path: Path) -> None:
    """Said before the models load: a gallery that cannot be written, or created."""
    from stream_pipeline.brands.gallery import Gallery

    Gallery.check_writable(path)
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise UserError(f"cannot create gallery {path}: a file is in the way (not a folder): {existing}")


@contextmanager
def _gallery_lock(path: Path):
    """Exclusive lock on `<gallery>.lock` around one load-change-save: two commands changing one
    gallery at once would each save their own copy, and one brand would be lost. The second waits."""
    from stream_pipeline.core.locks import acquire

    lock = Path(f"{path}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = acquire(lock, on_wait=lambda: log.info(
            "%s is being changed by another command: waiting for it to finish", path))
    except OSError as exc:
        raise UserError(f"cannot write gallery {path}: {lock}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


# Mean similarity from which images matched to another brand are taken to show that brand.
# Close-ups of a brand against its own references: 0.74-0.98 (mean per brand, 33 brands, 10
# photos each); of a brand new to the gallery against the brand they are drawn to: 0.44-0.68
# (lancia photos read as chrysler: 0.68), which is a look-alike, not a mistake.
LOOK_ALIKE_SIMILARITY = 0.75


def _look_alike(gallery, embeddings, brand: str) -> dict | None:
    """The other brand that most of the images already match closely before enrolment (a wrong
    folder, another name of a brand the gallery has): more than half of them, at a mean
    similarity of LOOK_ALIKE_SIMILARITY or more; else None."""
    from stream_pipeline.core.types import UNKNOWN_BRAND

    if not len(gallery.brand_names):  # every brand removed: nothing to look like
        return None
    preds = gallery.match(embeddings)
    names = Counter(p.brand for p in preds if p.brand not in (UNKNOWN_BRAND, brand))
    if not names:
        return None
    other, n = names.most_common(1)[0]
    if 2 * n <= len(preds):
        return None
    similarity = float(np.mean([p.confidence for p in preds if p.brand == other]))
    if similarity < LOOK_ALIKE_SIMILARITY:
        return None
    return {"brand": other, "images": n, "similarity": round(similarity, 3)}


def _held_as_text(held_as: dict) -> str:
    """' (in the gallery as bmw 12)': which brands already hold the skipped images."""
    return (" (in the gallery as " + ", ".join(f"{b} {n}" for b, n in sorted(held_as.items())) + ")") if held_as else ""


def cmd_enroll(args) -> int:
    from stream_pipeline.brands.classifier import BrandClassifier
    from stream_pipeline.brands.gallery import check_slug
    from stream_pipeline.training.classifier.dataset import PHASH_MAX_DISTANCE, image_inputs, no_images_in

    brand = check_slug(args.brand)
    path = writable_gallery_path(args)
    inputs = image_inputs(args.images)  # a missing path stops here, before the models load
    _check_can_write(path)
    gallery, _ = _load_or_start(path)  # a damaged gallery is said first (exit 4)
    if not inputs:
        raise UserError(f"nothing to enrol for {brand}: {no_images_in(args.images)}")
    clf = BrandClassifier.load(Path(args.model_dir) if args.model_dir else None)
    clf.use_gallery(gallery)  # refuses a gallery embedded by another model
    images, keys, paths, report, held_as = load_enrolment_images(
        inputs, dict(zip(gallery.keys.tolist(), gallery.brands.tolist())), skip_blank=not args.detect_badge)
    if args.detect_badge and images:
        images, idx = _crop_badges(images, paths, report, clf)
        keys, paths = [keys[i] for i in idx], [paths[i] for i in idx]
    if not images:
        raise _nothing_to_enrol(brand, report, held_as)
    embeddings = clf.embed(images)
    look_alike = _look_alike(gallery, embeddings, brand)
    seen = set(gallery.keys.tolist())
    # Embedding takes seconds: the gallery is read again, changed and saved under the lock (another
    # command may have saved it meanwhile), and nothing is created before this point.
    with _gallery_lock(path):
        gallery, created = _load_or_start(path)
        clf.use_gallery(gallery)
        added = np.array([int(k, 16) for k in gallery.keys.tolist() if k and k not in seen], np.uint64)
        fresh = [i for i, k in enumerate(keys) if not len(added) or _hamming(added, int(k, 16)).min() > PHASH_MAX_DISTANCE]
        report["already_enrolled"] += [str(paths[i]) for i in range(len(keys)) if i not in fresh]  # by that command
        images, keys = [images[i] for i in fresh], [keys[i] for i in fresh]
        if not images:
            raise _nothing_to_enrol(brand, report, held_as)
        before = _enrol(gallery, brand, embeddings[fresh], keys)
        gallery.save(path)
    if look_alike:
        log.warning("%d of %d images match %s already in the gallery (similarity %.2f): check that they show %s; "
                    "enrolled anyway", look_alike["images"], len(images), look_alike["brand"],
                    look_alike["similarity"], brand)
    result = {"brand": brand, "gallery": str(path), "created": created, "enrolled": len(images),
              "references_before": before, "references_now": int((gallery.brands == brand).sum()),
              "skipped": {k: v for k, v in report.items() if v}, "already_enrolled_as": held_as,
              "look_alike": look_alike}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{brand}: enrolled {len(images)} image(s) into {path}"
              f"{' (created from the shipped gallery)' if created else ''}; "
              f"{result['references_now']} references now")
        for what, items in result["skipped"].items():
            held = _held_as_text(held_as) if what == "already_enrolled" else ""
            print(f"  skipped, {what.replace('_', ' ')}{held}: {len(items)}: {', '.join(items[:5])}"
                  f"{' ...' if len(items) > 5 else ''}")
    return 0


def _nothing_to_enrol(brand: str, report: dict, held_as: dict) -> UserError:
    reasons = ", ".join(f"{k.replace('_', ' ')} {len(v)}" + (_held_as_text(held_as) if k == "already_enrolled" else "")
                        for k, v in report.items() if v)
    return UserError(f"nothing to enrol for {brand}: {sum(len(v) for v in report.values())} input(s) skipped ({reasons})")


def _enrol(gallery, brand: str, embeddings: np.ndarray, keys: list[str]) -> int:
    """Add the brand's references; -> how many it had before."""
    before = int((gallery.brands == brand).sum())
    if not before:  # a new brand that looks like another name of one the gallery has
        near = sorted(b for b in gallery.brand_names if b.startswith(brand + "-") or brand.startswith(b + "-"))
        if near:
            log.warning("the gallery already has %s; %r will be a separate brand", ", ".join(near), brand)
    gallery.add(brand, embeddings, "enrolled", keys)
    return before


def cmd_gallery(args) -> int:
    from stream_pipeline.brands.gallery import Gallery, check_slug

    path = gallery_path(args)
    if args.action == "list":
        gallery = Gallery.load(path)
        rows = gallery.summary()
        if args.brand:
            brand = check_slug(args.brand)
            rows = [row for row in rows if row["brand"] == brand]
            if not rows:
                raise UserError(f"brand {brand!r} is not in {path}")
        if args.json:
            non_badges = len(gallery.negatives) if gallery.negatives is not None else 0
            print(json.dumps({"gallery": str(path), "threshold": gallery.threshold, "scoring": gallery.scoring,
                              "size_thresholds": gallery.size_thresholds, "non_badges": non_badges,
                              "non_badge_margin": gallery.negative_margin, "brands": rows}))
        else:
            bands = "".join(f", badges from {w} px {t:.3f}" for w, t in gallery.size_thresholds)
            # a gallery made before non-badges existed lets enrolled brands take lettering and blanks
            check = (f"; non-badge check: {len(gallery.negatives)} references, margin {gallery.negative_margin:+.3f}"
                     if gallery.negatives is not None and gallery.negative_margin is not None
                     else "; no non-badge check (built before it, or with --no-negatives)")
            print(f"{path}: {len(gallery.brand_names)} brands, {len(gallery.brands)} references; "
                  + (f"thresholds: whole photos {gallery.threshold:.3f}{bands}" if bands
                     else f"threshold {gallery.threshold:.3f}") + check)
            for row in rows:
                enrolled = f" ({row['enrolled']} enrolled)" if row["enrolled"] else ""
                print(f"  {row['brand']:<20} {row['references']:>4} references{enrolled}")
        return 0
    if not args.brand:
        raise UserError("gallery remove needs a BRAND")
    brand = check_slug(args.brand)
    path = writable_gallery_path(args)
    Gallery.check_writable(path)
    if brand not in Gallery.load(path).brand_names:  # said without taking the lock (nor creating its file)
        raise UserError(f"brand {brand!r} is not in {path}")
    with _gallery_lock(path):  # as enroll: a change saved meanwhile is kept
        gallery = Gallery.load(path)
        removed = gallery.remove(brand)
        if not removed:
            raise UserError(f"brand {brand!r} is not in {path}")
        gallery.save(path)
    print(f"{brand}: removed {removed} references from {path}")
    return 0


def cmd_benchmark_gallery(args) -> int:
    """Time a gallery lookup per crop at N references (the shipped gallery's brands, its
    references resampled to N), crops one at a time as the brand stage sends small batches."""
    import time

    import numpy as np

    from stream_pipeline.brands.gallery import Gallery

    shipped = Gallery.load(gallery_path(args))
    rng = np.random.default_rng(0)
    idx = rng.choice(len(shipped.brands), size=args.references, replace=args.references > len(shipped.brands))
    noise = rng.normal(0, 0.05, size=(args.references, shipped.embeddings.shape[1])).astype(np.float32)
    g = Gallery(shipped.embeddings[idx] + noise, shipped.brands[idx], shipped.origins[idx], shipped.threshold,
                shipped.model_digest, top_k=shipped.top_k, size_thresholds=shipped.size_thresholds,
                scoring=shipped.scoring, negatives=shipped.negatives, negative_margin=shipped.negative_margin)
    # queries near enrolled brands' references too, so the non-badge check is part of the timing
    queries = shipped.embeddings[rng.choice(len(shipped.brands), size=args.batch)] + 0.05
    widths = [48] * args.batch
    g.match(queries, widths=widths)  # warm-up
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        g.match(queries, widths=widths)
        runs += 1
    per_crop_ms = (time.perf_counter() - t0) / (runs * args.batch) * 1000
    result = {"references": args.references, "brands": len(g.brand_names), "batch": args.batch,
              "ms_per_crop": round(per_crop_ms, 4)}
    print(json.dumps(result) if args.json else
          f"gallery lookup: {per_crop_ms:.3f} ms per crop ({args.references} references, "
          f"{len(g.brand_names)} brands, batches of {args.batch})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enroll", help="add a brand (or more references to one) to the gallery, without retraining")
    p.add_argument("brand", help="brand slug, as it will appear in events (e.g. alfa-romeo)")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="badge photos, or folders of them")
    p.add_argument("--gallery", default=None, metavar="FILE",
                   help="gallery file (created from the shipped one if missing; default: brands.gallery of the config)")
    p.add_argument("--config", default=None, help="YAML configuration naming brands.gallery")
    p.add_argument("--detect-badge", action="store_true",
                   help="the photos show vehicles: find the badge with the logo detector first")
    p.add_argument("--model-dir", default=None, help="classifier folder (default: models/brand_classifier)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("gallery", help="list the brands of a gallery, or remove one")
    p.add_argument("action", choices=["list", "remove"])
    p.add_argument("brand", nargs="?", default=None)
    p.add_argument("--gallery", default=None, metavar="FILE")
    p.add_argument("--config", default=None, help="YAML configuration naming brands.gallery")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gallery)

    p = sub.add_parser("benchmark-gallery", help="time a gallery lookup per crop at N references")
    p.add_argument("--references", type=int, default=1000)
    p.add_argument("--batch", type=int, default=1, help="crops per lookup")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--gallery", default=None, metavar="FILE")
    p.add_argument("--config", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_benchmark_gallery)
