"""Building, calibrating and evaluating the brand gallery (no TensorFlow: the shipped OpenVINO
classifier embeds, exactly as at run time).

- References: real training crops of every class, road domain first (street and close-up crops
  before web photos), `REFS_PER_BRAND` each (None: every training crop; a brand's prototype is the
  mean of its references, so more of them estimate it better, and their number does not bias it).
- Threshold: on real photos only. Known brands: the validation split. Unknown brands: photos of the
  brands kept out of training entirely (`unseen` split: HELD_OUT_BRANDS plus brands with too few
  photos). The threshold maximises (unknown rejected - known rejected) with at most
  MAX_KNOWN_REJECTION of known crops rejected. Its unknown-rejection figure is measured by
  cross-fitting over brands: the threshold used on one half of the unknown brands is calibrated
  on the other half, so no brand is judged by a threshold tuned on its own photos.
- Width bands: small crops of known brands score lower than large ones, so each band of crop
  widths (WIDTH_BANDS) gets the threshold that rejects MAX_KNOWN_REJECTION of the known
  validation crops of that width; this uses no unknown photo. Whole photos (close-ups: no badge
  box, no width) are a band of their own, calibrated the same way. The global threshold above is
  the fallback for sparse bands.
- Enrolment: each held-out brand with enough photos is enrolled from `ENROL_SHOTS` of them; top-1
  on its remaining photos, and the known brands' test accuracy before and after.
- The shipped gallery also enrols every photo of the held-out brands, so the runtime names them.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stream_pipeline.brands.classifier import BrandClassifier
from stream_pipeline.brands.gallery import GALLERY_NAME, Gallery
from stream_pipeline.core.types import UNKNOWN_BRAND
from stream_pipeline.training.classifier.dataset import MIN_SIDE_PX, Record, load_record_image

log = logging.getLogger("stream_pipeline.classifier")

REFS_PER_BRAND = None  # every training crop: prototypes scored 0.687 on validation with them, 0.676 with 40
ROAD_SHARE = 0.75  # of a brand's references taken from street and close-up crops when it has them
MAX_KNOWN_REJECTION = 0.04  # validation target (test target: <= 5 %)
ENROL_SHOTS = 10
MIN_ENROL_PHOTOS = 12  # a held-out brand needs this many photos to be enrolled and still tested
# crop-width bands (px: the badge box plus its margin, as the classifier gets it) with a
# threshold each, calibrated on badge crops cut from photos (whole web / close-up photos have no
# badge width); a band with fewer validation crops than MIN_BAND_CROPS keeps the global threshold
WIDTH_BANDS = (0, 20, 28, 40)
MIN_BAND_CROPS = 60


def choose_references(records: list[Record], classes: list[str], per_brand: int | None, seed: int) -> list[Record]:
    if per_brand is None:
        per_brand = 10 ** 9
    rng = np.random.default_rng(seed)
    by_brand: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.split == "train" and r.brand in classes:
            by_brand[r.brand]["road" if r.domain in ("street", "closeup") else "web"].append(r)
    out = []
    for brand in classes:
        road, web = list(by_brand[brand]["road"]), list(by_brand[brand]["web"])
        rng.shuffle(road)
        rng.shuffle(web)
        n_road = min(len(road), int(round(per_brand * ROAD_SHARE)) if web else per_brand)
        take = road[:n_road] + web[:per_brand - n_road]
        take += road[n_road:n_road + per_brand - len(take)]
        out += take
    return out


class Embedded(NamedTuple):
    """What build-gallery needs of each record's crop, from one read and one inference."""

    emb: np.ndarray  # (N, D) L2-normalised embeddings
    probs: np.ndarray  # (N, labels) softmax
    widths: np.ndarray  # crop width in px, -1 for whole photos (no badge box: the whole-photo threshold)
    min_sides: np.ndarray  # the crop's shorter side in px (enroll skips images under MIN_SIDE_PX)
    keys: list  # the crop's enrolment key (`gallery_cli.image_key`): enroll skips images the gallery holds


