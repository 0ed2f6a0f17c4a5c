"""Per-track brand voting (after Frigate's per-object classification history).

Every badge reading of a track is a vote, weighted by how much it can be trusted: the
classifier's confidence times the badge's sharpness (its width in pixels, saturating at
`SHARP_BADGE_PX`: a 12-px badge is mostly guesswork, a 40-px one is read reliably). A brand is
decided once at least `min_votes` readings name a brand and one brand holds at least
`min_agreement` of their weight (plus the weight of sharp unknown readings, below). A track
whose readings keep disagreeing (at least `2 * min_votes` named readings without a decision) is
settled by its sharpest readings alone, when those agree.

An "unknown" reading of a small badge means "could not read" and does not count against a
brand. One of a sharp badge means the classifier saw it clearly and named no brand (lettering, a
badge of a brand it does not know), so it weighs against every brand in the agreement share: up
to `SHARP_UNKNOWN_WEIGHT`, ramping up over badge widths `REJECT_RAMP_PX`. Without that, a bus
whose "S.R.S." lettering was read 43 times, 36 of them as unknown, was named after the 7
readings that matched an enrolled brand. It gates the decision only: the decision's confidence
is still the named readings' agreement times their mean confidence, so a brand is not penalised
twice. Not evidence against: unknown readings of a box that looks like a licence plate (read
only when no other box was there; a plate is not the badge) and of a badge of unknown size; nor
evidence for: a brand read on a plate-like box.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from stream_pipeline.core.types import UNKNOWN_BRAND, BrandPrediction

SHARP_BADGE_PX = 32.0  # badge width from which a reading counts fully
MIN_SIZE_WEIGHT = 0.25  # weight factor of the smallest badges
SETTLE_AGREEMENT = 0.8  # the sharpest readings settle a disputed track only when they agree this well
# Weight of a sharp "unknown" reading against the brands; a named sharp reading weighs its
# confidence (typically 0.6-0.97), a clear rejection a little less. It ramps up from 0 to full
# over these badge widths (px), so the same readings do not flip at one pixel.
SHARP_UNKNOWN_WEIGHT = 0.5
REJECT_RAMP_PX = (24.0, 40.0)


def size_weight(badge_px: float | None) -> float:
    """0.25-1: how much a reading of a badge this wide (pixels) counts; unknown size counts fully."""
    if badge_px is None:
        return 1.0
    return float(min(1.0, max(MIN_SIZE_WEIGHT, badge_px / SHARP_BADGE_PX)))


@dataclass(frozen=True)
class Vote:
    prediction: BrandPrediction
    badge_px: float | None = None
    plate_like: bool = False  # the box read looks like a licence plate, not a badge

    @property
    def weight(self) -> float:
        return max(1e-6, self.prediction.confidence) * size_weight(self.badge_px)

    @property
    def sharpness(self) -> float:
        return self.badge_px if self.badge_px is not None else SHARP_BADGE_PX

    @property
    def named(self) -> bool:
        # a licence plate is not the badge: a brand read on one (plates read as land-rover, dacia
        # by look-alike glyphs) is no vote, as an unknown one is no vote against
        return self.prediction.brand != UNKNOWN_BRAND and not self.plate_like

    @property
    def against(self) -> float:
        """Weight against every brand: an unknown reading of a badge wide enough to have been read
        (not of a plate-like box, nor of a badge of unknown size); 0 for any other reading."""
        if self.named or self.plate_like or self.badge_px is None:
            return 0.0
        lo, hi = REJECT_RAMP_PX
        return SHARP_UNKNOWN_WEIGHT * float(min(1.0, max(0.0, (self.badge_px - lo) / (hi - lo))))


@dataclass(frozen=True)
class BrandDecision:
    brand: str  # slug or UNKNOWN_BRAND
    confidence: float  # named agreement share x mean confidence of the agreeing votes, 0-1
    votes: int  # readings in the vote window (the last `max_votes`) that named a brand
    total_readings: int  # all readings in the vote window, "unknown" included
    agreement: float  # the brand's share of the named weight plus the weight against (sharp unknowns)
    settled_by_sharpest: bool = False  # decided from the sharpest readings after disagreement


UNDECIDED = BrandDecision(UNKNOWN_BRAND, 0.0, 0, 0, 0.0)


class BrandVotes:
    """Vote history of one track: the decision is taken over the last `max_votes` readings (bounded
    memory, and a long-lived track follows what it shows now); counts per brand are kept for the
    whole track, for the vehicle record."""

    def __init__(
        self, min_votes: int = 3, min_agreement: float = 0.6, max_votes: int = 30, min_confidence: float = 0.0
    ) -> None:
        if min_votes < 1 or not 0 < min_agreement <= 1 or max_votes < 1 or not 0 <= min_confidence <= 1:
            raise ValueError("min_votes >= 1, 0 < min_agreement <= 1, max_votes >= 1, 0 <= min_confidence <= 1")
        self.min_votes = min_votes
        self.min_agreement = min_agreement
        self.min_confidence = min_confidence
        self._votes: deque[Vote] = deque(maxlen=max_votes)
        self.readings = 0  # all readings ever, beyond the bounded window
        self._by_brand: Counter = Counter()  # all readings ever, per brand named ("unknown" included)

    def add(self, prediction: BrandPrediction, badge_px: float | None = None, plate_like: bool = False) -> None:
        vote = Vote(prediction, badge_px, plate_like)
        self._votes.append(vote)
        self.readings += 1
        self._by_brand[prediction.brand if vote.named else UNKNOWN_BRAND] += 1

    def merge(self, other: "BrandVotes") -> None:
        """Take another track's readings (a duplicate track of the same vehicle)."""
        for vote in other._votes:
            self._votes.append(vote)
        self.readings += other.readings
        self._by_brand.update(other._by_brand)

    def support(self, brand: str) -> int:
        """Readings over the whole track that named `brand` (0 for "unknown": no brand decided)."""
        return 0 if brand == UNKNOWN_BRAND else self._by_brand[brand]

    def __len__(self) -> int:
        return len(self._votes)

    def _tally(self, votes: list[Vote], total: int) -> BrandDecision:
        """The leading brand among `votes`. Its agreement (the decision gate) is its share of the
        named weight plus the weight against; its confidence, the named share x the agreeing
        readings' mean confidence."""
        named = [v for v in votes if v.named]
        if not named:
            return BrandDecision(UNKNOWN_BRAND, 0.0, 0, total, 0.0)
        weight: Counter = Counter()
        for vote in named:
            weight[vote.prediction.brand] += vote.weight
        brand = max(weight, key=lambda b: (weight[b], sum(v.prediction.brand == b for v in named)))
        agreeing = [v.prediction.confidence for v in named if v.prediction.brand == brand]
        named_share = weight[brand] / sum(weight.values())
        agreement = weight[brand] / (sum(weight.values()) + sum(v.against for v in votes))
        confidence = named_share * sum(agreeing) / len(agreeing)
        return BrandDecision(brand, round(min(1.0, confidence), 4), len(named), total, round(agreement, 4))

    def tally(self) -> BrandDecision:
        """The current best brand and its support, whether or not it is decided."""
        return self._tally(list(self._votes), len(self._votes))

    def _decided(self, tally: BrandDecision) -> bool:
        return (tally.brand != UNKNOWN_BRAND and tally.votes >= self.min_votes
                and tally.agreement >= self.min_agreement and tally.confidence >= self.min_confidence)

    def decision(self) -> BrandDecision:
        """The decided brand, or UNKNOWN with the vote counts when not (yet) decided."""
        tally = self._tally(list(self._votes), len(self._votes))
        if self._decided(tally):
            return tally
        named = [v for v in self._votes if v.named]
        if len(named) >= 2 * self.min_votes:
            # Readings that keep disagreeing: the sharpest quarter of the named ones (at least
            # min_votes; ties in sharpness all join, so equally blurred readings never pick a
            # side) decides when it agrees clearly, with the unknown readings at least as sharp
            # weighing against. Blurred far-away readings of look-alike badges split votes.
            k = max(self.min_votes, len(named) // 4)
            cut = sorted(v.sharpness for v in named)[-k]
            sharpest = [v for v in self._votes if v.sharpness >= cut and (v.named or v.against > 0)]
            settled = self._tally(sharpest, len(self._votes))
            if self._decided(settled) and settled.agreement >= max(self.min_agreement, SETTLE_AGREEMENT):
                return BrandDecision(settled.brand, settled.confidence, tally.votes, tally.total_readings,
                                     settled.agreement, settled_by_sharpest=True)
        return BrandDecision(UNKNOWN_BRAND, 0.0, tally.votes, tally.total_readings, tally.agreement)
