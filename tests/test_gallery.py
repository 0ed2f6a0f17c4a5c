"""Brand gallery: verification against reference embeddings, enrolment without retraining."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_pipeline.brands.gallery import Gallery
from stream_pipeline.core.types import UNKNOWN_BRAND
from tests.conftest import run_cli

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "brand_classifier" / "gallery.npz"


def _unit(*rows):
    return np.asarray(rows, np.float32)


def test_nearest_brand_wins_and_far_badges_are_unknown():
    refs = _unit([1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.2])
    g = Gallery(refs, np.array(["audi", "audi", "bmw", "bmw"], object), np.array(["train"] * 4, object),
                threshold=0.8, model_digest="x", top_k=1)
    preds = g.match(_unit([0.95, 0.05, 0], [0.1, 1, 0], [0, 0, 1]))
    assert [p.brand for p in preds] == ["audi", "bmw", UNKNOWN_BRAND]
    assert preds[0].top[0].brand == "audi" and preds[0].confidence > 0.99
    assert preds[2].confidence < 0.8  # the best score, below the threshold


def test_top_k_averages_a_brands_closest_references():
    # one stray audi reference close to the query must not beat three consistent bmw ones
    refs = _unit([0.8, 0.6], [0, 1], [0, 1], [0.6, 0.8], [0.6, 0.8], [0.6, 0.8])
    brands = np.array(["audi", "audi", "audi", "bmw", "bmw", "bmw"], object)
    q = _unit([0.8, 0.6])
    assert Gallery(refs, brands, np.array(["train"] * 6, object), 0.0, "x", top_k=1).match(q)[0].brand == "audi"
    assert Gallery(refs, brands, np.array(["train"] * 6, object), 0.0, "x", top_k=3).match(q)[0].brand == "bmw"


def test_prototype_scoring_does_not_favour_the_brand_with_more_references():
    # audi has many references spread widely, one of them near the query; the two tesla
    # references sit together, nearer the query on average: by prototype tesla wins
    refs = _unit([0.95, 0.31], [0, 1], [-1, 0.2], [0, -1], [0.6, 0.8], [0.8, 0.6])
    brands = np.array(["audi", "audi", "audi", "audi", "tesla", "tesla"], object)
    origins = np.array(["train"] * 6, object)
    q = _unit([0.93, 0.37])
    assert Gallery(refs, brands, origins, 0.0, "x", top_k=1).match(q)[0].brand == "audi"
    proto = Gallery(refs, brands, origins, 0.0, "x", scoring="prototype")
    assert proto.match(q)[0].brand == "tesla"
    proto.add("bmw", _unit([0.93, 0.37]))  # enrolling recomputes the prototypes
    assert proto.match(q)[0].brand == "bmw"
    with pytest.raises(ValueError, match="scoring"):
        Gallery(refs, brands, origins, 0.0, "x", scoring="closest")


def test_add_remove_save_load_round_trip(tmp_path):
    g = Gallery(_unit([1, 0]), np.array(["audi"], object), np.array(["train"], object), 0.5, "abc")
    g.add("tesla", _unit([0, 2], [0.1, 1]), "enrolled", ["00ff", "0f0f"])
    path = tmp_path / "g.npz"
    g.save(path)
    back = Gallery.load(path)
    assert back.brand_names == ["audi", "tesla"] and back.model_digest == "abc" and back.threshold == 0.5
    assert back.summary()[1] == {"brand": "tesla", "references": 2, "enrolled": 2, "trained": 0}
    assert np.allclose(np.linalg.norm(back.embeddings, axis=1), 1.0, atol=1e-3)
    assert back.remove("tesla") == 2 and back.brand_names == ["audi"]
    assert back.match(_unit([0, 1]))[0].brand == UNKNOWN_BRAND  # like no brand left in it
    assert back.match(_unit([1, 0.1]))[0].brand == "audi"


def test_a_wide_crop_must_score_higher_than_a_small_one():
    # one brand, a query scoring 0.7 against it: known when small (band threshold 0.6), unknown
    # when the crop is wide (band 0.8); without widths (whole photos) `threshold` (0.65) decides
    g = Gallery(_unit([1, 0]), np.array(["audi"], object), np.array(["train"], object), 0.65, "x", top_k=1,
                size_thresholds=[(0, 0.6), (64, 0.8)])
    q = _unit([0.7, 0.714])
    assert [p.brand for p in g.match(np.repeat(q, 3, 0), widths=[20, 120, None])] == ["audi", UNKNOWN_BRAND, "audi"]
    assert g.match(q)[0].brand == "audi"
    assert g.match(q, threshold=0.9)[0].brand == UNKNOWN_BRAND  # an explicit threshold overrides the bands


def test_width_bands_and_scoring_survive_save_load_and_copy(tmp_path):
    g = Gallery(_unit([1, 0]), np.array(["audi"], object), np.array(["train"], object), 0.5, "x",
                size_thresholds=[(0, 0.55), (40, 0.7)], scoring="prototype", names_trained_by="gallery")
    g.save(tmp_path / "g.npz")
    back = Gallery.load(tmp_path / "g.npz")
    assert back.size_thresholds == [(0, 0.55), (40, 0.7)] and back.copy().size_thresholds == back.size_thresholds
    assert back.scoring == "prototype" and back.copy().scoring == "prototype"
    assert back.names_trained_by == "gallery" and back.copy().names_trained_by == "gallery"
    assert list(back.thresholds_for([10, 40, None])) == pytest.approx([0.55, 0.7, 0.5])


def test_band_thresholds_reject_the_same_share_of_known_crops_in_every_band():
    from stream_pipeline.training.classifier.gallery import MIN_BAND_CROPS, WIDTH_BANDS, band_thresholds

    rng = np.random.default_rng(0)
    # small crops score lower than large ones, as real ones do
    # whole photos (width -1) belong to no band
    widths = np.concatenate([np.full(200, 15), np.full(200, 150), np.full(MIN_BAND_CROPS - 1, 30), np.full(50, -1)])
    best = np.concatenate([rng.uniform(0.5, 0.9, 200), rng.uniform(0.8, 1.0, 200), rng.uniform(0, 1, MIN_BAND_CROPS - 1),
                           np.zeros(50)])
    bands = dict(band_thresholds(best, widths, fallback=0.42, max_known=0.04))
    assert set(bands) == set(WIDTH_BANDS)
    assert np.mean(best[:200] < bands[0]) == pytest.approx(0.04, abs=0.01)
    assert np.mean(best[200:400] < bands[40]) == pytest.approx(0.04, abs=0.01)
    assert bands[40] > bands[0] + 0.2
    assert bands[28] == 0.42 and bands[20] == 0.42  # too few crops of that width: the fallback


def test_whole_photos_get_their_own_threshold_from_known_photos_only():
    from stream_pipeline.training.classifier.gallery import MIN_BAND_CROPS, calibrate

    rng = np.random.default_rng(1)
    # sharp close-up photos of known brands score higher than small street crops: one threshold
    # for both would sit under the photos and let unknown close-ups through
    widths = np.concatenate([np.full(300, 15), np.full(300, -1)])
    best = np.concatenate([rng.uniform(0.3, 0.8, 300), rng.uniform(0.6, 1.0, 300)])
    g = Gallery(np.eye(2, dtype=np.float32), np.array(["a", "b"], object), np.array(["train"] * 2, object), 0.0, "x")
    calibrate(g, best, widths, fallback=0.42)
    assert np.mean(best[300:] < g.threshold) == pytest.approx(0.04, abs=0.01)
    assert list(g.thresholds_for([None])) == pytest.approx([g.threshold])
    assert dict(g.size_thresholds)[0] < g.threshold - 0.2
    few = np.concatenate([widths[:300], np.full(MIN_BAND_CROPS - 1, -1)])
    calibrate(g, best[:300 + MIN_BAND_CROPS - 1], few, fallback=0.42)
    assert g.threshold == 0.42  # too few whole photos: the fallback


def test_shipped_gallery_belongs_to_the_shipped_classifier():
    from stream_pipeline.brands.classifier import BrandClassifier

    clf = BrandClassifier.load()
    gallery = Gallery.load(SHIPPED)
    clf.use_gallery(gallery)  # raises when the digests differ
    assert set(clf.labels) <= set(gallery.brand_names)
    other = gallery.copy()
    other.model_digest = "0" * 16
    from stream_pipeline.core.errors import ModelError

    with pytest.raises(ModelError, match="another classifier"):
        clf.use_gallery(other)


@pytest.fixture(scope="module")
def lancia_photos(shared):
    """Close-up photos of a brand the classifier was never trained on (held out)."""
    folder = shared / "data" / "logos-closeup" / "lancia 1"
    photos = sorted(folder.glob("*.jpg"))
    assert len(photos) >= 14
    return photos


def test_enrol_a_brand_from_photos_then_classify_names_it(tmp_path, lancia_photos):
    gallery = tmp_path / "my_gallery.npz"
    enrol, rest = lancia_photos[:10], lancia_photos[10:]
    bad = tmp_path / "inputs"
    bad.mkdir()
    (bad / "notes.jpg").write_text("not an image")
    cv2.imwrite(str(bad / "tiny.png"), np.zeros((8, 8, 3), np.uint8))
    shutil.copy(enrol[0], bad / "copy_of_first.jpg")

    # The shipped gallery has lancia enrolled from these very photos: start from a copy without it.
    shutil.copy(SHIPPED, gallery)
    removed = run_cli("gallery", "remove", "lancia", "--gallery", str(gallery))
    assert removed.returncode == 0, removed.stderr
    before = run_cli("classify", "--json", "--gallery", str(gallery), *map(str, rest))
    assert before.returncode == 0, before.stderr
    assert [json.loads(line)["brand"] for line in before.stdout.splitlines()].count("lancia") == 0

    out = run_cli("enroll", "lancia", *map(str, enrol), str(bad), "--gallery", str(gallery), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert not result["created"] and result["enrolled"] == 10 and result["references_now"] == 10
    assert result["skipped"]["unreadable"] == [str(bad / "notes.jpg")]
    assert result["skipped"]["tiny"] == [str(bad / "tiny.png")]
    assert result["skipped"]["duplicates"] == [str(bad / "copy_of_first.jpg")]
    # 9 of these are read as chrysler before (similarity 0.68): a look-alike, not a wrong folder
    assert result["look_alike"] is None and "images match" not in out.stderr

    listed = json.loads(run_cli("gallery", "list", "--gallery", str(gallery), "--json").stdout)
    row = next(r for r in listed["brands"] if r["brand"] == "lancia")
    assert row == {"brand": "lancia", "references": 10, "enrolled": 10, "trained": 0}

    after = run_cli("classify", "--json", "--gallery", str(gallery), *map(str, rest))
    named = [json.loads(line)["brand"] for line in after.stdout.splitlines()]
    assert named.count("lancia") >= len(rest) - 1, named

    again = run_cli("enroll", "lancia", str(enrol[0]), "--gallery", str(gallery), "--json")
    assert again.returncode == 2 and "already enrolled 1 (in the gallery as lancia 1)" in again.stderr

    removed = run_cli("gallery", "remove", "lancia", "--gallery", str(gallery))
    assert removed.returncode == 0 and "removed 10" in removed.stdout
    missing = run_cli("gallery", "remove", "lancia", "--gallery", str(gallery))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


def _bmw_closeups(shared, training: bool) -> list[Path]:
    """BMW close-ups of the classifier's training split (the shipped gallery's references) or not."""
    import csv

    with open(SHIPPED.parent / "split_manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["path"].startswith("data/logos-closeup/bmw/")]
    return sorted(shared / r["path"] for r in rows if (r["split"] == "train") == training)


def test_enrol_creates_a_new_gallery_from_the_shipped_one(tmp_path, shared):
    gallery = tmp_path / "sub" / "new.npz"
    photos = _bmw_closeups(shared, training=False)[:3]
    assert len(photos) == 3
    out = run_cli("enroll", "my-fleet-badge", *map(str, photos), "--gallery", str(gallery), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["created"] and result["enrolled"] == 3
    # the shipped gallery has these photos' brand already, under its own name: the user is told
    assert result["look_alike"]["brand"] == "bmw" and result["look_alike"]["images"] == 3
    assert "3 of 3 images match bmw" in out.stderr
    shipped, new = Gallery.load(SHIPPED), Gallery.load(gallery)
    assert len(new.brands) == len(shipped.brands) + 3 and "my-fleet-badge" not in shipped.brand_names


def test_training_photos_of_a_trained_brand_are_already_in_the_gallery(tmp_path, shared):
    """The shipped gallery's references are the training crops: enrolling those photos under
    another name is reported, with the brand that holds them, not enrolled a second time."""
    held, new = _bmw_closeups(shared, training=True), _bmw_closeups(shared, training=False)
    out = run_cli("enroll", "beemer", *map(str, held + new[:1]), "--gallery", str(tmp_path / "g.npz"), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["enrolled"] == 1 and len(result["skipped"]["already_enrolled"]) == len(held)
    assert result["already_enrolled_as"] == {"bmw": len(held)}
    text = run_cli("enroll", "beemer", *map(str, held[:2]), "--gallery", str(tmp_path / "g.npz"))
    assert text.returncode == 2 and "already enrolled 2 (in the gallery as bmw 2)" in text.stderr


def test_photos_the_shipped_gallery_enrolled_are_not_enrolled_twice(tmp_path, lancia_photos):
    """The shipped gallery keeps the perceptual-hash keys of the held-out brands' photos it enrolled."""
    gallery = tmp_path / "copy.npz"
    out = run_cli("enroll", "lancia", *map(str, lancia_photos[:3]), "--gallery", str(gallery))
    assert out.returncode == 2 and "already enrolled 3 (in the gallery as lancia 3)" in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1


