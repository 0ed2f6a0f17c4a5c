"""Brand stage: vehicle crop → badge (logo detector) → brand (classifier) → track vote.

Badge recognition is the costly stage, so it is scheduled: each frame at most
`max_vehicles_per_frame` confirmed vehicles, big enough to show a badge, least recently
tried first, and a track is retried only every `every_n_frames` frames. Both models run
batched over the selected crops.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np

from stream_pipeline.brands.badge_choice import BadgeChooser, is_close_up
from stream_pipeline.brands.votes import BrandDecision, BrandVotes
from stream_pipeline.core.config import BrandsConfig
from stream_pipeline.core.errors import ModelError
from stream_pipeline.core.paths import resolve_model_path
from stream_pipeline.core.types import UNKNOWN_BRAND, BrandPrediction, Detections, Frame
from stream_pipeline.detection.vehicle_detector import COCO_VEHICLE_IDS
from stream_pipeline.tracking.tracker import TrackState

log = logging.getLogger(__name__)

# Context kept around the vehicle box (fraction of its size): badges sit at the very
# edge of tight boxes (grille, tailgate).
VEHICLE_PAD = 0.06


@dataclass
class BadgeReading:
    """One badge read on one track in one frame."""

    track_id: int
    frame_index: int
    badge_xyxy: np.ndarray  # in frame pixels
    badge_confidence: float
    prediction: BrandPrediction
    badge_image: np.ndarray
    plate_like: bool = False  # the box read looks like a licence plate


PLATE_KEY = "\0plate"  # where plate readings are kept in best_by_brand: under no brand

@dataclass
class TrackBrand:
    """Brand-stage state attached to a TrackState (pruned with it)."""

    votes: BrandVotes
    last_attempt_tick: int = -(10**9)
    announced: str = UNKNOWN_BRAND
    # The most confident reading of each brand read on the track ("unknown" included): the badge
    # snapshot must show the brand the record names, whichever brand was read most confidently.
    best_by_brand: dict[str, BadgeReading] = field(default_factory=dict)
    last_badge_xyxy: np.ndarray | None = None
    last_badge_frame: int = -1
    # False while the vehicle's class (area-weighted, so it can change as the vehicle nears) is
    # not one brands are read on: a bus first boxed as a truck far away keeps its early votes,
    # but names no brand once it is known to be a bus.
    readable_class: bool = True

    def decision(self) -> BrandDecision:
        """The track's decided brand: its votes' decision, unknown while its class is not read."""
        decision = self.votes.decision()
        if self.readable_class or decision.brand == UNKNOWN_BRAND:
            return decision
        return BrandDecision(UNKNOWN_BRAND, 0.0, decision.votes, decision.total_readings, decision.agreement)

    def keep_if_best(self, reading: BadgeReading) -> None:
        # a plate is no badge of any brand (votes.py): kept apart, the snapshot of last resort
        key = PLATE_KEY if reading.plate_like else reading.prediction.brand
        best = self.best_by_brand.get(key)
        if best is None or reading.prediction.confidence > best.prediction.confidence:
            self.best_by_brand[key] = reading

    def best_badge_for(self, brand: str) -> BadgeReading | None:
        """The badge snapshot for a record naming `brand`: its best reading. With no brand decided,
        the best reading that named any brand, else the best unknown one, else a plate's."""
        if brand != UNKNOWN_BRAND:
            return self.best_by_brand.get(brand)
        named = [r for b, r in self.best_by_brand.items() if b not in (UNKNOWN_BRAND, PLATE_KEY)]
        candidates = named or [r for b, r in self.best_by_brand.items() if b == UNKNOWN_BRAND] or \
            list(self.best_by_brand.values())
        return max(candidates, key=lambda r: r.prediction.confidence, default=None)

    @property
    def best_badge(self) -> BadgeReading | None:
        """The badge snapshot for the current decision."""
        return self.best_badge_for(self.decision().brand)

    def absorb(self, other: "TrackBrand") -> None:
        """Take the readings of a duplicate track of the same vehicle."""
        self.votes.merge(other.votes)
        for reading in other.best_by_brand.values():
            self.keep_if_best(reading)


