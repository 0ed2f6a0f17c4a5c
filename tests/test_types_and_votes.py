"""The typed record between stages and per-track brand voting."""

from __future__ import annotations

import numpy as np
import pytest

from stream_pipeline.brands.votes import BrandVotes
from stream_pipeline.core.types import UNKNOWN_BRAND, BrandPrediction, Detections, Frame


def test_detections_validates_shapes():
    with pytest.raises(ValueError, match="confidence"):
        Detections(np.zeros((2, 4)), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="x2 >= x1"):
        Detections(np.array([[10, 0, 5, 5]]), [0.5], [2])


def test_detections_select_keeps_rows_aligned():
    det = Detections(np.array([[0, 0, 10, 10], [5, 5, 25, 15]]), [0.9, 0.4], [2, 7], tracker_id=[3, 4])
    picked = det[det.confidence < 0.5]
    assert len(picked) == 1
    assert picked.class_id.tolist() == [7] and picked.tracker_id.tolist() == [4]
    assert picked.area.tolist() == [200.0]
    assert len(Detections.empty()) == 0 and Detections.empty().tracker_id.dtype == np.int64


def test_frame_rejects_non_bgr():
    with pytest.raises(ValueError):
        Frame(np.zeros((4, 4), dtype=np.uint8), 0, 0.0)


def _p(brand: str, confidence: float = 0.9) -> BrandPrediction:
    return BrandPrediction(brand, confidence)


def test_votes_need_minimum_and_agreement():
    votes = BrandVotes(min_votes=3, min_agreement=0.6, max_votes=10)
    votes.add(_p("bmw"))
    votes.add(_p("bmw"))
    assert votes.decision().brand == UNKNOWN_BRAND  # two votes are not enough
    votes.add(_p("audi"))
    assert votes.decision().brand == "bmw"  # 2 of 3 agree >= 0.6
    votes.add(_p("audi"))
    assert votes.decision().brand == UNKNOWN_BRAND  # 2 of 4 = 0.5 < 0.6: undecided
    decision = votes.tally()
    assert decision.votes == 4 and decision.agreement == 0.5


def test_unknown_readings_do_not_outvote_a_brand():
    votes = BrandVotes(min_votes=2, min_agreement=0.6)
    for _ in range(5):
        votes.add(_p(UNKNOWN_BRAND, 0.2))
    votes.add(_p("volkswagen", 0.8))
    votes.add(_p("volkswagen", 0.6))
    decision = votes.decision()
    assert decision.brand == "volkswagen"
    assert decision.votes == 2 and decision.total_readings == 7
    assert decision.confidence == pytest.approx(0.7)


def test_vote_history_is_bounded():
    votes = BrandVotes(min_votes=1, min_agreement=0.5, max_votes=4)
    for _ in range(10):
        votes.add(_p("ford"))
    for _ in range(4):
        votes.add(_p("kia"))
    assert len(votes) == 4 and votes.readings == 14
    assert votes.decision().brand == "kia"  # old votes fell out of the window


def test_rtsp_credentials_are_redacted_in_names():
    from stream_pipeline.sources import open_source

    source = open_source("rtsp://admin:s3cret@127.0.0.1:554/stream1")
    assert source.name == "rtsp://admin:***@127.0.0.1:554/stream1"
    assert source.is_live and open_source("0").is_live and not open_source("clip.mp4").is_live


def test_many_weak_readings_are_not_a_decision():
    votes = BrandVotes(min_votes=3, min_agreement=0.6, min_confidence=0.5)
    for _ in range(20):
        votes.add(_p("audi", 0.2))
    assert votes.tally().brand == "audi"
    assert votes.decision().brand == UNKNOWN_BRAND