def test_enrol_rejects_a_bad_brand_name_and_empty_input(tmp_path):
    out = run_cli("enroll", "Alfa Romeo!", str(tmp_path), "--gallery", str(tmp_path / "g.npz"))
    assert out.returncode == 2 and "not a slug" in out.stderr
    out = run_cli("enroll", "alfa-romeo", str(tmp_path), "--gallery", str(tmp_path / "g.npz"))
    assert out.returncode == 2 and "nothing to enrol" in out.stderr


def test_open_set_study_references_are_road_first_and_judged_at_four_percent():
    from stream_pipeline.training.classifier.open_set_study import judge, references

    train = {"b": np.array(["a"] * 10 + ["b"] * 3), "d": np.array(["web"] * 6 + ["street"] * 4 + ["web"] * 3)}
    refs = references(train, per_brand=4)
    a_refs = [i for i in refs if train["b"][i] == "a"]
    assert len(a_refs) == 4 and sum(train["d"][i] == "street" for i in a_refs) == 3  # 3/4 road
    assert sorted(i for i in refs if train["b"][i] == "b") == [10, 11, 12]  # all it has

    # 100 known val crops with confidences 0..0.99: the threshold rejects the lowest 4 %.
    sets = {"val": {"b": np.array(["a"] * 100)},
            "test": {"b": np.array(["a", "a", "b", "b"]), "d": np.array(["street"] * 4), "px": np.array([10, 30, 10, 30])},
            "unseen": {"b": np.array(["x", "x", "y", "y"])}}
    conf = {"val": np.arange(100) / 100, "test": np.array([0.9, 0.01, 0.9, 0.9]), "unseen": np.array([0.0, 0.02, 0.5, 0.9])}
    pred = {"val": np.array(["a"] * 100), "test": np.array(["a", "a", "a", "b"]), "unseen": np.array(["a"] * 4)}
    r = judge(sets, lambda s: (pred[s], conf[s]))
    assert r["unknown_rejected"] == 0.5 and r["unknown_rejected_by_brand"] == {"x": 1.0, "y": 0.0}
    assert r["known_test_rejected"] == 0.25
    assert r["top1"] == 0.75 and r["top1_with_rejection"] == 0.5
    assert r["street_under_24px_top1"] == 0.5


