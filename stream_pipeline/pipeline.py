"""The runtime loop: source → detection → tracking → brands → sinks, for one source."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from stream_pipeline.brands.recognizer import VEHICLE_PAD, BrandRecognizer, brand_support, crop, track_decision
from stream_pipeline.core.config import PipelineConfig
from stream_pipeline.core.errors import OutputError, SourceError
from stream_pipeline.core.observer import RunObserver
from stream_pipeline.core.records import VehicleRecord, utc_now_iso
from stream_pipeline.core.types import Detections, Frame
from stream_pipeline.detection import VehicleDetector
from stream_pipeline.observers import build_observers
from stream_pipeline.publishers import event_publishers
from stream_pipeline.sinks.annotate import Annotator
from stream_pipeline.sinks.events import EventLog, VehicleCsv
from stream_pipeline.sinks.outdir import prepare_out_dir
from stream_pipeline.sinks.snapshots import SnapshotWriter
from stream_pipeline.sinks.threaded_video import open_video_sink
from stream_pipeline.sinks.window import LiveWindow
from stream_pipeline.sources import FrameSource, open_source
from stream_pipeline.sources.prefetch import decode_ahead
from stream_pipeline.tracking import TrackState, VehicleTracker

log = logging.getLogger(__name__)

# A new vehicle snapshot is taken only when the box grew by this factor: copying a crop
# every frame would cost more than it adds.
SNAPSHOT_GROWTH = 1.15
STAGES = ("detect", "track", "brands", "render")


@dataclass
class RunSummary:
    source: str
    out_dir: Path
    frames: int = 0
    vehicles: int = 0
    brands_decided: int = 0
    elapsed_s: float = 0.0
    codec: str | None = None
    frames_dropped: int = 0
    stopped_by: str = "end"  # end | max-frames | quit | interrupted | error
    error: str | None = None
    source_fps: float = 0.0
    # Wall seconds spent per stage (detect, track, brands, render), for the benchmark.
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0


class ProgressCallback:
    """Receives progress; the CLI's rich display implements it."""

    def start(self, source: FrameSource) -> None: ...

    def update(self, frames: int, vehicles: int, fps: float) -> None: ...

    def stop(self) -> None: ...