@dataclass(frozen=True)
class BrandChange:
    """A track whose decided brand changed this frame."""

    track: TrackState
    decision: BrandDecision


def crop(image: np.ndarray, xyxy: np.ndarray, pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut `xyxy` grown by `pad` of its size, clipped to the image; returns (crop, origin xy)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    dx, dy = (x2 - x1) * pad, (y2 - y1) * pad
    ix1, iy1 = max(0, int(x1 - dx)), max(0, int(y1 - dy))
    ix2, iy2 = min(w, int(np.ceil(x2 + dx))), min(h, int(np.ceil(y2 + dy)))
    return image[iy1:iy2, ix1:ix2], np.array([ix1, iy1], dtype=np.float32)


class BrandRecognizer:
    def __init__(self, config: BrandsConfig) -> None:
        self.config = config
        self._read_class_ids = {COCO_VEHICLE_IDS[name] for name in config.vehicle_classes}
        logo_path = resolve_model_path(config.logo_detector)
        classifier_path = resolve_model_path(config.classifier)
        for what, path in (("logo detector", logo_path), ("brand classifier", classifier_path)):
            if not path.exists():
                raise ModelError(
                    f"{what} not found at {path} (set brands.enabled: false in the config to run without brands)"
                )
        from stream_pipeline.brands.classifier import BrandClassifier
        from stream_pipeline.brands.logo_detector import LogoDetector

        self.logo_detector = LogoDetector.load(logo_path, conf=config.logo_confidence)
        self.classifier = BrandClassifier.load(classifier_path, threshold=config.classifier_threshold)
        if config.gallery:
            from stream_pipeline.brands.gallery import Gallery

            gallery = Gallery.load(resolve_model_path(config.gallery))
            if config.gallery_threshold is not None:  # one threshold for every badge size
                gallery.threshold, gallery.size_thresholds = config.gallery_threshold, []
            self.classifier.use_gallery(gallery)
        self.choose_badge = BadgeChooser(config)
        self._tick = 0

    def fork(self, config: BrandsConfig | None = None) -> "BrandRecognizer":
        """The same loaded models for one more stream (serve: one per camera), with its own
        scheduling tick and, optionally, its own scheduling/voting settings."""
        twin = copy.copy(self)
        twin._tick = 0
        if config is not None:
            twin.config = config
            twin.choose_badge = BadgeChooser(config)
        return twin

    def new_track_state(self) -> TrackBrand:
        c = self.config
        return TrackBrand(BrandVotes(c.min_votes, c.min_agreement, c.max_votes, c.min_confidence))

    def _state(self, track: TrackState) -> TrackBrand:
        if track.brand is None:
            track.brand = self.new_track_state()
        return track.brand

    def _wants(self, track: TrackState, box: np.ndarray) -> bool:
        state = self._state(track)
        if self._tick - state.last_attempt_tick < self.config.every_n_frames:
            return False
        if min(box[2] - box[0], box[3] - box[1]) < self.config.min_vehicle_px:
            return False
        if not self._readable(track):
            return False  # a bus (by default): its sign and lettering are no car badge
        decided = state.decision()
        return not (decided.brand != UNKNOWN_BRAND and decided.votes >= self.config.stop_after_votes)

    def _readable(self, track: TrackState) -> bool:
        # a track with no class votes yet (as unit tests build them) is read
        return not (track.class_area or track.class_votes) or track.class_id in self._read_class_ids

    def refresh_class_gate(self, track: TrackState) -> None:
        """Bring the track's class gate up to date (its record is about to be written: a duplicate
        track withheld from the frames, or one that ended, was not seen by `process` since its class
        last changed)."""
        if track.brand is not None:
            track.brand.readable_class = self._readable(track)

    def _announce(self, state: TrackBrand, track: TrackState, changed: list[BrandChange]) -> None:
        decision = state.decision()
        if decision.brand != state.announced:
            state.announced = decision.brand
            changed.append(BrandChange(track, decision))

    def process(self, frame: Frame, tracked: Detections, tracks: dict[int, TrackState]) -> list[BrandChange]:
        """Read badges on some tracked vehicles; returns tracks whose decided brand changed."""
        self._tick += 1
        changed: list[BrandChange] = []
        candidates = []
        for row in range(len(tracked)):
            track = tracks.get(int(tracked.tracker_id[row]))
            if track is None:
                continue
            state = self._state(track)
            was_readable = state.readable_class
            self.refresh_class_gate(track)
            if state.readable_class != was_readable:  # the class the tracker settled on changed
                self._announce(state, track, changed)
            if self._wants(track, tracked.xyxy[row]):
                area = float(tracked.area[row])
                candidates.append((track.brand.last_attempt_tick, -area, row, track))
        if not candidates:
            return changed
        candidates.sort(key=lambda item: item[:2])
        selected = candidates[: self.config.max_vehicles_per_frame]

        vehicle_crops, origins, chosen, close_ups = [], [], [], []
        frame_h, frame_w = frame.image.shape[:2]
        for _, _, row, track in selected:
            track.brand.last_attempt_tick = self._tick
            vehicle, origin = crop(frame.image, tracked.xyxy[row], VEHICLE_PAD)
            if vehicle.size:
                vehicle_crops.append(vehicle)
                origins.append(origin)
                chosen.append(track)
                close_ups.append(
                    is_close_up(tracked.xyxy[row], frame_w, frame_h, self.config.closeup_min_frame_fraction)
                )
        if not vehicle_crops:
            return changed

        logo_results = self.logo_detector.detect(vehicle_crops)
        badges, badge_boxes, badge_tracks, plates = [], [], [], []
        for track, origin, vehicle, logos, close_up in zip(chosen, origins, vehicle_crops, logo_results, close_ups):
            best = self.choose_badge(vehicle, logos, close_up)
            if best is None:
                continue
            box = logos.xyxy[best] + np.concatenate([origin, origin])
            # cut exactly as the classifier's evaluation crops are cut (badge_margin)
            badge, _ = crop(frame.image, box, self.classifier.badge_margin(float(box[2] - box[0])))
            if badge.size == 0:
                continue
            badges.append(badge)
            badge_boxes.append((box, float(logos.confidence[best])))
            badge_tracks.append(track)
            # a plate read as unknown is not evidence against the vehicle's brand (votes.py)
            plates.append(bool(self.choose_badge.plate_like(vehicle, logos[np.array([best])])[0]))
        if not badges:
            return changed

        for track, (box, logo_conf), badge, plate, prediction in zip(
            badge_tracks, badge_boxes, badges, plates, self.classifier.classify(badges)
        ):
            state = track.brand
            state.votes.add(prediction, badge_px=float(box[2] - box[0]), plate_like=plate)
            state.last_badge_xyxy, state.last_badge_frame = box, frame.index
            state.keep_if_best(BadgeReading(track.track_id, frame.index, box, logo_conf, prediction, badge.copy(),
                                            plate_like=plate))
            self._announce(state, track, changed)
        return changed


def track_decision(track: TrackState) -> BrandDecision:
    """The brand decision of a track (unknown with no votes when never read)."""
    if track.brand is None:
        return BrandDecision(UNKNOWN_BRAND, 0.0, 0, 0, 0.0)
    return track.brand.decision()


def brand_support(track: TrackState, brand: str) -> int:
    """The `votes` of a record or brand event: readings over the whole track that named `brand`
    (0 when it is unknown), counted like `readings`, not only within the vote window."""
    return track.brand.votes.support(brand) if track.brand is not None else 0
