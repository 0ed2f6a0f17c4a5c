"""Brand dataset: name mapping, folder validation, near-duplicate grouping, split manifest.

Everything here works on paths relative to the shared data folder so the manifest
(`models/brand_classifier/split_manifest.csv`) is portable. No TensorFlow import.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stream_pipeline.brands.classifier import BADGE_MARGIN, badge_margin
from stream_pipeline.core.errors import UserError
from stream_pipeline.training.grouping import UnionFind

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
MIN_SIDE_PX = 16  # smaller images are reported as "tiny" and skipped
PHASH_MAX_DISTANCE = 6  # Hamming distance (of 64 bits) under which two images are near-duplicates
CROP_MARGIN = BADGE_MARGIN  # margin on each side of a badge box cut out (badge_margin: more for small ones)

# Spellings seen in the data sets -> catalogue slug (after lower-casing, spaces/underscores -> '-').
SLUG_ALIASES = {
    "mercedes": "mercedes-benz",
    "mercedes-benz": "mercedes-benz",
    "benz": "mercedes-benz",
    "vw": "volkswagen",
    "range-rover": "land-rover",
    "landrover": "land-rover",
    "rollsroyce": "rolls-royce",
    "chevy": "chevrolet",
    "citroën": "citroen",
    "skoda-auto": "skoda",
    "škoda": "skoda",
    "alfa": "alfa-romeo",
    "alfaromeo": "alfa-romeo",
    "aston-martin": "aston-martin",
    "vauxhall-opel": "opel",
}

# The 10 brands of the original study (logos-seed), as slugs.
ORIGINAL_BRANDS = (
    "bmw", "ferrari", "fiat", "ford", "jaguar", "kia", "mercedes-benz", "opel", "renault", "volkswagen",
)


def _normalise(name: str) -> str:
    text = name.strip().lower().replace("_", "-").replace(" ", "-")
    return re.sub(r"-+", "-", text)


def load_catalogue(shared: Path) -> dict[str, Path]:
    """slug -> logo PNG path, from data/logo-catalogue/data.json."""
    folder = shared / "data" / "logo-catalogue"
    data_file = folder / "data.json"
    if not data_file.is_file():
        raise UserError(f"logo catalogue not found: {data_file}")
    out: dict[str, Path] = {}
    for entry in json.loads(data_file.read_text()):
        slug = entry["slug"]
        png = folder / f"{slug}.png"
        if png.is_file():
            out[slug] = png
    return out


class NameMapper:
    """Maps a brand spelling (`Mercedes`, `VW`, `range-rover`) to a catalogue slug."""

    def __init__(self, slugs: set[str], names: dict[str, str] | None = None):
        self.slugs = set(slugs)
        self.by_name = {_normalise(k): v for k, v in (names or {}).items()}

    @classmethod
    def from_shared(cls, shared: Path) -> "NameMapper":
        data = json.loads((shared / "data" / "logo-catalogue" / "data.json").read_text())
        return cls({e["slug"] for e in data}, {e["name"]: e["slug"] for e in data})

    def __call__(self, name: str) -> str | None:
        key = _normalise(name)
        # folder copies carry a numeric suffix (`honda 1`, `smart 2` in logos-closeup)
        keys = [key] + ([re.sub(r"-\d+$", "", key)] if re.search(r"-\d+$", key) else [])
        for k in keys:
            for candidate in (SLUG_ALIASES.get(k), k, self.by_name.get(k), k.replace("-", "")):
                if candidate and candidate in self.slugs:
                    return candidate
        return None


# ----------------------------------------------------------------------------- hashing

def phash64(gray: np.ndarray) -> int:
    """64-bit DCT perceptual hash (same construction as imagehash.phash, in OpenCV)."""
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low)
    return int(np.packbits(bits).view(">u8")[0])


def group_near_duplicates(hashes: list[int], max_distance: int = PHASH_MAX_DISTANCE,
                          links: list[tuple[int, int]] | None = None) -> list[int]:
    """Union-find over items whose hashes differ by <= max_distance bits (plus explicit links).

    Returns a group id per item (the smallest index in its group).
    """
    n = len(hashes)
    sets = UnionFind(n)
    arr = np.array(hashes, dtype=np.uint64)
    for i in range(n - 1):
        dist = np.bitwise_count(arr[i + 1:] ^ arr[i])
        for j in np.nonzero(dist <= max_distance)[0]:
            sets.union(i, i + 1 + int(j))
    for a, b in links or []:
        sets.union(a, b)
    return sets.groups()


# ----------------------------------------------------------------------------- folder validation

@dataclass
class FolderReport:
    root: str
    brands: dict[str, int] = field(default_factory=dict)  # slug -> usable images
    folder_to_slug: dict[str, str] = field(default_factory=dict)
    unmapped_folders: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    tiny: list[str] = field(default_factory=list)
    exact_duplicates: list[list[str]] = field(default_factory=list)
    near_duplicate_groups: list[list[str]] = field(default_factory=list)
    cross_brand_duplicates: list[list[str]] = field(default_factory=list)
    skipped_non_images: list[str] = field(default_factory=list)
    too_few: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)  # usable: {"path", "brand", "group", "phash"}

    def summary(self) -> dict:
        return {
            "root": self.root,
            "usable_images": len(self.images),
            "brands": dict(sorted(self.brands.items())),
            "folder_to_slug": self.folder_to_slug,
            "unmapped_folders": self.unmapped_folders,
            "unreadable": self.unreadable,
            "tiny": self.tiny,
            "exact_duplicates": self.exact_duplicates,
            "near_duplicate_groups": self.near_duplicate_groups,
            "cross_brand_duplicates": self.cross_brand_duplicates,
            "skipped_non_images": self.skipped_non_images,
            "brands_with_too_few_images": self.too_few,
        }


def read_image(path: Path) -> np.ndarray | None:
    """BGR uint8 image, upright as `cv2.imread` shows it (EXIF orientation applied), or None if the
    file cannot be read or decoded, a truncated JPEG included (alpha composited on white)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:  # no permission, a dangling link: unreadable like an undecodable file
        return None
    if data.size == 0:
        return None
    # imdecode, unlike imread, refuses a truncated JPEG instead of returning its grey remainder
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.dtype != np.uint8:
        # 16-bit (and alpha with it) by the type's full scale, as imread does: a 16-bit alpha
        # divided by 255 made opaque pixels 257 times opaque
        top = float(np.iinfo(img.dtype).max) if img.dtype.kind in "iu" else max(1.0, float(np.nanmax(img)))
        img = np.clip(np.rint(img.astype(np.float32) * (255.0 / top)), 0, 255).astype(np.uint8)
    if img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        img = (img[:, :, :3].astype(np.float32) * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    return _upright(img, data)


# EXIF orientation -> the flips and turns that show the stored pixels upright (a phone's portrait
# photo is stored sideways with orientation 6); IMREAD_UNCHANGED ignores the tag, imread does not
_ORIENTATION = {
    2: lambda im: im[:, ::-1],
    3: lambda im: im[::-1, ::-1],
    4: lambda im: im[::-1],
    5: lambda im: im.swapaxes(0, 1),
    6: lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
    7: lambda im: im.swapaxes(0, 1)[::-1, ::-1],
    8: lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def _upright(img: np.ndarray, data: np.ndarray) -> np.ndarray:
    turn = _ORIENTATION.get(_exif_orientation(data.tobytes()))
    return np.ascontiguousarray(turn(img)) if turn else img


def _exif_orientation(raw: bytes) -> int:
    """The EXIF orientation tag, 1 when none. A JPEG's is read from its APP1 segment, not through
    Pillow's open, which refuses photos over 179 MP and warns on stderr over 89 MP (phones take
    108- and 200-MP photos)."""
    from PIL import Image

    exif = Image.Exif()
    try:
        if raw[:2] == b"\xff\xd8":
            i = 2
            while i + 4 <= len(raw) and raw[i] == 0xFF and raw[i + 1] not in (0xDA, 0xD9):  # up to the image data
                if raw[i + 1] == 0xFF:  # fill byte
                    i += 1
                    continue
                end = i + 2 + int.from_bytes(raw[i + 2:i + 4], "big")
                if raw[i + 1] == 0xE1 and raw[i + 4:i + 10] == b"Exif\0\0":
                    exif.load(raw[i + 4:end])
                    break
                i = end
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(raw)) as header:  # reads the header only
                    exif = header.getexif()
        return int(exif.get(0x0112, 1))
    except Exception:  # EXIF Pillow cannot parse says nothing of orientation: the pixels are read already
        return 1


def listed_as_image(path: Path) -> bool:
    """A folder entry to read as an image file: a file, or a dangling link (read, and reported as
    unreadable, rather than skipped unseen)."""
    return path.is_file() or (path.is_symlink() and not path.exists())


def list_images(folder: Path) -> list[Path]:
    """The images of one folder (IMAGE_EXTS, any case), sorted; sub-folders are not searched. What
    classify, detect-logos and enroll take from a folder."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS and listed_as_image(p))


def image_inputs(items: list[str]) -> list[str]:
    """Images named on a command line, as given (outputs name them as the user did): a file as
    it is, whatever its name, a folder as its images (`list_images`). A missing path stops with
    one line, before any model loads; an empty result is the caller's to word (`no_images_in`)."""
    found: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += [str(f) for f in list_images(path)]
        elif path.exists() or path.is_symlink():  # a dangling link is reported unreadable when read
            found.append(item)
        else:
            raise UserError(f"image not found: {item}")
    return found


def no_images_in(items: list[str]) -> str:
    return (f"no image files ({', '.join(sorted(IMAGE_EXTS))}) in {', '.join(items)} "
            "(sub-folders are not searched)")


def validate_brand_folder(root: Path, mapper: NameMapper | None = None, min_images: int = 1,
                          max_distance: int = PHASH_MAX_DISTANCE, strict_names: bool = False) -> FolderReport:
    """Scan a folder-per-brand image set: map folder names to slugs, find unreadable and tiny
    files, exact and near duplicates (within and across brands)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"not a folder: {root}")
    report = FolderReport(root=str(root))
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"{root} has no brand sub-folders (expected <root>/<brand>/<image>)")
    entries: list[tuple[str, str, int, str]] = []  # rel path, slug, phash, md5
    for folder in folders:
        slug = mapper(folder.name) if mapper else None
        if slug is None:
            if mapper is not None and strict_names:
                report.unmapped_folders.append(folder.name)
                continue
            if mapper is not None:
                report.unmapped_folders.append(folder.name)
            slug = _normalise(folder.name)
        report.folder_to_slug[folder.name] = slug
        for path in sorted(folder.rglob("*")):
            if not listed_as_image(path):
                continue
            rel = str(path.relative_to(root))
            if path.suffix.lower() not in IMAGE_EXTS:
                report.skipped_non_images.append(rel)
                continue
            img = read_image(path)
            if img is None:
                report.unreadable.append(rel)
                continue
            if min(img.shape[:2]) < MIN_SIDE_PX:
                report.tiny.append(rel)
                continue
            md5 = hashlib.md5(path.read_bytes()).hexdigest()
            entries.append((rel, slug, phash64(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)), md5))
    by_md5: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(entries):
        by_md5[e[3]].append(i)
    links = []
    for idx in by_md5.values():
        if len(idx) > 1:
            report.exact_duplicates.append([entries[i][0] for i in idx])
            links += [(idx[0], j) for j in idx[1:]]
    groups = group_near_duplicates([e[2] for e in entries], max_distance, links)
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    for idx in members.values():
        if len(idx) > 1:
            report.near_duplicate_groups.append([entries[i][0] for i in idx])
            if len({entries[i][1] for i in idx}) > 1:
                report.cross_brand_duplicates.append([entries[i][0] for i in idx])
    counts = Counter()
    for i, (rel, slug, ph, _md5) in enumerate(entries):
        report.images.append({"path": rel, "brand": slug, "group": groups[i], "phash": ph})
        counts[slug] += 1
    report.brands = dict(counts)
    report.too_few = sorted(b for b, n in counts.items() if n < min_images)
    return report


# ----------------------------------------------------------------------------- the project data set

# Photo sets by domain: what a badge looks like on the road (street / dash-cam photos), close-up
# photos of real badges on cars, and web photos (the original study's set: merchandise, decals,
# studio shots). The road decides what a brand looks like: see TrainSampler's domain shares.
STREET_SOURCES = ("logo-boxes", "logo-boxes-flickr", "street-badges")
CLOSEUP_SOURCES = ("logos-closeup",)
FOLDER_SOURCES = ("logos-seed", "logos-extra", "logos-closeup")
BOX_SOURCES = STREET_SOURCES
DOMAINS = ("street", "closeup", "web")

# Real brands kept out of training entirely: their photos measure unknown-brand rejection and
# enrolment into the gallery (issue 11). Close-up-only brands and street brands, so both kinds of
# photo are tested; buick and koenigsegg (too few photos) are unseen as well.
HELD_OUT_BRANDS = ("chrysler", "daewoo", "dacia", "lancia", "lincoln", "smart")


@dataclass
class Record:
    key: str  # unique id: "<path>" or "<path>#<box index>"
    source: str  # a FOLDER_SOURCES or BOX_SOURCES name, or background
    path: str  # relative to the shared folder
    brand: str  # catalogue slug ("other" for background patches)
    box: tuple[int, int, int, int] | None = None  # x1 y1 x2 y2 pixels in the image
    group: str = ""
    split: str = ""  # train | val | test | unseen (brand has too few images: used for rejection)

    @property
    def domain(self) -> str:
        if self.source in STREET_SOURCES or self.source == "background":
            return "street"
        return "closeup" if self.source in CLOSEUP_SOURCES else "web"


def expand_box(box, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return (max(0, int(round(x1 - margin * w))), max(0, int(round(y1 - margin * h))),
            min(width, int(round(x2 + margin * w))), min(height, int(round(y2 + margin * h))))


def load_record_image(shared: Path, rec: Record, margin: float | None = None) -> np.ndarray:
    """The record's image, or its badge cut as the pipeline cuts one (margin by badge width,
    `badge_margin`, unless given)."""
    img = read_image(shared / rec.path)
    if img is None:
        raise UserError(f"cannot read {shared / rec.path}")
    if rec.box is None:
        return img
    if margin is None:
        margin = badge_margin(rec.box[2] - rec.box[0])
    x1, y1, x2, y2 = expand_box(rec.box, img.shape[1], img.shape[0], margin)
    return img[y1:y2, x1:x2]


def source_photos(shared: Path, name: str) -> dict[str, str]:
    """Image file name -> the photo it was cut from, for sets of windows (street-badges'
    `sources.csv`): windows of one photo are linked so they share a split."""
    path = shared / "data" / name / "sources.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {row["window"]: f"{row['repository']}:{row['commit:path'].split(':', 1)[-1]}"
                for row in csv.DictReader(fh)}


def _box_records(shared: Path, name: str, mapper: NameMapper) -> tuple[list[Record], list[str]]:
    folder = shared / "data" / name
    classes = [c.strip() for c in (folder / "classes.txt").read_text().splitlines() if c.strip()]
    slugs = [mapper(c) for c in classes]
    problems = [f"{name}: class '{c}' has no catalogue slug" for c, s in zip(classes, slugs) if s is None]
    records = []
    for label in sorted((folder / "labels").glob("*.txt")):
        images = [p for p in (folder / "images").glob(label.stem + ".*") if p.suffix.lower() in IMAGE_EXTS]
        if not images:
            problems.append(f"{name}: no image for {label.name}")
            continue
        img_path = images[0]
        img = read_image(img_path)
        if img is None:
            problems.append(f"{name}: unreadable {img_path.name}")
            continue
        h, w = img.shape[:2]
        for k, line in enumerate(label.read_text().split("\n")):
            parts = line.split()
            if len(parts) != 5:
                continue
            cls, cx, cy, bw, bh = int(parts[0]), *map(float, parts[1:])
            if cls >= len(slugs) or slugs[cls] is None:
                continue
            box = (int(round((cx - bw / 2) * w)), int(round((cy - bh / 2) * h)),
                   int(round((cx + bw / 2) * w)), int(round((cy + bh / 2) * h)))
            box = (max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3]))
            if box[2] - box[0] < 4 or box[3] - box[1] < 4:
                problems.append(f"{name}: box too small in {label.name} line {k + 1}")
                continue
            rel = str(img_path.relative_to(shared))
            records.append(Record(f"{rel}#{k}", name, rel, slugs[cls], box))
    return records, problems


def build_brand_dataset(shared: Path, min_images: int = 12, seed: int = 1337,
                        n_background: int = 1500,
                        held_out: tuple[str, ...] = HELD_OUT_BRANDS) -> tuple[list[Record], dict]:
    """Collect every labelled image/crop in shared/data, group near-duplicates, split 80/10/10.

    Brands with fewer than `min_images` duplicate-free groups, and the `held_out` brands, are
    marked `unseen` (never trained on: used to measure unknown-brand rejection and enrolment).
    Background (non-logo) patches from the street photos, taken away from any badge box, are
    added with brand `other`.
    """
    mapper = NameMapper.from_shared(shared)
    records: list[Record] = []
    problems: list[str] = []
    for name in FOLDER_SOURCES:
        rep = validate_brand_folder(shared / "data" / name, mapper)
        problems += [f"{name}: unmapped folder {f}" for f in rep.unmapped_folders]
        problems += [f"{name}: unreadable {f}" for f in rep.unreadable]
        problems += [f"{name}: tiny {f}" for f in rep.tiny]
        for item in rep.images:
            records.append(Record(f"data/{name}/{item['path']}", name, f"data/{name}/{item['path']}",
                                  item["brand"]))
    photo_of: dict[str, str] = {}  # shared-relative image path -> source photo
    for name in BOX_SOURCES:
        if not (shared / "data" / name).is_dir():
            problems.append(f"{name}: not in {shared / 'data'} (skipped)")
            continue
        recs, probs = _box_records(shared, name, mapper)
        records += recs
        problems += probs
        for window, photo in source_photos(shared, name).items():
            photo_of[f"data/{name}/images/{window}"] = photo

    # Perceptual hashes of the badge crop, plus links between boxes of one photo and between
    # windows cut from one photo. Always at CROP_MARGIN, as when the shipped split was built:
    # hashes of the pipeline's wider small-badge crops would group, and so split, differently.
    hashes, links, first_of_image = [], [], {}
    for i, rec in enumerate(records):
        img = load_record_image(shared, rec, CROP_MARGIN)
        hashes.append(phash64(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)))
        if rec.box is not None:
            photo = photo_of.get(rec.path, rec.path)
            if photo in first_of_image:
                links.append((first_of_image[photo], i))
            else:
                first_of_image[photo] = i
    group_ids = group_near_duplicates(hashes, PHASH_MAX_DISTANCE, links)
    for rec, g in zip(records, group_ids):
        rec.group = f"g{g}"

    groups: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        groups[rec.group].append(rec)
    group_count = Counter()
    for g, members in groups.items():
        for brand in {m.brand for m in members}:
            group_count[brand] += 1
    classes = sorted(b for b, n in group_count.items() if n >= min_images and b not in held_out)
    unseen = sorted(b for b, n in group_count.items() if n < min_images or b in held_out)

    # Stratified split by (brand, domain) of each group's first member, fixed seed.
    rng = random.Random(seed)
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for g in sorted(groups, key=lambda s: int(s[1:])):
        first = groups[g][0]
        strata[(first.brand, first.domain)].append(g)
    split_of: dict[str, str] = {}
    for (brand, _domain), glist in sorted(strata.items()):
        if brand in unseen:
            for g in glist:
                split_of[g] = "unseen"
            continue
        rng.shuffle(glist)
        n = len(glist)
        n_test = max(1, round(0.1 * n)) if n >= 5 else 0
        n_val = max(1, round(0.1 * n)) if n >= 5 else 0
        for k, g in enumerate(glist):
            split_of[g] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    for rec in records:
        rec.split = split_of[rec.group]
        if rec.brand in unseen:
            rec.split = "unseen"
    # A photo with badges of a trained and a never-trained brand (e.g. acura beside lincoln): its
    # trained-brand crops are dropped, so no photo is both trained on and used as "unknown".
    unseen_groups = {rec.group for rec in records if rec.split == "unseen"}
    mixed = [rec for rec in records if rec.group in unseen_groups and rec.split != "unseen"]
    records = [rec for rec in records if not (rec.group in unseen_groups and rec.split != "unseen")]
    problems += [f"dropped {rec.key} ({rec.brand}): same photo as a never-trained brand" for rec in mixed]
    records += _background_records(shared, records, n_background, seed)
    conflicts = [g for g, m in groups.items() if len({r.brand for r in m}) > 1]
    catalogue = catalogue_split(sorted(load_catalogue(shared)), classes, unseen, seed)
    info = {
        "seed": seed,
        "min_images": min_images,
        "phash_max_distance": PHASH_MAX_DISTANCE,
        "crop_margin": CROP_MARGIN,
        "classes": classes,
        "unseen_brands": unseen,
        "held_out_brands": sorted(b for b in held_out if b in group_count),
        "catalogue": catalogue,
        "groups": len(groups),
        "near_duplicate_groups": sum(1 for m in groups.values() if len(m) > 1),
        "images_in_duplicate_groups": sum(len(m) for m in groups.values() if len(m) > 1),
        "cross_brand_groups": len(conflicts),
        "problems": problems,
        "counts": _counts(records),
    }
    return records, info


def catalogue_split(slugs: list[str], classes: list[str], unseen: list[str], seed: int) -> dict:
    """Split catalogue brands outside the classes into disjoint sets: logos used to train the
    `other` class, to calibrate on (val), and brands held out to measure unknown rejection.

    Sub-brands that wear a class's badge (`mercedes-amg`, `bmw-m`, `audi-sport`, ...) are left out.
    """
    look_alike = sorted(s for s in slugs if s not in classes and (
        any(s.startswith(c + "-") for c in classes) or any(s.startswith(c.split("-")[0] + "-") for c in classes)))
    pool = sorted(s for s in slugs if s not in classes and s not in look_alike and s not in unseen)
    random.Random(seed + 2).shuffle(pool)
    n_test, n_val = round(0.25 * len(pool)), round(0.15 * len(pool))
    return {
        "classes": [s for s in classes if s in slugs],
        "other_train": sorted(pool[n_test + n_val:]),
        "other_val": sorted(pool[n_test:n_test + n_val]),
        "unknown_test": sorted(pool[:n_test] + [s for s in unseen if s in slugs]),
        "excluded_look_alikes": look_alike,
    }


def _background_records(shared: Path, records: list[Record], n: int, seed: int) -> list[Record]:
    """Random non-logo patches of street photos (kept away from badge boxes), split as their photo."""
    rng = random.Random(seed + 1)
    by_image: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        if rec.source == "logo-boxes" and rec.split in ("train", "val", "test"):
            by_image[rec.path].append(rec)
    paths = sorted(by_image)
    out = []
    tries = 0
    while len(out) < n and tries < n * 20 and paths:
        tries += 1
        path = rng.choice(paths)
        boxes = [r.box for r in by_image[path]]
        size = rng.randint(16, 96)
        x1, y1 = rng.randint(0, 480 - size), rng.randint(0, 480 - size)
        box = (x1, y1, x1 + size, y1 + int(size * rng.uniform(0.7, 1.3)))
        box = (box[0], box[1], box[2], min(480, box[3]))
        if any(not (box[2] < b[0] - 4 or box[0] > b[2] + 4 or box[3] < b[1] - 4 or box[1] > b[3] + 4)
               for b in boxes):
            continue
        out.append(Record(f"{path}#bg{len(out)}", "background", path, "other", box,
                          f"bg:{path}", by_image[path][0].split))
    return out


def _counts(records: list[Record]) -> dict:
    table: dict[str, Counter] = defaultdict(Counter)
    for rec in records:
        table[rec.brand][rec.split] += 1
    return {b: dict(c) for b, c in sorted(table.items())}


MANIFEST_FIELDS = ["path", "box", "brand", "split", "group", "source"]


def write_manifest(path: Path, records: list[Record]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_FIELDS)
        for r in records:
            box = "" if r.box is None else " ".join(map(str, r.box))
            writer.writerow([r.path, box, r.brand, r.split, r.group, r.source])


def read_manifest(path: Path) -> list[Record]:
    if not Path(path).is_file():
        raise UserError(f"split manifest not found: {path} (run `stream-pipeline build-brand-dataset`)")
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            box = tuple(int(v) for v in row["box"].split()) if row["box"] else None
            key = row["path"] if box is None else f"{row['path']}#{row['box'].replace(' ', ',')}"
            out.append(Record(key, row["source"], row["path"], row["brand"], box, row["group"], row["split"]))
    return out