class Pipeline:
    """Loads the models once; `run()` processes one source into one output folder."""

    def __init__(self, config: PipelineConfig, detector=None, recognizer: BrandRecognizer | None = None) -> None:
        """Models given are used as they are (serve: one model set shared by many cameras)."""
        self.config = config
        self.detector = detector if detector is not None else VehicleDetector(config.detector)
        if recognizer is None and config.brands.enabled:
            recognizer = BrandRecognizer(config.brands)
        self.recognizer = recognizer

    def run(
        self,
        source: str | Path | FrameSource,
        out_dir: str | Path,
        max_frames: int | None = None,
        show: bool = False,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        extra_observers: Sequence[RunObserver] = (),
        camera: str | None = None,
    ) -> RunSummary:
        out = Path(out_dir)
        prepare_out_dir(out)
        # A FrameSource handed in (serve's cameras) keeps its own newest-frame policy: no decode-ahead queue.
        frame_source = source if isinstance(source, FrameSource) else decode_ahead(
            open_source(source, self.config.source), self.config.source.decode_ahead_frames)
        summary = RunSummary(source=frame_source.name, out_dir=out)
        clock = summary.stage_s
        progress = progress or ProgressCallback()
        cfg = self.config.output
        started = time.perf_counter()
        output_failure: OutputError | None = None
        with ExitStack() as stack:
            # Sinks first: whatever happens to the source, they are closed (finalised) last.
            # Publishers before the event log: they close after it, so they get its last line too.
            publishers = [stack.enter_context(p) for p in event_publishers(self.config, out, frame_source.name, camera)]
            events = stack.enter_context(EventLog(out / "events.jsonl", publishers))
            table = stack.enter_context(VehicleCsv(out / "vehicles.csv")) if cfg.csv else None
            snapshots = SnapshotWriter(out) if cfg.snapshots else None
            try:
                stack.enter_context(frame_source)
            except SourceError as exc:
                events.write({"event": "stream", "status": "error", "source": frame_source.name,
                              "error": str(exc), "wall_time": utc_now_iso()})
                raise
            video = stack.enter_context(open_video_sink(out / "annotated.mp4", frame_source.fps, cfg,
                                                    timed=frame_source.is_live)) if cfg.video else None
            window = stack.enter_context(LiveWindow(self.config.display.window_name, self.config.display.max_window_px)) if show else None
            tracker = VehicleTracker(self.config.tracker, frame_rate=frame_source.fps)
            annotator = Annotator(self.detector.names, cfg.draw_clock)
            observers: list[RunObserver] = [*build_observers(self.config, self.detector.names), *extra_observers]
            summary.source_fps = frame_source.fps
            events.write({"event": "stream", "status": "started", "source": frame_source.name,
                          "live": frame_source.is_live, "fps": round(frame_source.fps, 3),
                          "total_frames": frame_source.total_frames, "wall_time": utc_now_iso(),
                          **({"camera": camera} if camera else {})})

            def finish(track: TrackState) -> None:
                record = self._record(track, frame_source.name, snapshots)
                for observer in observers:
                    record = observer.on_vehicle(track, record)
                event_id = events.write(record.to_event())
                if table is not None:
                    table.write(record, event_id)
                summary.vehicles += 1
                summary.brands_decided += record.brand != "unknown"

            # Ended tracks wait here until their record is written: Ctrl-C / SIGTERM (a KeyboardInterrupt
            # anywhere, e.g. in the brand stage of the frame in which a track ended) must not lose them.
            unwritten: list[TrackState] = []

            def finish_unwritten() -> None:
                while unwritten:
                    finish(unwritten[0])
                    unwritten.pop(0)

            def on_status(status: dict) -> None:
                # Live gaps (`stalled` / `resumed`), so consumers know an interval had no data. The
                # vehicles in view when the stream stalled are written then: what is in view after the
                # gap is not known to be them (a queue moved on, a camera reconnected).
                if status.get("status") == "stalled":
                    unwritten.extend(tracker.flush())
                    finish_unwritten()
                events.write({"event": "stream", **status, "source": frame_source.name, "wall_time": utc_now_iso()})

            frame_source.on_status = on_status
            progress.start(frame_source)

            try:
                for frame in frame_source.frames():
                    tracked = self._step(frame, tracker, events, clock, unwritten)
                    t0 = time.perf_counter()
                    for observer in observers:
                        for event in observer.on_frame(frame, tracked, tracker.tracks):
                            events.write(event)
                    clock["track"] += time.perf_counter() - t0
                    finish_unwritten()
                    t0 = time.perf_counter()
                    if video is not None or window is not None:
                        annotated = annotator.draw(frame, tracked, tracker.tracks, tracker.confirmed_count)
                        for observer in observers:
                            observer.draw(annotated, frame)
                        if video is not None:
                            video.write(annotated, frame.timestamp_s)
                        if window is not None and not window.show(annotated):
                            summary.stopped_by = "quit"
                    clock["render"] += time.perf_counter() - t0
                    summary.frames += 1
                    progress.update(summary.frames, tracker.confirmed_count, summary.frames / max(1e-9, time.perf_counter() - started))
                    if summary.stopped_by == "quit":
                        break
                    if max_frames is not None and summary.frames >= max_frames:
                        summary.stopped_by = "max-frames"
                        break
                    if should_stop is not None and should_stop():
                        summary.stopped_by = "interrupted"
                        break
            except KeyboardInterrupt:
                summary.stopped_by = "interrupted"
                # Said at once: closing a stream that is reconnecting, or a long video, takes a moment.
                log.info("interrupted: stopping the source and finalising the outputs")
            except SourceError as exc:
                summary.stopped_by, summary.error = "error", str(exc)
            except OutputError as exc:
                # An output cannot be written (disk full...): what still can be is finalised, the
                # end event says "error", and the run fails.
                summary.stopped_by, summary.error = "error", str(exc)
                output_failure = exc
            finally:
                progress.stop()
                # End of input, quit, Ctrl-C or a lost stream: every open track is reported.
                unwritten.extend(tracker.flush())
                finish_unwritten()
                if video is not None:
                    # Finalised before the end event, which then tells whether the video is complete.
                    try:
                        video.close()
                    except OutputError as exc:
                        summary.stopped_by, summary.error = "error", summary.error or str(exc)
                        output_failure = output_failure or exc
                summary.elapsed_s = time.perf_counter() - started
                summary.frames_dropped = frame_source.frames_dropped
                summary.codec = video.codec_name if video is not None else None
                truncated = getattr(frame_source, "truncated", False)
                events.write({"event": "stream", "status": "error" if summary.error else "ended",
                              "source": frame_source.name, "reason": summary.stopped_by, "error": summary.error,
                              "frames": summary.frames, "frames_dropped": summary.frames_dropped,
                              "truncated": truncated,
                              "frames_undecodable": getattr(frame_source, "frames_undecodable", 0),
                              "vehicles": summary.vehicles,
                              "brands_decided": summary.brands_decided, "elapsed_s": round(summary.elapsed_s, 3),
                              "fps": round(summary.fps, 2), "codec": summary.codec,
                              **{k: v for observer in observers for k, v in observer.summary().items()},
                              "wall_time": utc_now_iso()})
        if output_failure is not None:
            raise output_failure
        return summary

    def _step(
        self, frame: Frame, tracker: VehicleTracker, events: EventLog, clock: dict[str, float],
        ended: list[TrackState],
    ) -> Detections:
        """Detect, track and read brands on one frame; the tracks that ended are added to `ended`
        at once, before anything else can be interrupted."""
        t0 = time.perf_counter()
        detections = self.detector.detect(frame.image)
        t1 = time.perf_counter()
        tracked, gone = tracker.update(detections, frame)
        ended.extend(gone)
        for row, track_id in enumerate(tracked.tracker_id):
            track = tracker.tracks.get(int(track_id))
            area = float(tracked.area[row])
            if track is not None and area > track.best_view_area * SNAPSHOT_GROWTH:
                track.best_view, _ = crop(frame.image, tracked.xyxy[row], VEHICLE_PAD)
                track.best_view = track.best_view.copy()
                track.best_view_area = area
        t2 = time.perf_counter()
        clock["detect"] += t1 - t0
        clock["track"] += t2 - t1
        if self.recognizer is not None and len(tracked):
            for change in self.recognizer.process(frame, tracked, tracker.tracks):
                d = change.decision
                events.write({"event": "brand", "track_id": change.track.track_id, "brand": d.brand,
                              "brand_confidence": d.confidence, "votes": brand_support(change.track, d.brand),
                              "frame": frame.index, "stream_s": round(frame.timestamp_s, 3), "wall_time": utc_now_iso()})
            clock["brands"] += time.perf_counter() - t2
        return tracked

    def _record(self, track: TrackState, source: str, snapshots: SnapshotWriter | None) -> VehicleRecord:
        if self.recognizer is not None:
            self.recognizer.refresh_class_gate(track)
        decision = track_decision(track)
        snapshot = badge_snapshot = None
        if snapshots is not None:
            snapshot = snapshots.save(f"vehicle_{track.track_id:06d}", track.best_view)
            # a vehicle whose class is not read (a bus) shows no badge: its best one is a sign read as a brand
            readable = track.brand is not None and track.brand.readable_class
            best_badge = track.brand.best_badge_for(decision.brand) if readable else None
            if best_badge is not None:
                badge_snapshot = snapshots.save(f"badge_{track.track_id:06d}", best_badge.badge_image)
        readings = track.brand.votes.readings if track.brand is not None else 0
        return VehicleRecord(
            track_id=track.track_id,
            vehicle_class=self.detector.names.get(track.class_id, str(track.class_id)),
            first_frame=track.first_frame,
            last_frame=track.last_frame,
            first_seen_s=round(track.first_seen_s, 3),
            last_seen_s=round(track.last_seen_s, 3),
            wall_time=utc_now_iso(),
            brand=decision.brand,
            brand_confidence=float(decision.confidence),
            votes=brand_support(track, decision.brand),
            readings=readings,
            bbox=[round(float(v), 1) for v in track.bbox],
            snapshot=snapshot,
            badge_snapshot=badge_snapshot,
            frames_seen=track.hits,
            detection_confidence=round(float(track.last_confidence), 4),
            source=source,
        )