def embed_records(clf: BrandClassifier, shared: Path, records: list[Record]) -> Embedded:
    from stream_pipeline.brands.gallery import normalise
    from stream_pipeline.brands.gallery_cli import image_key

    feats, probs, widths, sides, keys = [], [], [], [], []
    for start in range(0, len(records), 256):
        batch = records[start:start + 256]
        crops = [load_record_image(shared, r) for r in batch]
        p, f = clf.infer(crops)
        probs.append(p)
        feats.append(normalise(f))
        widths += [c.shape[1] if r.box is not None else -1 for r, c in zip(batch, crops)]
        sides += [min(c.shape[:2]) for c in crops]
        keys += [image_key(c) for c in crops]
    if not feats:
        return Embedded(np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32), np.zeros(0, np.int64),
                        np.zeros(0, np.int64), [])
    return Embedded(np.concatenate(feats), np.concatenate(probs), np.asarray(widths, np.int64),
                    np.asarray(sides, np.int64), keys)


def best_scores(gallery: Gallery, emb: np.ndarray) -> tuple[np.ndarray, list[str]]:
    s = gallery.scores(emb)
    return s.max(axis=1), [gallery.brand_names[i] for i in s.argmax(axis=1)]


def band_thresholds(known_best: np.ndarray, widths: np.ndarray, fallback: float,
                    max_known: float = MAX_KNOWN_REJECTION) -> list[tuple[int, float]]:
    """Per width band, the score below which `max_known` of the known validation crops of that
    width fall; bands with too few crops keep `fallback`. Widths of -1 (whole photos) are in no band."""
    edges = list(WIDTH_BANDS) + [10 ** 9]
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        band = (widths >= lo) & (widths < hi)
        t = float(np.quantile(known_best[band], max_known)) if band.sum() >= MIN_BAND_CROPS else fallback
        out.append((int(lo), round(t, 4)))
    return out


def photo_threshold(known_best: np.ndarray, widths: np.ndarray, fallback: float,
                    max_known: float = MAX_KNOWN_REJECTION) -> float:
    """The threshold for whole photos (width -1: close-ups, no badge box), a band of their own:
    the score below which `max_known` of the known validation photos fall; `fallback` when there
    are fewer than MIN_BAND_CROPS of them. The threshold chosen over all validation crops sat below
    the sharp photos' scores (it also had to pass small street crops) and let unknown close-ups
    through."""
    photos = widths < 0
    if photos.sum() < MIN_BAND_CROPS:
        return fallback
    return round(float(np.quantile(known_best[photos], max_known)), 4)


def calibrate(gallery: Gallery, known_best: np.ndarray, widths: np.ndarray, fallback: float) -> None:
    """Set the gallery's width-band and whole-photo thresholds from known validation scores;
    `fallback` (calibrated with unknown photos) judges bands too sparse to calibrate."""
    gallery.size_thresholds = band_thresholds(known_best, widths, fallback)
    gallery.threshold = photo_threshold(known_best, widths, fallback)


def choose_threshold(known_best: np.ndarray, unknown_best: np.ndarray,
                     max_known: float = MAX_KNOWN_REJECTION) -> float:
    grid = np.round(np.arange(0.0, 0.99, 0.005), 3)  # CosFace embeddings sit lower than pooled features
    best = (-np.inf, 0.0)
    for t in grid:
        known = float(np.mean(known_best < t))
        if known > max_known:
            break
        unk = float(np.mean(unknown_best < t)) if len(unknown_best) else 0.0
        best = max(best, (unk - known, float(t)))
    return best[1] if best[0] > -np.inf else float(grid[0])


def _accuracy(truth: list[str], pred: list[str]) -> float:
    return float(np.mean([t == p for t, p in zip(truth, pred)])) if truth else 0.0


TOP_K_CHOICES = (1, 3)


