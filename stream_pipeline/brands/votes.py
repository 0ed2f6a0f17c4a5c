"""Per-track brand voting (after Frigate's per-object classification history).

Every badge reading of a track is a vote, weighted by how much it can be trusted: the
classifier's confidence times the badge's sharpness (its width in pixels, saturating at
`SHARP_BADGE_PX`: a 12-px badge is mostly guesswork, a 40-px one is read reliably). A brand is
decided once at least `min_votes` readings name a brand and one brand holds at least
`min_agreement` of their weight. A track whose readings keep disagreeing (at least
`2 * min_votes` named readings without a decision) is settled by its sharpest readings alone,
when those agree. An "unknown" reading of a small badge means "could not read" and does not
count against a brand; one of a sharp badge (at least `SHARP_BADGE_PX` wide) means the classifier
saw it clearly and named no brand (lettering, a badge of a brand it does not know), so it weighs
against every brand (`SHARP_UNKNOWN_WEIGHT`). Without that, a bus whose "S.R.S." lettering was
read 43 times, 36 of them as unknown, was named after the 7 readings that matched an enrolled
brand.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from stream_pipeline.core.types import UNKNOWN_BRAND, BrandPrediction

SHARP_BADGE_PX = 32.0  # badge width from which a reading counts fully
MIN_SIZE_WEIGHT = 0.25  # weight factor of the smallest badges
SETTLE_AGREEMENT = 0.8  # the sharpest readings settle a disputed track only when they agree this well
# Weight of a sharp "unknown" reading against the brands; a named sharp reading weighs its
# confidence (typically 0.6-0.97), a clear rejection a little less.
SHARP_UNKNOWN_WEIGHT = 0.5


def size_weight(badge_px: float | None) -> float:
    """0.25-1: how much a reading of a badge this wide (pixels) counts; unknown size counts fully."""
    if badge_px is None:
        return 1.0
    return float(min(1.0, max(MIN_SIZE_WEIGHT, badge_px / SHARP_BADGE_PX)))


@dataclass(frozen=True)
class Vote:
    prediction: BrandPrediction
    badge_px: float | None = None

    @property
    def weight(self) -> float:
        return max(1e-6, self.prediction.confidence) * size_weight(self.badge_px)

    @property
    def sharpness(self) -> float:
        return self.badge_px if self.badge_px is not None else SHARP_BADGE_PX

    @property
    def named(self) -> bool:
        return self.prediction.brand != UNKNOWN_BRAND

    @property
    def rejects(self) -> bool:
        """An unknown reading of a badge sharp enough to have been read: evidence against the brands."""
        return not self.named and self.badge_px is not None and self.badge_px >= SHARP_BADGE_PX


@dataclass(frozen=True)
class BrandDecision:
    brand: str  # slug or UNKNOWN_BRAND
    confidence: float  # agreement share x mean confidence of the agreeing votes, 0-1
    votes: int  # readings that named a brand
    total_readings: int  # all readings, "unknown" included
    agreement: float  # weight share of the brand-naming votes that agree
    settled_by_sharpest: bool = False  # decided from the sharpest readings after disagreement


UNDECIDED = BrandDecision(UNKNOWN_BRAND, 0.0, 0, 0, 0.0)


class BrandVotes:
    """Bounded vote history of one track."""

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

    def add(self, prediction: BrandPrediction, badge_px: float | None = None) -> None:
        self._votes.append(Vote(prediction, badge_px))
        self.readings += 1

    def merge(self, other: "BrandVotes") -> None:
        """Take another track's readings (a duplicate track of the same vehicle)."""
        for vote in other._votes:
            self._votes.append(vote)
        self.readings += other.readings

    def __len__(self) -> int:
        return len(self._votes)

    def _tally(self, votes: list[Vote], total: int) -> BrandDecision:
        """The leading brand among `votes`; its agreement is its share of the named weight plus
        that of the sharp unknown readings among them."""
        named = [v for v in votes if v.named]
        if not named:
            return BrandDecision(UNKNOWN_BRAND, 0.0, 0, total, 0.0)
        weight: Counter = Counter()
        for vote in named:
            weight[vote.prediction.brand] += vote.weight
        brand = max(weight, key=lambda b: (weight[b], sum(v.prediction.brand == b for v in named)))
        agreeing = [v.prediction.confidence for v in named if v.prediction.brand == brand]
        against = SHARP_UNKNOWN_WEIGHT * sum(v.rejects for v in votes)
        agreement = weight[brand] / (sum(weight.values()) + against)
        confidence = agreement * sum(agreeing) / len(agreeing)
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
        # the readings that say something: named ones and sharp unknown ones
        telling = [v for v in self._votes if v.named or v.rejects]
        if tally.votes >= 2 * self.min_votes:
            # Readings that keep disagreeing: the sharpest quarter (at least min_votes; ties in
            # sharpness all join, so equally blurred readings never pick a side) decides when it
            # agrees clearly. Blurred far-away readings of look-alike badges are what split votes.
            k = max(self.min_votes, len(telling) // 4)
            cut = sorted(v.sharpness for v in telling)[-k]
            sharpest = [v for v in telling if v.sharpness >= cut]
            settled = self._tally(sharpest, len(self._votes))
            if self._decided(settled) and settled.agreement >= max(self.min_agreement, SETTLE_AGREEMENT):
                return BrandDecision(settled.brand, settled.confidence, tally.votes, tally.total_readings,
                                     settled.agreement, settled_by_sharpest=True)
        return BrandDecision(UNKNOWN_BRAND, 0.0, tally.votes, tally.total_readings, tally.agreement)
