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


def test_sharp_confident_readings_outweigh_blurred_ones():
    votes = BrandVotes(min_votes=3, min_agreement=0.6, min_confidence=0.0)
    votes.add(_p("toyota", 0.5), badge_px=10)  # far away: weight 0.5 x 0.25
    votes.add(_p("toyota", 0.5), badge_px=11)
    votes.add(_p("bmw", 0.9), badge_px=40)  # close and confident: weight 0.9 x 1
    decision = votes.decision()
    assert decision.brand == "bmw", decision  # 2 of 3 readings say toyota, but weakly
    assert decision.agreement == pytest.approx(0.9 / (0.9 + 0.5 * 10 / 32 + 0.5 * 11 / 32), abs=1e-3)


def test_readings_that_keep_disagreeing_are_settled_by_the_sharpest():
    votes = BrandVotes(min_votes=3, min_agreement=0.6, min_confidence=0.6)
    # A Jaguar seen from behind: far-away readings split between look-alikes...
    for brand in ["mazda", "mazda", "mazda", "jaguar"] * 3:
        votes.add(_p(brand, 0.7), badge_px=14)
    assert votes.decision().brand == UNKNOWN_BRAND
    # ...then it comes close and the sharp readings agree, still short of 60 % of all weight
    for _ in range(3):
        votes.add(_p("jaguar", 0.8), badge_px=36)
    assert votes.tally().brand == "jaguar" and votes.tally().agreement < 0.6
    decision = votes.decision()
    assert decision.brand == "jaguar" and decision.settled_by_sharpest
    assert decision.votes == 15  # the record still counts every named reading


def test_disagreeing_sharp_readings_stay_unknown():
    votes = BrandVotes(min_votes=3, min_agreement=0.6)
    for brand in ["nissan", "mini"] * 6:
        votes.add(_p(brand, 0.8), badge_px=40)
    assert votes.decision().brand == UNKNOWN_BRAND


def test_merged_duplicate_track_votes_count_once_for_the_vehicle():
    a, b = BrandVotes(min_votes=3), BrandVotes(min_votes=3)
    a.add(_p("honda"), badge_px=30)
    a.add(_p("honda"), badge_px=30)
    b.add(_p("honda"), badge_px=30)
    assert a.decision().brand == UNKNOWN_BRAND
    a.merge(b)
    assert a.decision().brand == "honda" and a.readings == 3


def test_sharp_unknown_readings_weigh_against_a_brand_small_ones_do_not():
    # The dash-cam bus: its "S.R.S." lettering read clearly, mostly as unknown, a few times as an
    # enrolled brand. 36 sharp rejections outweigh 7 weak matches, also for the sharpest readings.
    bus = BrandVotes(min_votes=3, min_agreement=0.6, max_votes=43)
    for i in range(43):
        bus.add(_p("lancia", 0.66) if i % 6 == 2 else _p(UNKNOWN_BRAND, 0.55), badge_px=100 + i % 5)
    decision = bus.decision()
    assert decision.brand == UNKNOWN_BRAND and decision.votes == 7, decision
    assert bus.tally().agreement == pytest.approx(7 * 0.66 / (7 * 0.66 + 0.5 * 36), abs=1e-3)
    # The same readings with the unknown ones too small to read: they mean "could not read".
    far = BrandVotes(min_votes=3, min_agreement=0.6, max_votes=43)
    for i in range(43):
        far.add(_p("lancia", 0.66), badge_px=100) if i % 6 == 2 else far.add(_p(UNKNOWN_BRAND, 0.55), badge_px=14)
    assert far.decision().brand == "lancia"


def test_a_few_sharp_rejections_do_not_cost_a_brand_its_confidence():
    # A badge near its gallery threshold: 3 in 4 readings named at 0.7, 1 in 4 rejected. The
    # rejections gate the agreement (0.81) but do not lower the confidence a second time.
    votes = BrandVotes(min_votes=3, min_agreement=0.6, min_confidence=0.6)
    for i in range(12):
        votes.add(_p("kia", 0.7) if i % 4 else _p(UNKNOWN_BRAND, 0.5), badge_px=45)
    decision = votes.decision()
    assert decision.brand == "kia" and decision.confidence == pytest.approx(0.7)
    assert decision.agreement == pytest.approx(9 * 0.7 / (9 * 0.7 + 3 * 0.5), abs=1e-3)