def test_a_configured_gallery_threshold_replaces_the_width_bands(tmp_path):
    from stream_pipeline.brands.recognizer import BrandRecognizer
    from stream_pipeline.core.config import BrandsConfig

    banded = Gallery.load(SHIPPED)
    banded.size_thresholds = [(0, 0.5), (64, 0.9)]
    banded.save(tmp_path / "g.npz")
    default = BrandRecognizer(BrandsConfig(gallery=str(tmp_path / "g.npz"))).classifier.gallery
    assert default.size_thresholds == [(0, 0.5), (64, 0.9)]
    fixed = BrandRecognizer(BrandsConfig(gallery=str(tmp_path / "g.npz"), gallery_threshold=0.7)).classifier.gallery
    assert fixed.size_thresholds == [] and list(fixed.thresholds_for([10, 200])) == pytest.approx([0.7, 0.7])


def test_classify_judges_each_crop_by_its_own_width(tmp_path, shared):
    # bands that never reject a crop narrower than 100 px and always reject a wider one: the same
    # badge photo, cut tall-and-narrow and short-and-wide, must fall on either side
    from stream_pipeline.brands.classifier import BrandClassifier

    photo = cv2.imread(str(sorted((shared / "data" / "logos-closeup" / "volkswagen").glob("*.jpg"))[0]))
    assert photo is not None
    gallery = Gallery.load(SHIPPED)
    gallery.size_thresholds = [(0, -1.0), (100, 1.01)]
    clf = BrandClassifier.load()
    clf.use_gallery(gallery)
    narrow, wide = cv2.resize(photo, (60, 150)), cv2.resize(photo, (150, 60))  # (width, height)
    brands = [p.brand for p in clf.classify([narrow, wide])]
    assert brands[0] != UNKNOWN_BRAND and brands[1] == UNKNOWN_BRAND, brands


