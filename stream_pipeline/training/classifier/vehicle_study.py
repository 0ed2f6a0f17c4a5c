"""Per-vehicle decisions, estimated from photos: what the pipeline's vote would decide for a
vehicle whose badge it reads as it approaches. Not on the runtime path.

    python -m stream_pipeline.training.classifier.vehicle_study [--model-dir DIR] [--out FILE]

Each real street badge crop (test split of the trained brands; every street crop of the brands
kept out of training, with the gallery's copy of them removed, so they are truly unknown) stands
for one vehicle, read at five distances: the crop down-scaled to 0.4, 0.55, 0.7, 0.85 and 1.0 of
its size (never up-scaled: that would invent detail). The readings go through the shipped
classifier and gallery and the vote (`BrandVotes` with the default config's settings), as in
`run`. Reported: the share of vehicles named right, named wrong, and left unknown; for the
unknown brands, the share named as some brand (each is a false name). Both the current vote and
the vote before sharp unknown readings weighed against a brand (2026-11-29) are given, and the
current vote at other confidence floors (`min_confidence`).

A simulation: real approaches give more readings per vehicle (up to `max_votes`), at varying
angles and blur, so it is a comparison of rules more than a forecast.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from stream_pipeline.core.paths import MODELS_DIR, shared_dir
from stream_pipeline.core.types import UNKNOWN_BRAND

DISTANCES = (0.4, 0.55, 0.7, 0.85, 1.0)  # crop scale per reading, far to near
CONFIDENCE_FLOORS = (0.4, 0.45, 0.5, 0.55, 0.6)  # the vote's min_confidence, compared
MIN_READ_PX = 8  # a reading needs a crop at least this big a side


def approach(cut, badge_px: float) -> tuple[list[np.ndarray], list[float]]:
    """The badge as seen from further away: one down-scaled copy per distance, with its badge
    width. `cut(margin)` gives the full-size crop with that margin; each distance is cut with the
    margin the pipeline gives a badge of that width (`badge_margin`)."""
    from stream_pipeline.brands.classifier import badge_margin

    views, widths = [], []
    crops: dict[float, np.ndarray] = {}
    for scale in DISTANCES:
        margin = badge_margin(badge_px * scale)
        if margin not in crops:  # one cut per margin
            crops[margin] = cut(margin)
        crop = crops[margin]
        h, w = crop.shape[:2]
        size = (int(round(w * scale)), int(round(h * scale)))
        if min(size) < MIN_READ_PX:
            continue
        views.append(crop if scale == 1.0 else cv2.resize(crop, size, interpolation=cv2.INTER_AREA))
        widths.append(badge_px * scale)
    return views, widths


def decide(predictions, widths, config, sharp_unknowns_count: bool = True, min_confidence: float | None = None) -> str:
    from stream_pipeline.brands.votes import BrandVotes

    floor = config.min_confidence if min_confidence is None else min_confidence
    votes = BrandVotes(config.min_votes, config.min_agreement, config.max_votes, floor)
    for prediction, px in zip(predictions, widths):
        # before 2026-11-29 an unknown reading never counted: as a reading of unknown size now
        votes.add(prediction, badge_px=px if sharp_unknowns_count or prediction.brand != UNKNOWN_BRAND else None)
    return votes.decision().brand


def study(model_dir: Path, shared: Path) -> dict:
    from stream_pipeline.brands.classifier import BrandClassifier
    from stream_pipeline.brands.gallery import GALLERY_NAME, Gallery
    from stream_pipeline.core.config import load_config
    from stream_pipeline.training.classifier import train
    from stream_pipeline.training.classifier.dataset import load_record_image

    records, info = train.load_dataset_info(model_dir)
    classes = set(info["classes"])
    clf = BrandClassifier.load(model_dir)
    gallery = Gallery.load(model_dir / GALLERY_NAME)
    held_out = sorted({r.brand for r in records if r.split == "unseen"})
    for brand in held_out:  # the shipped gallery has them enrolled: make them unknown again
        gallery.remove(brand)
    clf.use_gallery(gallery)
    config = load_config(None).brands  # configs/default.yaml, as `run` uses it
    sets = {
        "known_street_test": [r for r in records if r.split == "test" and r.brand in classes
                              and r.box is not None and r.domain == "street"],
        "unknown_brands_street": [r for r in records if r.split == "unseen" and r.box is not None],
    }
    report: dict = {"distances": list(DISTANCES), "vote": {k: getattr(config, k) for k in
                                                           ("min_votes", "min_agreement", "min_confidence")},
                    "held_out_brands": held_out}
    def share(c: Counter, n: int) -> dict:
        return {k: round(c[k] / max(1, n), 4) for k in ("right", "wrong", "unknown")}

    for name, recs in sets.items():
        outcome = {True: Counter(), False: Counter()}
        by_floor = {f: Counter() for f in CONFIDENCE_FLOORS}
        for r in recs:
            views, widths = approach(lambda margin, r=r: load_record_image(shared, r, margin),
                                     float(r.box[2] - r.box[0]))
            predictions = clf.classify(views)
            for rule in (True, False):
                brand = decide(predictions, widths, config, rule)
                outcome[rule]["unknown" if brand == UNKNOWN_BRAND else "right" if brand == r.brand else "wrong"] += 1
            for floor in CONFIDENCE_FLOORS:
                brand = decide(predictions, widths, config, min_confidence=floor)
                by_floor[floor]["unknown" if brand == UNKNOWN_BRAND else "right" if brand == r.brand else "wrong"] += 1
        report[name] = {
            "vehicles": len(recs),
            **{label: share(c, len(recs))
               for label, c in (("current_vote", outcome[True]), ("vote_before_sharp_unknowns", outcome[False]))},
            "by_min_confidence": {str(f): share(c, len(recs)) for f, c in by_floor.items()},
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(MODELS_DIR / "brand_classifier"))
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    report = study(Path(args.model_dir), shared_dir())
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
