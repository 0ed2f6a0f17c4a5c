"""Logo-detector training helpers: split manifest is leakage-free, metrics are right. No training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_pipeline.core.paths import shared_dir
from stream_pipeline.training.logo_detector.common import SPLIT_MANIFEST, Box, Sample
from stream_pipeline.training.logo_detector.evaluate import LOOSE_IOU_THRESHOLD, Matches


def test_matches_perfect_and_missing():
    m = Matches()
    m.add(np.array([[0, 0, 10, 10]], float), np.array([0.9]), np.array([[0, 0, 10, 10]], float))
    m.add(np.zeros((0, 4)), np.zeros(0), np.array([[5, 5, 20, 20]], float))
    assert m.ap50() == pytest.approx(0.5)
    assert m.at(0.5) == {"conf": 0.5, "precision": 1.0, "recall": 0.5, "tp": 1, "fp": 0, "fn": 1}


def test_matches_duplicate_is_false_positive_and_threshold_choice():
    m = Matches()
    gt = np.array([[0, 0, 10, 10]], float)
    m.add(np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], float), np.array([0.9, 0.8, 0.3]), gt)
    assert m.tp == [True, False, False]
    best = m.best_threshold(0.85, 0.9)
    assert best["conf"] == pytest.approx(0.9) and best["recall"] == 1.0 and best["precision"] == 1.0
    assert m.recall_at_precision(0.85)["recall"] == 1.0


def test_loose_matching_counts_a_found_badge_with_a_looser_box():
    # a label with a margin around a 20-px emblem: the detection has IoU 0.4 with it
    gt = np.array([[0, 0, 20, 20]], float)
    pred = np.array([[6, 6, 19, 19]], float)  # 169 / 400 = 0.42
    strict, loose = Matches(), Matches(iou_threshold=LOOSE_IOU_THRESHOLD)
    for m in (strict, loose):
        m.add(pred, np.array([0.8]), gt)
    assert strict.tp == [False] and strict.at(0.5)["recall"] == 0.0
    assert loose.tp == [True] and loose.at(0.5)["recall"] == 1.0


def test_threshold_falls_back_to_max_f1_when_target_unreachable():
    m = Matches()
    gts = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]], float)
    preds = np.array([[0, 0, 10, 10], [100, 0, 110, 10], [20, 0, 30, 10], [40, 0, 50, 10]], float)
    m.add(preds, np.array([0.9, 0.8, 0.7, 0.6]), gts)
    best = m.best_threshold(0.85, 0.9)  # P>=0.85 only at recall 0.25: fall back to max F1
    assert best["conf"] == pytest.approx(0.6) and best["recall"] == 0.75 and best["precision"] == 0.75
    assert "max F1" in best["rule"]


def test_vehicle_crop_contains_badge_and_labels_are_in_crop_pixels():
    from stream_pipeline.training.logo_detector.dataset import crop_labels, vehicle_crops

    s = Sample("x/1.jpg", None, 480, 480, (Box(200, 300, 220, 320, "kia"),))
    [crop] = vehicle_crops(s, vehicles=[[100, 200, 330, 420]])
    assert crop[0] <= 100 and crop[2] >= 330  # the vehicle plus a margin
    [lab] = crop_labels(s, crop)
    assert lab == [200 - crop[0], 300 - crop[1], 220 - crop[0], 320 - crop[1]]
    [fallback] = vehicle_crops(s, vehicles=[])
    assert fallback[0] <= 200 and fallback[2] >= 220 and fallback[1] <= 300 and fallback[3] >= 320
    assert 150 <= fallback[2] - fallback[0] <= 200  # ~9 badge widths


@pytest.mark.skipif(shared_dir(required=False) is None, reason="../shared data not available")
def test_split_manifest_has_no_near_duplicates_across_splits():
    from stream_pipeline.training.logo_detector.dataset import PHASH_THRESHOLD, _phashes, samples_by_split

    manifest = json.loads(SPLIT_MANIFEST.read_text())
    split = samples_by_split()
    assert sum(len(v) for v in split.values()) == sum(manifest["counts"].values())
    names = [name for name, ss in split.items() for _ in ss]
    plain, mirrored = _phashes([s for ss in split.values() for s in ss])
    labels = np.array(names)
    for i in range(len(plain)):
        d = np.minimum((plain[i] != plain).sum(1), (mirrored[i] != plain).sum(1))
        close = (d <= PHASH_THRESHOLD) & (labels != labels[i])
        assert not close.any(), f"near-duplicate across splits: {names[i]} vs {labels[close][:3]}"


@pytest.mark.skipif(shared_dir(required=False) is None, reason="../shared data not available")
def test_badge_swap_replaces_the_badge_in_place():
    """The synthetic 'badge swap' paints out a real labelled badge and puts a catalogue logo of
    another brand in its box: the new label sits on the old badge, the pixels there change, and
    the rest of the photo is left as it was (up to the sensor noise and JPEG added everywhere)."""
    import random

    import cv2

    from stream_pipeline.core.geometry import box_iou
    from stream_pipeline.training.logo_detector.common import load_samples
    from stream_pipeline.training.logo_detector.synth import _load_logo, swap_badges

    sample = next(s for s in load_samples(["logo-boxes"]) if len(s.boxes) == 1 and s.boxes[0].w >= 30)
    image = cv2.imread(str(sample.image))
    badge = sample.boxes[0].xyxy()
    out, boxes = swap_badges(image, [badge], [_load_logo("peugeot")], random.Random(3))

    assert out.shape == image.shape and out.dtype == np.uint8
    [box] = boxes
    assert box_iou([box], [badge])[0, 0] > 0.3
    bx1, by1, bx2, by2 = (int(v) for v in badge)
    inside = np.abs(out[by1:by2, bx1:bx2].astype(int) - image[by1:by2, bx1:bx2]).mean()
    far = np.ones(image.shape[:2], bool)
    pad = int(max(bx2 - bx1, by2 - by1))
    far[max(0, by1 - pad):by2 + pad, max(0, bx1 - pad):bx2 + pad] = False
    outside = np.abs(out.astype(int) - image)[far].mean()
    assert inside > 3 * outside and outside < 8


def test_threshold_prefers_precision_when_it_keeps_half_the_badges():
    m = Matches()
    gts = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(4)], float)
    # three hits, then a false positive, then the fourth hit: P >= 0.85 holds down to recall 0.75
    preds = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [500, 0, 510, 10], [60, 0, 70, 10]], float)
    m.add(preds, np.array([0.9, 0.8, 0.7, 0.6, 0.5]), gts)
    best = m.best_threshold(0.85, 0.9)
    assert best["conf"] == pytest.approx(0.7) and best["recall"] == 0.75 and best["precision"] == 1.0
    assert "precision >= 0.85" in best["rule"]
    # the max-F1 threshold (0.5: recall 1.0, precision 0.8) is what it falls back to below half
    assert m.best_threshold(0.85, 0.9, min_recall=0.8)["conf"] == pytest.approx(0.5)


def test_ship_only_uses_the_runs_own_input_size(tmp_path):
    from stream_pipeline.training.logo_detector.cli import _run_imgsz

    run = tmp_path / "logo416"
    run.mkdir()
    assert _run_imgsz(run) is None  # no run yet: the caller falls back to the default size
    (run / "args.yaml").write_text("task: detect\nimgsz: 416\nbatch: 16\n")
    assert _run_imgsz(run) == 416


@pytest.mark.skipif(shared_dir(required=False) is None, reason="../shared data not available")
def test_windows_of_one_photo_share_a_split_and_every_window_is_split():
    import csv

    manifest = json.loads(SPLIT_MANIFEST.read_text())
    root = shared_dir() / "data" / "street-badges"
    with (root / "sources.csv").open(newline="") as f:
        photo = {row["window"]: row["repository"] + ":" + row["commit:path"] for row in csv.DictReader(f)}
    where: dict[str, set[str]] = {}
    for name in ("train", "val", "test"):
        for key in manifest[name]:
            if key.startswith("street-badges/"):
                where.setdefault(photo[key.split("/", 1)[1]], set()).add(name)
    split_windows = sum(1 for name in ("train", "val", "test") for k in manifest[name] if k.startswith("street-badges/"))
    assert split_windows + len(manifest.get("excluded", [])) == len(photo) == 3003
    assert len(where) > 2700  # several windows per photo for a few photos only
    assert all(len(splits) == 1 for splits in where.values())
    for name in ("val", "test"):  # the new set reaches the held-out splits too
        assert manifest["counts_by_set"][name]["street-badges"] > 300


@pytest.mark.skipif(shared_dir(required=False) is None, reason="../shared data not available")
def test_extend_split_keeps_old_images_and_groups_windows_by_photo():
    from stream_pipeline.training.logo_detector.common import load_samples
    from stream_pipeline.training.logo_detector.dataset import extend_split

    old = [s for s in load_samples(["logo-boxes"])][:30]
    windows = load_samples(["street-badges"])
    by_photo: dict[str, list] = {}
    for w in windows:
        by_photo.setdefault(w.origin, []).append(w)
    multi = [ws for ws in by_photo.values() if len(ws) > 1][:15]
    single = [ws[0] for ws in by_photo.values() if len(ws) == 1][:60]
    new = [w for ws in multi for w in ws] + single
    manifest = {"train": [s.key for s in old[:20]], "val": [s.key for s in old[20:25]], "test": [s.key for s in old[25:]]}
    out = extend_split(old + new, manifest)
    for name in ("train", "val", "test"):
        assert set(manifest[name]) <= set(out[name])  # nothing already split moves
    split_of = {k: name for name in ("train", "val", "test") for k in out[name]}
    assert all(w.key in split_of for w in new)
    for ws in multi:
        assert len({split_of[w.key] for w in ws}) == 1, [w.key for w in ws]
    assert {split_of[w.key] for w in single} == {"train", "val", "test"}


@pytest.mark.skipif(shared_dir(required=False) is None, reason="../shared data not available")
def test_close_range_windows_and_hard_negatives_on_real_windows():
    import random

    from stream_pipeline.training.logo_detector.common import load_samples
    from stream_pipeline.training.logo_detector.dataset import (
        CLOSE_MIN_BADGE_PX,
        _inside_fraction,
        close_window,
        crop_labels,
        hard_negative,
    )

    rng = random.Random(0)
    samples = [s for s in load_samples(["street-badges"])[:400] if len(s.boxes) == 1]
    closes = negatives = 0
    for s in samples:
        [box] = s.boxes
        c = close_window(s, rng)
        if c is None:
            assert max(box.w, box.h) < CLOSE_MIN_BADGE_PX
        else:
            closes += 1
            [lab] = crop_labels(s, c)
            side = c[2] - c[0]
            # the badge is whole and 20-50 % of the window (more when the photo edge caps the window)
            assert _inside_fraction(box, c) > 0.99
            assert max(lab[2] - lab[0], lab[3] - lab[1]) / side >= 0.19
        n = hard_negative(s, [], rng)
        if n is not None:
            negatives += 1
            assert _inside_fraction(box, n) == 0.0 and crop_labels(s, n, min_inside=0.01) == []
    assert closes > 50 and negatives > 0.7 * len(samples)


def test_the_gpu_script_trains_with_the_projects_recipe():
    """gpu_train.py runs where this project is not installed, so it keeps its own copy of the
    augmentation; a change to train.py's must reach it."""
    from stream_pipeline.training.logo_detector import gpu_train, train

    assert gpu_train.HYPERPARAMETERS == train.HYPERPARAMETERS