def test_trained_brands_are_named_by_whichever_the_gallery_says(shared):
    # the same real badge crops: named by the gallery's nearest brand, or by the softmax's top
    # brand, as the gallery file says (build-gallery chooses on validation)
    from stream_pipeline.brands.classifier import BrandClassifier

    from stream_pipeline.training.classifier.dataset import load_record_image
    from stream_pipeline.training.classifier.train import load_dataset_info

    records, _info = load_dataset_info()
    street = [r for r in records if r.split == "test" and r.domain == "street" and r.brand != "other"][:200]
    crops = [load_record_image(shared, r) for r in street]
    clf = BrandClassifier.load()
    gallery = Gallery.load(SHIPPED)
    _probs, feats = clf.infer(crops)
    widths = [c.shape[1] for c in crops]
    nearest = [p.brand for p in gallery.match(feats, widths=widths)]
    softmax_top = [p.top[0].brand for p in clf.classify(crops)] if clf.gallery is None else None
    for namer in ("gallery", "softmax"):
        gallery.names_trained_by = namer
        clf.use_gallery(gallery)
        got = [p.brand for p in clf.classify(crops)]
        for brand, near, soft in zip(got, nearest, softmax_top):
            if near == UNKNOWN_BRAND or near not in clf.labels:
                assert brand == near
            else:
                assert brand == (near if namer == "gallery" else soft)
    assert any(n != s for n, s in zip(nearest, softmax_top) if n in clf.labels), "no crop where the two differ"