NEGATIVE_MARGINS = np.round(np.arange(-0.1, 0.3001, 0.025), 3)


def _named_enrolled(gallery: Gallery, emb: np.ndarray, widths: np.ndarray, margin: float | None) -> tuple:
    """Per embedding: (named at all, named an enrolled-only brand, the brand) with `margin`."""
    s = gallery.scores(emb)
    best, winner = s.max(axis=1), s.argmax(axis=1)
    named = (best >= gallery.thresholds_for(widths)) & ~gallery.looks_like_no_badge(emb, best, winner, margin)
    return named, named & gallery._enrolled_only[winner], np.array(gallery.brand_names, object)[winner]


def calibrate_negatives(base: Gallery, clf: BrandClassifier, e_unseen: np.ndarray, w_unseen: np.ndarray,
                        unseen_brand: np.ndarray) -> dict:
    """Give `base` its negatives (train split) and the margin that, on the shipped gallery (the
    held-out brands enrolled), rejects the most val-split non-badges named as an enrolled brand
    for the fewest held-out brands' photos no longer named as their brand (each a share of its
    set). Returns the figures for the report, test-split non-badges included."""
    from stream_pipeline.core.config import BrandsConfig
    from stream_pipeline.core.paths import resolve_model_path
    from stream_pipeline.training.classifier.negatives import embed_negatives

    detector = resolve_model_path(BrandsConfig().logo_detector)
    base.negatives, _ = embed_negatives(clf, "train", detector, featureless=True)
    e_nval, w_nval = embed_negatives(clf, "val", detector)
    e_ntest, w_ntest = embed_negatives(clf, "test", detector)
    probe = base.copy()
    for b in sorted(set(unseen_brand)):
        probe.add(b, e_unseen[unseen_brand == b])
    neg_named0 = _named_enrolled(probe, e_nval, w_nval, None)[1]
    named0, _, brand0 = _named_enrolled(probe, e_unseen, w_unseen, None)
    own0 = named0 & (brand0 == unseen_brand)
    scores = {}
    for m in NEGATIVE_MARGINS:
        neg_named = _named_enrolled(probe, e_nval, w_nval, float(m))[1]
        named, _, brand = _named_enrolled(probe, e_unseen, w_unseen, float(m))
        own = named & (brand == unseen_brand)
        scores[float(m)] = float(np.mean(neg_named0 & ~neg_named) - np.mean(own0 & ~own))
    margin = max(scores, key=lambda m: (round(scores[m], 6), m))  # ties: the milder rule
    base.negative_margin = margin

    def figures(emb, widths, m):
        named, enrolled, _ = _named_enrolled(probe, emb, widths, m)
        return {"named": round(float(named.mean()), 4), "named_enrolled_brand": round(float(enrolled.mean()), 4)}

    own_after = _named_enrolled(probe, e_unseen, w_unseen, margin)
    return {
        "negatives": int(len(base.negatives)), "margin": margin,
        "margin_choice_on_val": {str(m): round(v, 4) for m, v in scores.items()},
        "val_nonbadges": {"crops": int(len(e_nval)), "before": figures(e_nval, w_nval, None),
                          "after": figures(e_nval, w_nval, margin)},
        "test_nonbadges": {"crops": int(len(e_ntest)), "before": figures(e_ntest, w_ntest, None),
                           "after": figures(e_ntest, w_ntest, margin)},
        "held_out_photos_named_as_their_brand_in_sample": {
            "before": round(float(own0.mean()), 4),
            "after": round(float((own_after[0] & (own_after[2] == unseen_brand)).mean()), 4)},
    }


