"""The committed brand classifier (models/brand_classifier) on real crops from ../shared.

No training. Needs the shared data folder for the real-image tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stream_pipeline.brands.classifier import DEFAULT_MODEL_DIR, BrandClassifier, preprocess_crops
from stream_pipeline.core.errors import ModelError
from stream_pipeline.core.paths import PROJECT_ROOT, shared_dir
from stream_pipeline.core.types import UNKNOWN_BRAND, BrandPrediction
from stream_pipeline.training.classifier.dataset import load_record_image, read_manifest

SHARED = shared_dir(required=False)
needs_shared = pytest.mark.skipif(SHARED is None, reason="shared data folder not available")


@pytest.fixture(scope="module")
def clf() -> BrandClassifier:
    return BrandClassifier.load()


@pytest.fixture(scope="module")
def test_records():
    return [r for r in read_manifest(DEFAULT_MODEL_DIR / "split_manifest.csv") if r.split == "test"]


def _take(records, source, n, classes):
    """Every k-th test record of a source (deterministic, spread over brands)."""
    recs = [r for r in records if r.source == source and r.brand in classes]
    step = max(1, len(recs) // n)
    return recs[::step][:n]


def test_metadata_and_labels(clf: BrandClassifier):
    meta = json.loads((DEFAULT_MODEL_DIR / "metadata.json").read_text())
    assert len(clf.labels) >= 35
    assert "other" not in clf.labels and UNKNOWN_BRAND not in clf.labels
    assert {"mercedes-benz", "volkswagen", "bmw", "fiat", "toyota"} <= set(clf.labels)
    assert 0.0 <= clf.threshold < 1.0 and clf.threshold == meta["threshold"]
    assert clf.input_size == meta["input_size"]


def test_empty_and_odd_inputs(clf: BrandClassifier):
    assert clf.classify([]) == []
    crops = [np.zeros((7, 31, 3), np.uint8), np.full((300, 90, 3), 200, np.uint8),
             np.zeros((20, 20), np.uint8), np.zeros((0, 5, 3), np.uint8)]
    preds = clf.classify(crops)
    assert len(preds) == 4
    for p in preds:
        assert isinstance(p, BrandPrediction)
        assert 0.0 <= p.confidence <= 1.0
        assert p.brand == UNKNOWN_BRAND or p.brand in clf.labels
        assert len(p.top) == 3 and p.top[0].probability >= p.top[1].probability


def test_missing_model_is_a_model_error(tmp_path: Path):
    with pytest.raises(ModelError, match="missing"):
        BrandClassifier.load(tmp_path)


@needs_shared
def test_classifies_real_test_crops(clf: BrandClassifier, test_records):
    """Street badge crops and web photos from the held-out test split.

    Bars sit ~10-15 points under the measured test accuracy of the committed model (street
    crops 74.6 %, seed photos 76.7 %: see eval_report.json); chance is 2.6 %."""
    street = _take(test_records, "logo-boxes", 40, clf.labels)
    web = _take(test_records, "logos-seed", 30, clf.labels)
    for recs, minimum in ((street, 0.5), (web, 0.6)):
        preds = clf.classify([load_record_image(SHARED, r) for r in recs])
        acc = np.mean([p.top[0].brand == r.brand for p, r in zip(preds, recs)])
        assert acc >= minimum, (recs[0].source, acc)
    # batched == one by one
    crops = [load_record_image(SHARED, r) for r in street[:6]]
    batched = clf.predict_proba(crops)
    single = np.concatenate([clf.predict_proba([c]) for c in crops])
    np.testing.assert_allclose(batched, single, atol=1e-4)


@needs_shared
def test_openvino_agrees_with_keras(clf: BrandClassifier, test_records):
    keras_file = DEFAULT_MODEL_DIR / "brand_classifier.keras"
    if not keras_file.is_file():
        pytest.skip("Keras model not committed")
    from stream_pipeline.training.classifier.train import configure_tf

    configure_tf(2)
    import keras

    model = keras.models.load_model(keras_file, compile=False)
    recs = _take(test_records, "logo-boxes", 12, clf.labels) + _take(test_records, "logos-extra", 12, clf.labels)
    crops = [load_record_image(SHARED, r) for r in recs]
    out = model.predict(preprocess_crops(crops, clf.input_size), verbose=0)
    op, oe = clf.infer(crops)
    kp = out[0] if isinstance(out, list) else out
    assert np.array_equal(kp.argmax(1), op.argmax(1))
    assert np.abs(kp - op).max() < 0.05
    if isinstance(out, list):  # a metric-trained model: its embedding output is what the gallery compares
        assert out[1].shape == oe.shape
        cosine = np.sum(out[1] * oe, axis=1) / np.linalg.norm(oe, axis=1)
        assert cosine.min() > 0.999


@needs_shared
def test_rejects_unseen_brands_and_non_logos(clf: BrandClassifier, test_records):
    from stream_pipeline.training.classifier.dataset import read_image

    info = json.loads((DEFAULT_MODEL_DIR / "dataset.json").read_text())
    # background (non-logo) patches of test street photos
    bg = [r for r in test_records if r.brand == "other"][:30]
    preds = clf.classify([load_record_image(SHARED, r) for r in bg])
    assert np.mean([p.brand == UNKNOWN_BRAND for p in preds]) >= 0.7  # measured 0.83 on these 30
    # catalogue logos of brands held out of training entirely, composited on white: rejection
    # is weak here (measured 36 %), so only check it is clearly above the known-logo rejection
    slugs = info["catalogue"]["unknown_test"][::4]
    imgs = [read_image(SHARED / "data" / "logo-catalogue" / f"{s}.png") for s in slugs]
    unknown_rejected = np.mean([p.brand == UNKNOWN_BRAND for p in clf.classify(imgs)])
    # while the catalogue logos of the classes are recognised (measured 85 %)
    known = [read_image(SHARED / "data" / "logo-catalogue" / f"{s}.png") for s in clf.labels]
    preds = clf.classify(known)
    assert np.mean([p.brand == s for p, s in zip(preds, clf.labels)]) >= 0.75
    known_rejected = np.mean([p.brand == UNKNOWN_BRAND for p in preds])
    assert unknown_rejected >= 0.25 and unknown_rejected > known_rejected + 0.15


@needs_shared
def test_classify_json_cli(tmp_path: Path, test_records):
    import cv2

    recs = [r for r in test_records if r.source == "logo-boxes"][:2]
    paths = []
    for i, r in enumerate(recs):
        p = tmp_path / f"crop{i}.png"
        cv2.imwrite(str(p), load_record_image(SHARED, r))
        paths.append(str(p))
    proc = subprocess.run([sys.executable, "-m", "stream_pipeline", "classify", *paths, "--json"],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [d["path"] for d in lines] == paths
    from stream_pipeline.brands.gallery import Gallery

    # the brand comes from the shipped gallery: trained brands plus the enrolled ones
    labels = Gallery.load(DEFAULT_MODEL_DIR / "gallery.npz").brand_names
    for d in lines:
        assert set(d) == {"path", "brand", "confidence", "top"}
        assert d["brand"] == UNKNOWN_BRAND or d["brand"] in labels
        assert 0.0 <= d["confidence"] <= 1.0
        assert len(d["top"]) == 3
        for slug, p in d["top"]:
            assert slug in labels and slug != "other" and 0.0 <= p <= 1.0
    no_gallery = subprocess.run([sys.executable, "-m", "stream_pipeline", "classify", *paths, "--json", "--no-gallery"],
                                capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)
    softmax_labels = json.loads((DEFAULT_MODEL_DIR / "metadata.json").read_text())["labels"]
    for line in no_gallery.stdout.strip().splitlines():
        assert all(slug in softmax_labels for slug, _ in json.loads(line)["top"])
    bad = subprocess.run([sys.executable, "-m", "stream_pipeline", "classify", str(tmp_path / "none.jpg"), "--json"],
                         capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)
    assert bad.returncode == 2 and "image not found" in bad.stderr


def test_rejection_rule_and_its_calibration():
    """`decide` rejects on a winning `other`, on a strong `other` share, or on low brand confidence;
    calibration keeps known-image rejection within budget while rejecting more unknowns."""
    from stream_pipeline.brands.classifier import OTHER_CLASS, decide
    from stream_pipeline.training.classifier.train import calibrate_threshold

    labels = ["audi", "bmw", OTHER_CLASS]
    rows = np.array([[0.70, 0.05, 0.25],   # brand wins, but `other` holds a quarter
                     [0.90, 0.05, 0.05],   # clear brand
                     [0.30, 0.20, 0.50],   # `other` wins
                     [0.15, 0.14, 0.10]])  # nothing is confident (rows need not sum to 1 here)
    brands = [p.brand for p in decide(rows, labels, threshold=0.2, other_threshold=0.2)]
    assert brands == [UNKNOWN_BRAND, "audi", UNKNOWN_BRAND, UNKNOWN_BRAND]
    assert decide(rows[:1], labels, threshold=0.2)[0].brand == "audi"  # default: only a winning `other` rejects

    rng = np.random.default_rng(0)
    known = np.zeros((200, 3))
    known[:, 0] = rng.uniform(0.6, 0.99, 200)
    known[:, 2] = rng.uniform(0.0, 0.1, 200)
    known[:, 1] = 1 - known[:, 0] - known[:, 2]
    unknown = np.zeros((100, 3))
    unknown[:, 2] = rng.uniform(0.15, 0.45, 100)  # unseen brands: `other` strong but not winning
    unknown[:, 0] = 1 - unknown[:, 2] - 0.01
    unknown[:, 1] = 0.01
    y = np.zeros(200, int)
    t_only, o_only, _ = calibrate_threshold(known, y, labels)
    t, o, cal = calibrate_threshold(known, y, labels, unknown)
    assert o_only == 1.0 and o < 1.0
    assert cal["rejected_total"] <= 0.04
    assert cal["val_unknown_rejected"] > 0.9


@needs_shared
def test_evaluation_crops_are_cut_as_the_pipeline_cuts_badges(test_records):
    """The figures in the model card are measured on the crops the pipeline feeds the
    classifier: the same box, with more context for small badges (badge_margin)."""
    import cv2

    from stream_pipeline.brands.classifier import BADGE_MARGIN, SMALL_BADGE_MARGIN, SMALL_BADGE_PX, badge_margin
    from stream_pipeline.brands.recognizer import crop

    street = [r for r in test_records if r.domain == "street" and r.box is not None]
    small = [r for r in street if r.box[2] - r.box[0] < SMALL_BADGE_PX][:6]
    wide = [r for r in street if r.box[2] - r.box[0] >= 2 * SMALL_BADGE_PX][:6]
    assert len(small) == len(wide) == 6
    for r, margin in [(r, SMALL_BADGE_MARGIN) for r in small] + [(r, BADGE_MARGIN) for r in wide]:
        width = r.box[2] - r.box[0]
        assert badge_margin(width) == margin
        evaluated = load_record_image(SHARED, r)
        cut, _ = crop(cv2.imread(str(SHARED / r.path)), np.array(r.box, np.float32), badge_margin(width))
        assert abs(evaluated.shape[0] - cut.shape[0]) <= 2 and abs(evaluated.shape[1] - cut.shape[1]) <= 2
        # the margin really is there: the crop is wider than the box by 2 x margin (unless cut by the border)
        img_w = cv2.imread(str(SHARED / r.path)).shape[1]
        if r.box[0] - margin * width >= 0 and r.box[2] + margin * width <= img_w:
            assert abs(evaluated.shape[1] - width * (1 + 2 * margin)) <= 2