def _train_args(*argv):
    import argparse

    from stream_pipeline.training.logo_detector.cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    return parser.parse_args(["train-logo-detector", "--name", "wiring", *argv])


def test_train_command_passes_the_device_and_workers_on(monkeypatch, tmp_path):
    """--device/--workers reach the trainer; on --resume only what was given overrides the run's."""
    from stream_pipeline.training.logo_detector import cli, dataset, train

    calls = []
    monkeypatch.setattr(train, "RUNS_DIR", tmp_path)
    monkeypatch.setattr(train, "check_device", lambda device: None)  # no GPU needed to check wiring
    monkeypatch.setattr(train, "train", lambda *a, **k: calls.append(k))
    monkeypatch.setattr(dataset, "prepare", lambda *a, **k: tmp_path / "data.yaml")
    (tmp_path / "wiring").mkdir()  # the trainer would make the run folder
    assert cli._cmd_train(_train_args("--device", "0", "--workers", "8")) == 0
    assert (calls[-1]["device"], calls[-1]["workers"]) == ("0", 8)
    cli._cmd_train(_train_args("--resume"))
    assert calls[-1]["resume"] and (calls[-1]["device"], calls[-1]["workers"]) == (None, None)
    cli._cmd_train(_train_args("--resume", "--device", "0"))
    assert calls[-1]["device"] == "0"


def test_a_gpu_asked_for_where_there_is_none_is_one_clear_error_before_any_work(monkeypatch, tmp_path):
    import torch

    from stream_pipeline.core.errors import UserError
    from stream_pipeline.training.logo_detector import cli, dataset, train

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    monkeypatch.setattr(train, "RUNS_DIR", tmp_path)
    (tmp_path / "wiring" / "weights").mkdir(parents=True)
    monkeypatch.setattr(dataset, "prepare", lambda *a, **k: pytest.fail("dataset built before the device check"))
    with pytest.raises(UserError, match="no CUDA device"):
        cli._cmd_train(_train_args("--device", "0"))
    assert (tmp_path / "wiring" / "weights").is_dir()  # the run folder is left alone
    assert not train.is_cuda("cpu") and not train.is_cuda("mps") and train.is_cuda("0,1")