def test_a_plate_read_as_unknown_is_not_evidence_against_the_badge():
    # A 20-px VW badge on 3 frames; on 2 others the plate was the only box and read as unknown.
    votes = BrandVotes(min_votes=3, min_agreement=0.6, min_confidence=0.6)
    for i in range(5):
        if i % 2:
            votes.add(_p(UNKNOWN_BRAND, 0.3), badge_px=70, plate_like=True)
        else:
            votes.add(_p("volkswagen", 0.9), badge_px=20)
    assert votes.decision().brand == "volkswagen"
    assert votes.tally().agreement == 1.0


def test_a_brand_read_on_a_licence_plate_is_no_vote():
    """Plates were read as land-rover and dacia (look-alike glyphs), on every try of the vehicle."""
    votes = BrandVotes(min_votes=3, min_agreement=0.6)
    for _ in range(6):
        votes.add(_p("land-rover", 0.8), badge_px=70, plate_like=True)
    assert votes.decision().brand == UNKNOWN_BRAND and votes.support("land-rover") == 0
    for _ in range(3):
        votes.add(_p("volkswagen", 0.9), badge_px=30)
    assert votes.decision().brand == "volkswagen" and votes.tally().agreement == 1.0


@pytest.mark.parametrize("badge_px, against", [(None, 0.0), (20, 0.0), (24, 0.0), (32, 0.25), (40, 0.5), (90, 0.5)])
def test_weight_against_ramps_with_badge_width(badge_px, against):
    """No step at one pixel; a reading of unknown size is not evidence against."""
    votes = BrandVotes(min_votes=1, min_agreement=0.5)
    votes.add(_p("audi", 0.8), badge_px=40)
    votes.add(_p(UNKNOWN_BRAND, 0.4), badge_px=badge_px)
    assert votes.tally().agreement == pytest.approx(0.8 / (0.8 + against), abs=1e-3)


# --- what a vehicle record says about its readings (real recognizer and record, stub models) ---


class _OneBadgeDetector:
    """One badge box near the top centre of every vehicle crop."""

    def detect(self, crops):
        return [Detections(np.array([[c.shape[1] / 2 - 20, 20, c.shape[1] / 2 + 20, 40]], dtype=np.float32),
                           np.array([0.8]), np.array([0])) for c in crops]


class _ScriptedClassifier:
    def __init__(self, script):
        self.script = list(script)

    def badge_margin(self, width):
        return 0.15

    def classify(self, badges):
        return [self.script.pop(0) for _ in badges]


def _read_track(script, **brands):
    """A parked car read once per frame by the real BrandRecognizer until `script` is spent;
    returns its vehicle record as the pipeline writes it."""
    from stream_pipeline.brands.badge_choice import BadgeChooser
    from stream_pipeline.brands.recognizer import BrandRecognizer
    from stream_pipeline.core.config import BrandsConfig
    from stream_pipeline.pipeline import Pipeline
    from stream_pipeline.tracking.tracker import TrackState

    recognizer = object.__new__(BrandRecognizer)  # the models stubbed, everything else real
    recognizer.config = BrandsConfig(**brands)
    recognizer.logo_detector, recognizer.classifier = _OneBadgeDetector(), _ScriptedClassifier(script)
    recognizer.choose_badge, recognizer._tick = BadgeChooser(recognizer.config), 0
    recognizer._read_class_ids = {2, 3, 7}  # car, motorcycle, truck: the default vehicle_classes
    image = np.full((720, 1280, 3), 90, np.uint8)
    track = TrackState(1, 0, 0.0, 0, 0.0, np.array([400, 300, 700, 500], np.float32), confirmed=True)
    tracked = Detections(np.array([[400, 300, 700, 500]], np.float32), np.array([0.9]), np.array([2]),
                         tracker_id=np.array([1]))
    for i in range(10 * len(script)):
        if not recognizer.classifier.script:
            break
        recognizer.process(Frame(image, i, i / 30), tracked, {1: track})
    assert not recognizer.classifier.script
    track.class_votes[2] += 1

    class _Names:
        names = {2: "car"}

    pipeline = object.__new__(Pipeline)
    pipeline.detector, pipeline.recognizer = _Names(), recognizer
    return track, pipeline._record(track, "clip", None)