def test_enrol_detect_badge_cuts_the_labelled_badge_from_whole_street_photos(tmp_path, shared):
    """`enroll --detect-badge` on whole street photos (held-out test split of the badge detector):
    each reference is the labelled badge, not a lamp or a plate; a photo without one is reported."""
    from stream_pipeline.brands.classifier import BrandClassifier, badge_margin
    from stream_pipeline.brands.recognizer import crop
    from stream_pipeline.training.logo_detector.dataset import samples_by_split

    photos = [s for s in samples_by_split()["test"] if s.key.startswith("logo-boxes/") and len(s.boxes) == 1
              and s.boxes[0].w >= 20][:6]
    blank = tmp_path / "grey.png"
    cv2.imwrite(str(blank), np.full((480, 480, 3), 127, np.uint8))
    gallery = tmp_path / "g.npz"
    out = run_cli("enroll", "street-test", *[str(s.image) for s in photos], str(blank), "--gallery", str(gallery),
                  "--detect-badge", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["skipped"]["no_badge_found"] == [str(blank)]
    assert result["enrolled"] >= 5, result
    clf = BrandClassifier.load()
    labelled = np.stack([clf.embed([crop(cv2.imread(str(s.image)), np.array(s.boxes[0].xyxy(), np.float32),
                                         badge_margin(s.boxes[0].w))[0]])[0] for s in photos])
    labelled /= np.linalg.norm(labelled, axis=1, keepdims=True)
    g = Gallery.load(gallery)
    refs = g.embeddings[g.brands == "street-test"]
    # every reference is the embedding of one of the labelled badges (same region, margin aside)
    assert (refs @ labelled.T).max(axis=1).min() >= 0.8, (refs @ labelled.T).max(axis=1)


def test_the_shipped_gallery_is_never_changed_and_no_brand_hides_as_a_rejection(tmp_path, lancia_photos, shared):
    before = SHIPPED.read_bytes()
    out = run_cli("enroll", "my-fleet-badge", str(lancia_photos[0]))  # the default config names the shipped one
    assert out.returncode == 2 and "--gallery FILE" in out.stderr and out.stderr.strip().count("\n") == 0
    out = run_cli("gallery", "remove", "bmw")
    assert out.returncode == 2 and "not changed" in out.stderr
    assert SHIPPED.read_bytes() == before
    assert run_cli("gallery", "list").returncode == 0  # reading it is fine
    for reserved in ("unknown", "other", "Unknown"):
        out = run_cli("enroll", reserved, str(lancia_photos[0]), "--gallery", str(tmp_path / "g.npz"))
        assert out.returncode == 2 and "reserved" in out.stderr, out.stderr
    out = run_cli("enroll", "dacia-", str(lancia_photos[0]), "--gallery", str(tmp_path / "g.npz"))
    assert out.returncode == 2 and "not a slug" in out.stderr
    assert not (tmp_path / "g.npz").exists()
    photo = _bmw_closeups(shared, training=False)[0]  # not in the shipped one
    out = run_cli("enroll", "mercedes", str(photo), "--gallery", str(tmp_path / "g.npz"))
    assert out.returncode == 0 and "mercedes-benz" in out.stderr  # a note, not a refusal


def test_classify_takes_a_folder_and_refuses_contradictory_options(tmp_path, lancia_photos):
    folder = tmp_path / "badges"
    folder.mkdir()
    for photo in lancia_photos[:3]:
        shutil.copy(photo, folder / photo.name)
    (folder / "readme.txt").write_text("not an image")
    out = run_cli("classify", "--json", str(folder))
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["path"] for line in out.stdout.splitlines()] == [str(folder / p.name) for p in sorted(lancia_photos[:3])]
    for args in (["--gallery", str(SHIPPED), "--no-gallery"], ["--threshold", "5"]):
        out = run_cli("classify", str(folder), *args)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr


