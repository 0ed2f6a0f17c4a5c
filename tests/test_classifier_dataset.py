"""Brand dataset builder and folder validation (tiny fixtures; no model, no training)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_pipeline.core.errors import UserError
from stream_pipeline.core.paths import PROJECT_ROOT, shared_dir
from stream_pipeline.training.classifier.dataset import (
    NameMapper,
    group_near_duplicates,
    phash64,
    read_manifest,
    validate_brand_folder,
)

MODEL_DIR = PROJECT_ROOT / "models" / "brand_classifier"


def _pattern(seed: int, size: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(12, 12, 3), dtype=np.uint8)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)


@pytest.fixture()
def brand_folder(tmp_path: Path) -> Path:
    root = tmp_path / "brands"
    for name in ("Mercedes", "VW", "bmw", "NotABrand"):
        (root / name).mkdir(parents=True)
    cv2.imwrite(str(root / "Mercedes" / "a.jpg"), _pattern(1))
    cv2.imwrite(str(root / "Mercedes" / "b.jpg"), _pattern(2))
    # near duplicate of a.jpg: resized, brighter, re-encoded at low quality
    near = cv2.resize(_pattern(1), (120, 120)).astype(np.int16) + 12
    cv2.imwrite(str(root / "Mercedes" / "a_copy.jpg"), np.clip(near, 0, 255).astype(np.uint8),
                [cv2.IMWRITE_JPEG_QUALITY, 60])
    cv2.imwrite(str(root / "VW" / "c.png"), _pattern(3))
    (root / "VW" / "c_exact.png").write_bytes((root / "VW" / "c.png").read_bytes())
    (root / "VW" / "broken.jpg").write_bytes(b"this is not a jpeg")
    cv2.imwrite(str(root / "bmw" / "tiny.png"), _pattern(4, size=8))
    cv2.imwrite(str(root / "bmw" / "d.jpg"), _pattern(5))
    (root / "bmw" / "notes.txt").write_text("not an image")
    cv2.imwrite(str(root / "NotABrand" / "e.jpg"), _pattern(6))
    return root


def test_name_mapping():
    mapper = NameMapper({"mercedes-benz", "volkswagen", "land-rover", "bmw", "alfa-romeo"},
                        {"Alfa Romeo": "alfa-romeo"})
    assert mapper("Mercedes") == "mercedes-benz"
    assert mapper("VW") == "volkswagen"
    assert mapper("range-rover") == "land-rover"
    assert mapper("BMW") == "bmw"
    assert mapper("Alfa Romeo") == "alfa-romeo"
    assert mapper("alfa_romeo") == "alfa-romeo"
    assert mapper("NotABrand") is None


def test_validate_folder_reports_problems_and_groups_duplicates(brand_folder: Path):
    mapper = NameMapper({"mercedes-benz", "volkswagen", "bmw"})
    report = validate_brand_folder(brand_folder, mapper, min_images=2)
    summary = report.summary()
    assert summary["folder_to_slug"]["Mercedes"] == "mercedes-benz"
    assert summary["folder_to_slug"]["VW"] == "volkswagen"
    assert summary["unmapped_folders"] == ["NotABrand"]
    assert summary["unreadable"] == ["VW/broken.jpg"]
    assert summary["tiny"] == ["bmw/tiny.png"]
    assert summary["skipped_non_images"] == ["bmw/notes.txt"]
    assert summary["exact_duplicates"] == [["VW/c.png", "VW/c_exact.png"]]
    groups = [sorted(g) for g in summary["near_duplicate_groups"]]
    assert ["Mercedes/a.jpg", "Mercedes/a_copy.jpg"] in groups
    assert ["VW/c.png", "VW/c_exact.png"] in groups
    assert len(groups) == 2  # distinct images are not grouped
    by_path = {item["path"]: item for item in report.images}
    assert by_path["Mercedes/a.jpg"]["group"] == by_path["Mercedes/a_copy.jpg"]["group"]
    assert by_path["Mercedes/a.jpg"]["group"] != by_path["Mercedes/b.jpg"]["group"]
    assert summary["brands"]["mercedes-benz"] == 3 and summary["brands"]["volkswagen"] == 2
    assert "bmw" in summary["brands_with_too_few_images"]


def test_import_brands_cli(brand_folder: Path, tmp_path: Path, capsys):
    from stream_pipeline.cli import main

    out = tmp_path / "report.json"
    assert main(["import-brands", str(brand_folder), "--report", str(out), "--min-images", "2"]) == 0
    text = capsys.readouterr().out
    assert "unreadable (1): VW/broken.jpg" in text
    data = json.loads(out.read_text())
    assert data["usable_images"] == 7
    assert main(["import-brands", str(brand_folder), "--strict"]) == 1
    assert main(["import-brands", str(tmp_path / "nope")]) == 2


def test_validate_folder_rejects_empty(tmp_path: Path):
    with pytest.raises(UserError):
        validate_brand_folder(tmp_path)


def test_phash_grouping_is_transitive():
    hashes = [0b0, 0b111, 0b111111, (1 << 64) - 1]
    groups = group_near_duplicates(hashes, max_distance=3)
    assert groups[0] == groups[1] == groups[2] != groups[3]
    assert phash64(cv2.cvtColor(_pattern(9), cv2.COLOR_BGR2GRAY)) == phash64(
        cv2.cvtColor(_pattern(9), cv2.COLOR_BGR2GRAY))


def test_committed_manifest_is_leakage_free():
    records = read_manifest(MODEL_DIR / "split_manifest.csv")
    info = json.loads((MODEL_DIR / "dataset.json").read_text())
    assert len(info["classes"]) >= 35
    splits_of_group = defaultdict(set)
    for r in records:
        splits_of_group[r.group].add(r.split)
    assert all(len(s) == 1 for s in splits_of_group.values()), "a near-duplicate group spans splits"
    per_class = defaultdict(lambda: defaultdict(int))
    for r in records:
        per_class[r.brand][r.split] += 1
    for c in info["classes"]:
        assert per_class[c]["train"] > per_class[c]["test"] >= 1, c
        assert per_class[c]["val"] >= 1, c
    assert set(info["unseen_brands"]).isdisjoint(info["classes"])
    cat = info["catalogue"]
    assert set(cat["unknown_test"]).isdisjoint(cat["other_train"] + cat["other_val"] + info["classes"])
    # paths are relative to the shared folder
    shared = shared_dir(required=False)
    if shared is not None:
        for r in records[:: max(1, len(records) // 50)]:
            assert (shared / r.path).is_file(), r.path


def test_manifest_is_reproducible():
    """Rebuilding the split from ../shared with the committed seed gives the committed manifest."""
    shared = shared_dir(required=False)
    if shared is None:
        pytest.skip("shared data folder not available")
    from stream_pipeline.training.classifier.dataset import build_brand_dataset

    info = json.loads((MODEL_DIR / "dataset.json").read_text())
    records, new_info = build_brand_dataset(shared, min_images=info["min_images"], seed=info["seed"])
    assert new_info["classes"] == info["classes"]
    with open(MODEL_DIR / "split_manifest.csv", newline="") as fh:
        committed = {(row["path"], row["box"]): row["split"] for row in csv.DictReader(fh)}
    rebuilt = {(r.path, "" if r.box is None else " ".join(map(str, r.box))): r.split for r in records}
    assert rebuilt == committed