def build_and_evaluate(shared: Path, model_dir: Path, seed: int = 1337, per_brand: int | None = REFS_PER_BRAND,
                       threads: int = 2, top_k: int | None = None, scoring: str | None = None,
                       use_negatives: bool = True) -> tuple[Gallery, dict]:
    """scoring: "nearest" (top_k closest references; top_k chosen on validation when None),
    "prototype" (the mean of a brand's references), or None: chosen on validation among both."""
    from stream_pipeline.training.classifier import train

    records, info = train.load_dataset_info(model_dir)
    classes = list(info["classes"])
    clf = BrandClassifier.load(model_dir, num_threads=threads)
    t0 = time.time()
    refs = choose_references(records, classes, per_brand, seed)
    val = [r for r in records if r.split == "val" and r.brand in classes]
    test = [r for r in records if r.split == "test" and r.brand in classes]
    unseen = [r for r in records if r.split == "unseen"]
    log.info("embedding %d references, %d val, %d test, %d unseen-brand photos", len(refs), len(val), len(test),
             len(unseen))
    ref_set, val_set, test_set, unseen_set = (embed_records(clf, shared, x) for x in (refs, val, test, unseen))
    e_ref = ref_set.emb
    e_val, w_val = val_set.emb, val_set.widths
    e_test, w_test = test_set.emb, test_set.widths
    e_unseen, w_unseen = unseen_set.emb, unseen_set.widths
    val_truth = [r.brand for r in val]
    choice = {}
    if scoring == "prototype":
        candidates = [("prototype", TOP_K_CHOICES[0])]
    else:
        candidates = [("nearest", k) for k in ([top_k] if top_k else TOP_K_CHOICES)]
        candidates += [("prototype", TOP_K_CHOICES[0])] if scoring is None else []
    for rule, k in candidates:
        # chosen on validation (known accuracy with rejection plus in-sample unknown
        # rejection), never on test
        g = Gallery(e_ref, np.array([r.brand for r in refs], object), np.array(["train"] * len(refs), object),
                    0.0, clf.digest, keys=np.array(ref_set.keys, object), top_k=k, scoring=rule)
        vb, vp = best_scores(g, e_val)
        ub, _ = best_scores(g, e_unseen)
        t = choose_threshold(vb, ub)
        calibrate(g, vb, w_val, t)  # judged as it would ship
        v_limit, u_limit = g.thresholds_for(w_val), g.thresholds_for(w_unseen)
        score = (_accuracy(val_truth, [p if s >= lim else UNKNOWN_BRAND for p, s, lim in zip(vp, vb, v_limit)])
                 + float(np.mean(ub < u_limit))) / 2
        if not choice or score > max(choice.values()):
            base, val_best, val_pred, unseen_best, threshold = g, vb, vp, ub, t
        choice["prototype" if rule == "prototype" else str(k)] = score
    unseen_brands = sorted({r.brand for r in unseen})

    # Who names a badge the gallery finds to be a trained brand: the softmax or the gallery's own
    # nearest brand, whichever names more validation crops right.
    labels = list(clf.metadata["labels"])
    brand_cols = [i for i, lab in enumerate(labels) if lab in classes]
    val_softmax = [labels[brand_cols[j]] for j in val_set.probs[:, brand_cols].argmax(axis=1)]
    namer_val_top1 = {"softmax": round(_accuracy(val_truth, val_softmax), 4),
                      "gallery": round(_accuracy(val_truth, val_pred), 4)}
    base.names_trained_by = "gallery" if namer_val_top1["gallery"] > namer_val_top1["softmax"] else "softmax"

    # Width bands and whole photos: calibrated on known validation crops only; the global
    # threshold stays the fallback for sparse bands.
    calibrate(base, val_best, w_val, threshold)
    bands = base.size_thresholds
    unseen_limit = base.thresholds_for(w_unseen)

    # Cross-fitted unknown rejection: two folds of unseen brands, each judged by the global
    # threshold calibrated on the other fold (it judges sparse bands only, if any; the bands and
    # the whole-photo threshold use no unknown photo).
    rng = np.random.default_rng(seed)
    order = list(unseen_brands)
    rng.shuffle(order)
    folds = [set(order[0::2]), set(order[1::2])]
    brand_of = np.array([r.brand for r in unseen])
    crossfit = {}
    rejected_total = 0
    for k, fold in enumerate(folds):
        cal = ~np.isin(brand_of, list(fold))
        t_k = choose_threshold(val_best, unseen_best[cal])
        g_k = base.copy()
        calibrate(g_k, val_best, w_val, t_k)
        judged = np.isin(brand_of, list(fold))
        rej = unseen_best[judged] < g_k.thresholds_for(w_unseen[judged])
        rejected_total += int(rej.sum())
        crossfit[f"fold{k}"] = {"brands": sorted(fold), "threshold": t_k, "images": int(judged.sum()),
                                "rejected": round(float(rej.mean()), 4) if judged.any() else None}
    per_brand_rej = {b: round(float(np.mean(unseen_best[brand_of == b] < unseen_limit[brand_of == b])), 4)
                     for b in unseen_brands}
    val_limit = base.thresholds_for(w_val)

    # Non-badges (training/classifier/negatives.py): found on the logo detector's train split,
    # the margin chosen on its val split, judged on its test split.
    negatives = calibrate_negatives(base, clf, e_unseen, w_unseen, brand_of) if use_negatives else None

    # Known brands on test, with the gallery decision.
    test_best, test_pred = best_scores(base, e_test)
    test_limit = base.thresholds_for(w_test)
    truth = [r.brand for r in test]
    decided = [p if s >= t else UNKNOWN_BRAND for p, s, t in zip(test_pred, test_best, test_limit)]
    known_metrics = _known_metrics(test, truth, test_pred, decided, test_best, test_limit)

    # Enrolment: each held-out brand with enough photos, ENROL_SHOTS photos enrolled, rest queried.
    # The shots are photos `enroll` would take (it skips images under MIN_SIDE_PX a side as tiny);
    # every other photo, tiny ones included, is a query.
    enrollable = unseen_set.min_sides >= MIN_SIDE_PX
    enrolled = base.copy()
    queries: dict[str, np.ndarray] = {}
    enrol_rows = {}
    for b in unseen_brands:
        idx = np.nonzero(brand_of == b)[0]
        if len(idx) < MIN_ENROL_PHOTOS or enrollable[idx].sum() < ENROL_SHOTS:
            continue
        idx = rng.permutation(idx)
        shots = idx[enrollable[idx]][:ENROL_SHOTS]
        enrolled.add(b, e_unseen[shots])
        queries[b] = np.setdiff1d(idx, shots)
    q_truth, q_pred = [], []
    for b, idx in queries.items():
        preds = enrolled.match(e_unseen[idx], widths=w_unseen[idx])
        q_truth += [b] * len(idx)
        q_pred += [p.brand for p in preds]
        enrol_rows[b] = {"enrolled": ENROL_SHOTS, "queried": int(len(idx)),
                         "top1": round(_accuracy([b] * len(idx), [p.brand for p in preds]), 4)}
    after = [p.brand for p in enrolled.match(e_test, widths=w_test)]
    enrolment = {
        "shots": ENROL_SHOTS, "shot_min_side_px": MIN_SIDE_PX, "brands": enrol_rows,
        "top1_on_remaining_photos": round(_accuracy(q_truth, q_pred), 4), "photos": len(q_truth),
        "known_test_accuracy_before": round(_accuracy(truth, decided), 4),
        "known_test_accuracy_after": round(_accuracy(truth, after), 4),
    }

    # Softmax on the same test crops, for comparison.
    softmax_top1 = _accuracy(truth, [labels[i] for i in test_set.probs.argmax(axis=1)])

    # The shipped gallery: trained references + every photo of the held-out brands enrolled.
    # Every reference keeps the perceptual-hash key `enroll` gives its image, so enrolling one
    # of them again (under any name) is reported as already in the gallery.
    shipped = base.copy()
    for b in unseen_brands:
        mine = np.nonzero(brand_of == b)[0]
        shipped.add(b, e_unseen[mine], keys=[unseen_set.keys[i] for i in mine])
    report = {
        "references": {"per_brand": per_brand, "road_share": ROAD_SHARE, "trained_brands": len(classes),
                       "trained_references": len(refs), "enrolled_brands": unseen_brands,
                       "total_references": int(len(shipped.brands))},
        "threshold": threshold,
        "photo_threshold": base.threshold,
        "width_bands": [{"from_px": lo, "threshold": t, "val_crops": int(np.sum(
            (w_val >= lo) & (w_val < (WIDTH_BANDS + (10 ** 9,))[i + 1])))} for i, (lo, t) in enumerate(bands)],
        "width_band_crops": {"val_badge_crops": int(np.sum(w_val >= 0)), "val_whole_photos": int(np.sum(w_val < 0)),
                             "unknown_badge_crops": int(np.sum(w_unseen >= 0)),
                             "unknown_whole_photos": int(np.sum(w_unseen < 0))},
        "top_k": base.top_k,
        "scoring": base.scoring,
        "names_trained_by": base.names_trained_by,
        "names_trained_by_val_top1": namer_val_top1,
        "top_k_choice_on_val": {k: round(v, 4) for k, v in choice.items()},
        "calibration": {"max_known_rejection": MAX_KNOWN_REJECTION, "val_known_crops": len(val),
                        "val_known_rejected": round(float(np.mean(val_best < val_limit)), 4),
                        "val_top1": round(_accuracy([r.brand for r in val], val_pred), 4),
                        "unknown_photos": len(unseen), "unknown_brands": unseen_brands,
                        "unknown_rejected_in_sample": round(float(np.mean(unseen_best < unseen_limit)), 4)},
        "unknown_rejection_crossfit": {"rejected": round(rejected_total / max(1, len(unseen)), 4),
                                       "images": len(unseen), "folds": crossfit, "per_brand_in_sample": per_brand_rej},
        "known_test": known_metrics,
        "softmax_test_top1": round(softmax_top1, 4),
        "enrolment": enrolment,
        "non_badges": negatives,
        "seconds": round(time.time() - t0, 1),
    }
    shipped.info = {"built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "threshold_calibration": report["calibration"],
                    "unknown_rejection_crossfit": report["unknown_rejection_crossfit"]["rejected"]}
    return shipped, report