def test_classify_says_what_it_could_not_read(tmp_path, lancia_photos):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image here")
    for path, message in ((empty, "no images given"), (tmp_path / "nowhere.jpg", "image not found")):
        out = run_cli("classify", str(path))
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
        assert out.stdout == ""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    out = run_cli("classify", "--json", str(broken), str(lancia_photos[0]))
    assert out.returncode == 2  # one image unreadable: said, and the other still answered
    assert out.stderr.count("\n") == 1 and f"cannot read image {broken}" in out.stderr
    assert [json.loads(line)["path"] for line in out.stdout.splitlines()] == [str(lancia_photos[0])]
    alone = run_cli("classify", str(broken))
    assert alone.returncode == 2 and alone.stderr.strip().splitlines() == [
        f"stream-pipeline: error: cannot read image {broken}"]


def test_gallery_list_one_brand(tmp_path):
    out = run_cli("gallery", "list", "bmw", "--json")
    assert out.returncode == 0, out.stderr
    assert [row["brand"] for row in json.loads(out.stdout)["brands"]] == ["bmw"]
    assert json.loads(out.stdout)["non_badges"] > 0  # the shipped gallery keeps non-badges from enrolled brands
    missing = run_cli("gallery", "list", "geely")
    assert missing.returncode == 2 and "'geely' is not in" in missing.stderr