def test_a_track_that_turns_out_to_be_a_bus_names_no_brand(tmp_path):
    """The class is weighed by box area, so a bus boxed as a truck while far away becomes a bus as
    it nears: the brand its lettering was read as while it was a truck is withdrawn (a brand event
    says unknown) and its record names none."""
    from collections import Counter

    from stream_pipeline.brands.badge_choice import BadgeChooser
    from stream_pipeline.brands.recognizer import BrandRecognizer, track_decision
    from stream_pipeline.core.config import BrandsConfig
    from stream_pipeline.tracking.tracker import TrackState

    recognizer = object.__new__(BrandRecognizer)
    recognizer.config = BrandsConfig(every_n_frames=1)
    recognizer._read_class_ids = {2, 3, 7}  # car, motorcycle, truck: the default
    recognizer.logo_detector = _OneBadgeDetector()
    recognizer.classifier = _ScriptedClassifier([_p("land-rover", 0.8)] * 4)
    recognizer.choose_badge, recognizer._tick = BadgeChooser(recognizer.config), 0
    image = np.full((720, 1280, 3), 90, np.uint8)
    box = np.array([400, 300, 700, 500], np.float32)
    track = TrackState(1, 0, 0.0, 0, 0.0, box, class_area=Counter({7: 6e4}), confirmed=True)
    tracked = Detections(box[None], np.array([0.9]), np.array([7]), tracker_id=np.array([1]))
    changes = [c for i in range(3) for c in recognizer.process(Frame(image, i, i / 30), tracked, {1: track})]
    assert [c.decision.brand for c in changes] == ["land-rover"]
    assert track_decision(track).brand == "land-rover"

    track.class_area[5] += 2e5  # nearer, boxed as a bus: a bus by area now
    changes = recognizer.process(Frame(image, 3, 0.1), tracked, {1: track})
    assert [c.decision.brand for c in changes] == [UNKNOWN_BRAND]
    assert track_decision(track).brand == UNKNOWN_BRAND
    assert track_decision(track).votes == 3  # the readings are kept, only the name is withheld
    assert recognizer.process(Frame(image, 4, 0.13), tracked, {1: track}) == []  # announced once

    track.class_area[7] += 4e5  # and back to a truck: the brand returns, and reading resumes
    changes = recognizer.process(Frame(image, 5, 0.17), tracked, {1: track})
    assert [c.decision.brand for c in changes] == ["land-rover"]
    assert track_decision(track).votes == 4

    # a bus again in frames the brand stage did not see (a duplicate track withheld, or the track's
    # last frames): the record, written as the track ends, is gated all the same
    from stream_pipeline.pipeline import Pipeline

    class _Names:
        names = {5: "bus", 7: "truck"}

    pipeline = object.__new__(Pipeline)
    pipeline.detector, pipeline.recognizer = _Names(), recognizer
    from stream_pipeline.sinks.snapshots import SnapshotWriter

    track.class_area[5] += 1e6
    track.best_view = image[300:500, 400:700].copy()
    record = pipeline._record(track, "clip", SnapshotWriter(tmp_path))
    assert (record.vehicle_class, record.brand, record.votes, record.readings) == ("bus", UNKNOWN_BRAND, 0, 4)
    # its snapshot is the vehicle; no badge: its best reading is lettering read as a brand
    assert record.snapshot is not None and record.badge_snapshot is None


def test_record_votes_and_readings_both_count_the_whole_track():
    # 45 readings, more than max_votes (30): 23 name toyota, 2 lexus, 20 are unknown (the unknowns
    # keep the window's named readings below stop_after_votes, so reading goes on)
    script = [_p("toyota"), _p(UNKNOWN_BRAND, 0.3)] * 20 + [_p("lexus")] * 2 + [_p("toyota")] * 3
    _, record = _read_track(script, every_n_frames=1, stop_after_votes=30)
    assert (record.brand, record.votes, record.readings) == ("toyota", 23, 45)
    # never decided (below min_confidence): no readings support the record's "unknown"
    _, record = _read_track([_p("toyota", 0.45)] * 45)
    assert (record.brand, record.votes, record.readings) == (UNKNOWN_BRAND, 0, 45)


