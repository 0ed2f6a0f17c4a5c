"""Per-track brand voting (after Frigate's per-object classification history).

Every badge reading of a track is a vote. A brand is decided once there are at least
`min_votes` readings that name a brand and one brand holds at least `min_agreement`
of them. "unknown" readings (unreadable or foreign badge) are kept for the record but
do not count against a brand: they mean "could not read", not "another brand".
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from stream_pipeline.core.types import UNKNOWN_BRAND, BrandPrediction


@dataclass(frozen=True)
class BrandDecision:
    brand: str  # slug or UNKNOWN_BRAND
    confidence: float  # agreement share x mean confidence of the agreeing votes, 0-1
    votes: int  # readings that named a brand
    total_readings: int  # all readings, "unknown" included
    agreement: float  # share of brand-naming votes that agree


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
        self._votes: deque[BrandPrediction] = deque(maxlen=max_votes)
        self.readings = 0  # all readings ever, beyond the bounded window

    def add(self, prediction: BrandPrediction) -> None:
        self._votes.append(prediction)
        self.readings += 1

    def __len__(self) -> int:
        return len(self._votes)

    def tally(self) -> BrandDecision:
        """The current best brand and its support, whether or not it is decided."""
        named = [vote for vote in self._votes if vote.brand != UNKNOWN_BRAND]
        if not named:
            return BrandDecision(UNKNOWN_BRAND, 0.0, 0, len(self._votes), 0.0)
        counts = Counter(vote.brand for vote in named)
        # Ties go to the brand with the higher summed confidence.
        brand = max(counts, key=lambda b: (counts[b], sum(v.confidence for v in named if v.brand == b)))
        agreeing = [vote.confidence for vote in named if vote.brand == brand]
        agreement = len(agreeing) / len(named)
        confidence = agreement * sum(agreeing) / len(agreeing)
        return BrandDecision(brand, round(min(1.0, confidence), 4), len(named), len(self._votes), round(agreement, 4))

    def decision(self) -> BrandDecision:
        """The decided brand, or UNKNOWN with the vote counts when not (yet) decided."""
        tally = self.tally()
        if (
            tally.brand != UNKNOWN_BRAND
            and tally.votes >= self.min_votes
            and tally.agreement >= self.min_agreement
            and tally.confidence >= self.min_confidence
        ):
            return tally
        return BrandDecision(UNKNOWN_BRAND, 0.0, tally.votes, tally.total_readings, tally.agreement)