def test_enrol_into_a_gallery_whose_brands_were_all_removed(tmp_path, lancia_photos):
    gallery = tmp_path / "empty.npz"
    g = Gallery.load(SHIPPED)
    for brand in list(g.brand_names):
        g.remove(brand)
    g.save(gallery)
    out = run_cli("enroll", "lancia", *map(str, lancia_photos[:3]), "--gallery", str(gallery), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["enrolled"] == 3 and result["look_alike"] is None
    named = run_cli("classify", "--json", "--gallery", str(gallery), str(lancia_photos[5]))
    assert named.returncode == 0 and json.loads(named.stdout)["brand"] == "lancia", named.stdout


@pytest.mark.parametrize("damage, reason", [
    ("truncated", "damaged or incomplete file"),
    ("text", "not a gallery file"),
    ("other_npz", "not a gallery file"),
    ("npy", "not a gallery file"),
    ("corrupted", "damaged or incomplete file"),
    ("bad_keys", "image keys are not 64-bit hex"),
])
def test_a_damaged_gallery_file_is_one_line_and_exit_4(tmp_path, damage, reason):
    path = tmp_path / "g.npz"
    if damage == "truncated":  # e.g. a copy cut short
        path.write_bytes(SHIPPED.read_bytes()[:1000])
    elif damage == "text":
        path.write_text("not a gallery\n")
    elif damage == "other_npz":
        np.savez(path, something=np.arange(3))
    elif damage == "npy":  # an array saved under the gallery's name
        with open(path, "wb") as fh:
            np.save(fh, np.arange(3))
    elif damage == "corrupted":  # bytes flipped inside the compressed data
        data = bytearray(SHIPPED.read_bytes())
        for i in range(len(data) // 2, len(data) // 2 + 200):
            data[i] ^= 0x55
        path.write_bytes(bytes(data))
    else:
        g = Gallery.load(SHIPPED)
        g.keys[0] = "not-a-key"
        g.save(path)
    for args in (("gallery", "list"), ("enroll", "lancia", str(tmp_path))):
        result = run_cli(*args, "--gallery", str(path))
        assert result.returncode == 4, result.stderr
        assert result.stderr.strip().count("\n") == 0 and reason in result.stderr and str(path) in result.stderr


def test_an_enrolled_brand_closer_to_the_non_badges_is_unknown_and_a_trained_one_is_not(tmp_path):
    # what the logo detector boxes on bodywork sits near [0, 1]; an enrolled brand whose few
    # photos also sit near there must not take such boxes, a trained brand is left to the softmax
    refs = _unit([1, 0], [0.6, 0.8], [0.0, 1.0])
    g = Gallery(refs, np.array(["audi", "chrysler", "bmw"], object), np.array(["train", "enrolled", "train"], object),
                0.3, "x", scoring="prototype", negatives=_unit([0.2, 0.98], [0.1, 0.99], [0.3, 0.95]),
                negative_margin=0.0)
    near_chrysler = _unit([0.55, 0.83])  # chrysler's score 0.998; its negatives' 0.915: a badge
    blank = _unit([0.35, 0.94])  # chrysler 0.96, negatives ~0.998: not a badge
    assert [p.brand for p in g.match(np.concatenate([near_chrysler, blank]))] == ["chrysler", UNKNOWN_BRAND]
    g2 = g.copy()
    g2.remove("chrysler")  # now bmw (trained) is the nearest brand of the blank crop: not judged here
    assert g2.match(blank)[0].brand == "bmw"
    g.save(tmp_path / "g.npz")
    loaded = Gallery.load(tmp_path / "g.npz")
    assert loaded.negative_margin == 0.0 and loaded.negatives.shape == (3, 2)
    assert [p.brand for p in loaded.match(np.concatenate([near_chrysler, blank]))] == ["chrysler", UNKNOWN_BRAND]
    old = Gallery(refs, g.brands, g.origins, 0.3, "x", scoring="prototype")  # a gallery built before negatives
    assert old.match(blank)[0].brand == "chrysler"


def test_blank_and_featureless_crops_are_no_brand_while_an_enrolled_brand_is_still_named(lancia_photos):
    """With the shipped gallery, flat, blurred or noisy crops (a washed-out or dark frame) were named
    chrysler, the enrolled brand whose prototype sits among small blurry crops."""
    from stream_pipeline.brands.classifier import BrandClassifier
    from stream_pipeline.training.classifier.negatives import featureless_crops

    clf = BrandClassifier.load()
    gallery = Gallery.load(SHIPPED)
    assert gallery.negatives is not None and gallery.negative_margin is not None
    clf.use_gallery(gallery)
    blanks = featureless_crops(60, seed=7)  # not the seed the gallery's own featureless crops came from
    named = [p.brand for p in clf.classify(blanks) if p.brand != UNKNOWN_BRAND]
    assert len(named) <= 3, named
    lancia = [cv2.imread(str(p)) for p in lancia_photos]
    assert sum(p.brand == "lancia" for p in clf.classify(lancia, widths=[None] * len(lancia))) >= len(lancia) - 2