def test_the_badge_snapshot_shows_the_recorded_brand():
    track, record = _read_track([_p("volkswagen", 0.80)] * 3 + [_p("skoda", 0.86)], every_n_frames=1)
    assert record.brand == "volkswagen"
    badge = track.brand.best_badge_for(record.brand)
    assert (badge.prediction.brand, badge.prediction.confidence) == ("volkswagen", 0.80)
    # an unknown first reading more confident than the named ones is not the snapshot of a kia
    track, record = _read_track([_p(UNKNOWN_BRAND, 0.62)] + [_p("kia", 0.60)] * 4, every_n_frames=1)
    assert record.brand == "kia" and track.brand.best_badge_for("kia").prediction.brand == "kia"
    # undecided: the best reading that named a brand, else an unknown one
    track, record = _read_track([_p(UNKNOWN_BRAND, 0.9), _p("kia", 0.4)], every_n_frames=1)
    assert record.brand == UNKNOWN_BRAND and track.brand.best_badge_for(UNKNOWN_BRAND).prediction.brand == "kia"


@pytest.mark.parametrize(("text", "expected"), [
    ("brands:\n  min_votes: 40\n", "'brands': Value error, min_votes (40) must not exceed max_votes (30)"),
    ("brands:\n  max_votes: 5\n  min_votes: 2\n", "stop_after_votes (10) must not exceed max_votes (5)"),
])
def test_vote_thresholds_beyond_the_vote_window_are_refused(tmp_path, text, expected):
    from stream_pipeline.core.config import load_config
    from stream_pipeline.core.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_a_plate_is_the_badge_snapshot_only_when_nothing_else_was_read():
    """The report's badge column showed licence plates for most unknown vehicles."""
    import numpy as np

    from stream_pipeline.brands.recognizer import BadgeReading, TrackBrand

    state = TrackBrand(BrandVotes(min_votes=3))
    box, image = np.zeros(4, np.float32), np.zeros((8, 8, 3), np.uint8)
    plate = BadgeReading(1, 10, box, 0.6, _p("land-rover", 0.8), image, plate_like=True)
    state.keep_if_best(plate)
    assert state.best_badge_for(UNKNOWN_BRAND) is plate  # nothing else was read
    grille = BadgeReading(1, 12, box, 0.5, _p(UNKNOWN_BRAND, 0.3), image)
    state.keep_if_best(grille)
    assert state.best_badge_for(UNKNOWN_BRAND) is grille and state.best_badge_for("land-rover") is None


def test_buses_are_not_read_unless_the_config_asks_for_them():
    """A bus front is destination signs and lettering (urban_arterial: a bus named land-rover);
    only the classes in brands.vehicle_classes are read."""
    from collections import Counter

    from pydantic import ValidationError

    from stream_pipeline.brands.recognizer import BrandRecognizer
    from stream_pipeline.core.config import BrandsConfig
    from stream_pipeline.tracking.tracker import TrackState

    box = np.array([100, 100, 400, 400], np.float32)

    def track(class_area):
        return TrackState(1, 0, 0.0, 0, 0.0, box, class_area=Counter(class_area), confirmed=True)

    default = BrandRecognizer(BrandsConfig())
    assert default._wants(track({2: 9e4}), box)  # a car
    assert not default._wants(track({5: 9e4, 2: 1e3}), box)  # a bus, seen once as a car when far
    with_buses = BrandRecognizer(BrandsConfig(vehicle_classes=["car", "bus"]))
    assert with_buses._wants(track({5: 9e4}), box)
    assert not with_buses._wants(track({7: 9e4}), box)  # trucks left out by this config
    with pytest.raises(ValidationError, match="duplicate"):
        BrandsConfig(vehicle_classes=["car", "car"])
    with pytest.raises(ValidationError):
        BrandsConfig(vehicle_classes=["tram"])