SIZE_BUCKETS = ((0, 16, "<16"), (16, 24, "16-24"), (24, 32, "24-32"), (32, 48, "32-48"), (48, 10 ** 9, ">=48"))


def badge_px(r: Record) -> int | None:
    """Badge width in pixels for crops cut from photos (None for whole-image records)."""
    return None if r.box is None else int(r.box[2] - r.box[0])


def size_bucket(px: int) -> str:
    return next(name for lo, hi, name in SIZE_BUCKETS if lo <= px < hi)


def _known_metrics(test: list[Record], truth: list[str], nearest: list[str], decided: list[str],
                   best: np.ndarray, threshold) -> dict:
    def block(idx):
        idx = list(idx)
        return {"n": len(idx), "top1": round(_accuracy([truth[i] for i in idx], [nearest[i] for i in idx]), 4),
                "with_rejection": round(_accuracy([truth[i] for i in idx], [decided[i] for i in idx]), 4)}

    out = {"all": block(range(len(test))), "rejected": round(float(np.mean(best < threshold)), 4)}
    for d in ("street", "closeup", "web"):
        out[d] = block(i for i, r in enumerate(test) if r.domain == d)
    out["street_by_badge_px"] = {name: block(i for i, r in enumerate(test) if r.domain == "street"
                                             and badge_px(r) is not None and lo <= badge_px(r) < hi)
                                 for lo, hi, name in SIZE_BUCKETS}
    return out


def write_gallery(gallery: Gallery, report: dict, model_dir: Path) -> Path:
    path = model_dir / GALLERY_NAME
    gallery.save(path)
    (model_dir / "gallery_report.json").write_text(json.dumps(report, indent=1))
    return path
