"""End-to-end runs on real clips from ../shared/videos (vehicle path; brands off for speed)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stream_pipeline.core.paths import PROJECT_ROOT
from stream_pipeline.core.records import utc_now_iso
from tests.conftest import count_video_frames, read_events, run_cli
from tests.live_helpers import CliRun, RtspServer

VEHICLE_FIELDS = {
    "event", "track_id", "class", "first_frame", "last_frame", "first_seen_s", "last_seen_s", "wall_time",
    "brand", "brand_confidence", "votes", "bbox", "snapshot",
}


@pytest.fixture(scope="module")
def highway_run(tmp_path_factory, videos: Path) -> Path:
    out = tmp_path_factory.mktemp("highway")
    config = out / "cfg.yaml"
    config.write_text("brands:\n  enabled: false\n")
    result = run_cli("run", str(videos / "highway_overpass_720p.mp4"), "--config", str(config),
                     "--out", str(out / "run"), "--max-frames", "150")
    assert result.returncode == 0, result.stderr
    return out / "run"


def _linked_clips(tmp_path: Path, videos: Path, *names: str) -> Path:
    """A folder input: `tmp_path/clips` with links to the shared clips `names`."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in names:
        (folder / name).symlink_to(videos / name)
    return folder


def test_annotated_video_has_every_frame(highway_run: Path):
    frames, codec = count_video_frames(highway_run / "annotated.mp4")
    assert frames == 150
    assert codec == "h264"


def test_vehicle_records_are_complete_and_plausible(highway_run: Path):
    events = read_events(highway_run / "events.jsonl")
    vehicles = [e for e in events if e["event"] == "vehicle"]
    # The highway clip shows many cars both ways: many vehicles, but far fewer than one per frame.
    assert 8 <= len(vehicles) <= 60, len(vehicles)
    assert len({v["track_id"] for v in vehicles}) == len(vehicles)  # exactly one record per track
    for v in vehicles:
        assert VEHICLE_FIELDS <= v.keys()
        assert v["class"] in {"car", "truck", "bus", "motorcycle"}
        assert 0 <= v["first_frame"] <= v["last_frame"] < 150
        assert v["first_seen_s"] == pytest.approx(v["first_frame"] / 30.0, abs=0.01)
        assert v["brand"] == "unknown" and v["brand_confidence"] == 0
        x1, y1, x2, y2 = v["bbox"]
        assert 0 <= x1 < x2 <= 1281 and 0 <= y1 < y2 <= 721
        assert v["wall_time"].endswith("Z")
        assert (highway_run / v["snapshot"]).is_file()
    assert events[0]["event"] == "stream" and events[0]["status"] == "started"
    assert events[-1]["status"] == "ended" and events[-1]["frames"] == 150 and events[-1]["vehicles"] == len(vehicles)


def test_csv_holds_the_same_vehicles(highway_run: Path):
    vehicles = [e for e in read_events(highway_run / "events.jsonl") if e["event"] == "vehicle"]
    with (highway_run / "vehicles.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["track_id"]) for r in rows] == [v["track_id"] for v in vehicles]
    assert [r["class"] for r in rows] == [v["class"] for v in vehicles]
    assert [json.loads(r["bbox"]) for r in rows] == [v["bbox"] for v in vehicles]


def test_folder_input_gives_one_output_per_video(tmp_path: Path, videos: Path, no_brands_config: Path):
    folder = _linked_clips(tmp_path, videos, "intel_parking_lot.mp4", "freeway_lowres.avi")
    (folder / "notes.txt").write_text("not a video")
    result = run_cli("run", str(folder), "--config", str(no_brands_config), "--out", str(tmp_path / "out"),
                     "--max-frames", "25", "--show")
    assert result.returncode == 0, result.stderr
    assert "no display" in result.stderr  # --show without a screen continues headless
    for stem in ("intel_parking_lot", "freeway_lowres"):
        run = tmp_path / "out" / stem
        assert count_video_frames(run / "annotated.mp4")[0] == 25
        assert read_events(run / "events.jsonl")[-1]["frames"] == 25


def test_corrupt_video_is_one_line_error(tmp_path: Path, no_brands_config: Path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    result = run_cli("run", str(bad), "--config", str(no_brands_config), "--out", str(tmp_path / "out"))
    assert result.returncode == 3
    assert len(result.stderr.strip().splitlines()) == 1
    assert "broken.mp4" in result.stderr and ("corrupt" in result.stderr or "cannot open" in result.stderr)


def test_a_recording_with_sound_only_is_named_as_such(tmp_path: Path, no_brands_config: Path):
    """A camera's audio export given by mistake: not a 'corrupt' file the operator would re-copy."""
    import av
    import numpy as np

    sound = tmp_path / "gate_audio.mp4"
    with av.open(str(sound), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    result = run_cli("run", str(sound), "--config", str(no_brands_config), "--out", str(tmp_path / "out"))
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        f"stream-pipeline: error: cannot open video (no video stream: audio only): {sound}"]


def test_a_rerun_after_fixing_an_input_that_never_opened_needs_no_overwrite(tmp_path: Path, videos: Path,
                                                                           no_brands_config: Path):
    """The first try left only `started` / `error` in events.jsonl: nothing there to protect."""
    clip, out = tmp_path / "gate.mp4", tmp_path / "out"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))  # copied before the recorder finished
    first = run_cli("run", str(clip), "--config", str(no_brands_config), "--out", str(out), "--max-frames", "5")
    assert first.returncode == 3 and (out / "events.jsonl").is_file(), first.stderr
    clip.unlink()
    clip.symlink_to(videos / "intel_parking_lot.mp4")
    again = run_cli("run", str(clip), "--config", str(no_brands_config), "--out", str(out), "--max-frames", "5")
    assert again.returncode == 0, again.stderr
    statuses = [e.get("status") for e in read_events(out / "events.jsonl")]
    assert statuses[-1] == "ended" and "error" not in statuses  # the failed try is gone
    third = run_cli("run", str(clip), "--config", str(no_brands_config), "--out", str(out), "--max-frames", "5")
    assert third.returncode == 2 and "already holds a run" in third.stderr  # a run that started is protected
    # a live run killed before its first record: its log is `started` alone, its video partial
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "events.jsonl").write_text((out / "events.jsonl").read_text().splitlines()[0] + "\n")
    (killed / "annotated.partial.mp4").write_bytes(b"\0" * 64)
    fourth = run_cli("run", str(clip), "--config", str(no_brands_config), "--out", str(killed), "--max-frames", "5")
    assert fourth.returncode == 2 and "already holds a run" in fourth.stderr
    assert (killed / "annotated.partial.mp4").stat().st_size == 64


@pytest.mark.parametrize("sig, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_finalises_video_and_writes_open_tracks(tmp_path: Path, videos: Path, no_brands_config: Path,
                                                       sig, exit_code):
    # A looping live source cannot end before the signal arrives, however slow the machine;
    # the signal is sent once the program reports frames processed (its progress log line).
    server = RtspServer(tmp_path / "media", videos)
    out = tmp_path / "out"
    run = CliRun("run", server.url(), "--config", str(no_brands_config), "--out", str(out), "--no-progress")
    try:
        run.wait_for_frames(30)
        signalled_at = utc_now_iso()
        run.signal(sig)
        code, _, stderr = run.finish()
    finally:
        run.kill()
        server.stop()
    assert code == exit_code, stderr
    events = read_events(out / "events.jsonl")
    end = events[-1]
    assert end["status"] == "ended" and end["reason"] == "interrupted"
    assert end["frames"] >= 30
    frames, _ = count_video_frames(out / "annotated.mp4")
    assert frames == end["frames"]  # finalised: every processed frame is in a playable file
    assert not (out / "annotated.partial.mp4").exists()
    vehicles = [e for e in events if e["event"] == "vehicle"]
    assert len(vehicles) == end["vehicles"] >= 1
    # Tracks still open at Ctrl-C were written after it (the dash-cam VW is in view throughout).
    assert any(v["wall_time"] >= signalled_at for v in vehicles)


def test_a_second_run_into_the_same_folder_is_refused_unless_overwrite(tmp_path: Path, videos: Path):
    out = tmp_path / "run"
    first = run_cli("run", str(videos / "dashcam_vw_close.mp4"), "--out", str(out), "--max-frames", "60")
    assert first.returncode == 0, first.stderr
    events_before = (out / "events.jsonl").read_bytes()
    snapshots_before = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snapshots_before
    (out / "notes.txt").write_text("the operator's own file")

    again = run_cli("run", str(videos / "parked_honda_portrait.mp4"), "--out", str(out), "--max-frames", "30")
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "already holds a run" in again.stderr and "--overwrite" in again.stderr
    assert (out / "events.jsonl").read_bytes() == events_before  # nothing lost

    # --overwrite with models that cannot load: the run never starts, so nothing is replaced
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"brands:\n  gallery: {tmp_path / 'no_such_gallery.npz'}\n")
    failed = run_cli("run", str(videos / "parked_honda_portrait.mp4"), "--config", str(broken), "--out", str(out),
                     "--max-frames", "30", "--overwrite")
    assert failed.returncode == 4 and "no_such_gallery" in failed.stderr, failed.stderr
    assert (out / "events.jsonl").read_bytes() == events_before
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == snapshots_before

    replaced = run_cli("run", str(videos / "parked_honda_portrait.mp4"), "--out", str(out), "--max-frames", "30",
                       "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    events = read_events(out / "events.jsonl")
    assert events[0]["source"].endswith("parked_honda_portrait.mp4")
    snapshots = {p.name for p in (out / "snapshots").iterdir()}
    vehicles = {Path(e["snapshot"]).name for e in events if e["event"] == "vehicle" and e.get("snapshot")}
    assert snapshots <= vehicles | {Path(e["badge_snapshot"]).name for e in events
                                    if e["event"] == "vehicle" and e.get("badge_snapshot")}, "old snapshots left"
    assert (out / "notes.txt").read_text() == "the operator's own file"


def test_a_run_into_a_folder_of_the_users_own_files_leaves_them(tmp_path: Path, videos: Path):
    """Files named like a folder run's (index.html, summary.csv) are the user's when no run is there."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "index.html").write_text("<p>my page</p>")
    (out / "summary.csv").write_text("my,table\n")
    result = run_cli("run", str(videos / "dashcam_vw_close.mp4"), "--out", str(out), "--max-frames", "10",
                     "--no-progress", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert (out / "index.html").read_text() == "<p>my page</p>" and (out / "summary.csv").read_text() == "my,table\n"
    assert (out / "events.jsonl").is_file()


def test_a_model_error_exits_4_in_one_line_and_leaves_no_empty_folder(tmp_path: Path, videos: Path):
    config = tmp_path / "cfg.yaml"
    config.write_text("brands:\n  classifier: models/no_such_classifier\n")
    out = tmp_path / "new" / "run"
    result = run_cli("run", str(videos / "dashcam_vw_close.mp4"), "--config", str(config), "--out", str(out))
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "no_such_classifier" in result.stderr
    assert not out.exists()


def test_show_with_a_display_that_does_not_answer_runs_headless(tmp_path: Path, videos: Path, no_brands_config: Path):
    """A stale DISPLAY (an SSH session gone, a service's environment) must not abort the run:
    Qt would kill the process if a window were tried."""
    number = next(n for n in range(87, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
    env["DISPLAY"] = f":{number}"
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "stream_pipeline", "run", str(videos / "dashcam_vw_close.mp4"),
                             "--config", str(no_brands_config), "--out", str(out), "--max-frames", "10", "--show",
                             "--no-progress"], capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert f"no display available (DISPLAY=:{number})" in result.stderr
    assert read_events(out / "events.jsonl")[-1]["frames"] == 10


def test_summary_of_a_folder_run_without_vehicle_tables_comes_from_the_event_logs(tmp_path: Path, videos: Path,
                                                                                  no_brands_config: Path):
    import shutil

    from stream_pipeline.sinks.summary import write_summary

    folder = _linked_clips(tmp_path, videos, "intel_parking_lot.mp4", "suburban_junction.mp4")
    out = tmp_path / "out"
    result = run_cli("run", str(folder), "--config", str(no_brands_config), "--out", str(out), "--max-frames", "40",
                     "--no-progress")
    assert result.returncode == 0, result.stderr
    with (out / "summary.csv").open(newline="") as f:
        from_tables = list(csv.DictReader(f))
    assert len(from_tables) >= 2
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for run in ("intel_parking_lot", "suburban_junction"):
        (copy / run / "vehicles.csv").unlink()  # as `output: {csv: false}` leaves it
    write_summary(copy, [copy / "intel_parking_lot", copy / "suburban_junction"])
    with (copy / "summary.csv").open(newline="") as f:
        assert list(csv.DictReader(f)) == from_tables


def test_a_folder_run_whose_summary_cannot_be_written_fails_and_keeps_each_video(tmp_path: Path, videos: Path,
                                                                                  no_brands_config: Path):
    """A batch without its summary.csv is not done: a script reading the exit status must know."""
    folder = _linked_clips(tmp_path, videos, "intel_parking_lot.mp4", "suburban_junction.mp4")
    out = tmp_path / "out"
    (out / "summary.csv").mkdir(parents=True)  # stands in for a share that refuses the write
    result = run_cli("run", str(folder), "--config", str(no_brands_config), "--out", str(out), "--max-frames", "5",
                     "--no-progress")
    assert result.returncode == 5, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "summary.csv" in last and "each video's own outputs are complete" in last, result.stderr
    for run in ("intel_parking_lot", "suburban_junction"):
        assert read_events(out / run / "events.jsonl")[-1]["frames"] == 5
    assert (out / "index.html").is_file()


def test_batch_names_links_and_list_files_from_the_field(tmp_path: Path, videos: Path, no_brands_config: Path):
    """What recorded footage looks like: a video named like the batch's own outputs, a link to a
    share that is not mounted, a list file saved with a BOM by Notepad."""
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "index.html.mp4").symlink_to(videos / "intel_parking_lot.mp4")
    (folder / "report.mp4").symlink_to(videos / "intel_parking_lot.mp4")
    (folder / "cam_nas.mp4").symlink_to(tmp_path / "not_mounted" / "cam.mp4")
    out = tmp_path / "out"
    result = run_cli("run", str(folder), "--config", str(no_brands_config), "--out", str(out), "--max-frames", "5",
                     "--no-progress")
    assert result.returncode == 3, result.stderr  # the broken link is an input that failed, not a silent skip
    assert "cam_nas" in result.stderr and "1 of 3 inputs failed" in result.stderr, result.stderr
    assert (out / "index.html").is_file() and (out / "summary.csv").is_file()
    for name in ("index.html-2", "report-2"):
        assert read_events(out / name / "events.jsonl")[-1]["frames"] == 5
    rebuilt = run_cli("report", str(out))
    assert rebuilt.returncode == 0, rebuilt.stderr

    # a list saved by Notepad, naming one clip twice (and once through a link)
    listing = tmp_path / "inputs.txt"
    (tmp_path / "parking_link.mp4").symlink_to(videos / "intel_parking_lot.mp4")
    listing.write_bytes(b"\xef\xbb\xbf" + f"{videos / 'intel_parking_lot.mp4'}\r\nparking_link.mp4\r\n"
                                           f"{videos / 'intel_parking_lot.mp4'}\r\n".encode())
    listed = run_cli("run", str(listing), "--config", str(no_brands_config), "--out", str(tmp_path / "listed"),
                     "--max-frames", "5", "--no-progress")
    assert listed.returncode == 0, listed.stderr
    assert read_events(tmp_path / "listed" / "intel_parking_lot" / "events.jsonl")[-1]["frames"] == 5
    # the same path twice is one input; a link is an input of its own, as in a folder
    assert sorted(p.name for p in (tmp_path / "listed").iterdir() if p.is_dir()) == [
        "intel_parking_lot", "parking_link", "report"]
    assert f"{listing} line 3: {videos / 'intel_parking_lot.mp4'} is already listed; processed once" in listed.stderr
    assert "line 2" not in listed.stderr


def test_several_files_on_the_command_line_are_one_batch(tmp_path: Path, videos: Path, no_brands_config: Path):
    """`run cam/*.mp4`: the shell hands over every file; each is processed once, as in a folder run."""
    clips = _linked_clips(tmp_path, videos, "intel_parking_lot.mp4", "dashcam_vw_close.mp4")
    out = tmp_path / "out"
    (clips / "cam_nas.mp4").symlink_to(tmp_path / "not_mounted" / "cam.mp4")  # the wildcard lists it too
    result = run_cli("run", str(clips / "dashcam_vw_close.mp4"), str(clips / "cam_nas.mp4"),
                     str(clips / "intel_parking_lot.mp4"), str(clips / "dashcam_vw_close.mp4"),
                     "--config", str(no_brands_config), "--out", str(out), "--max-frames", "3", "--no-progress")
    assert result.returncode == 3, result.stderr  # the broken link failed, as in a folder run; the rest ran
    assert f"{clips / 'dashcam_vw_close.mp4'} is given twice; processed once" in result.stderr
    assert "1 of 3 inputs failed" in result.stderr and "cam_nas.mp4" in result.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "cam_nas", "dashcam_vw_close", "intel_parking_lot", "report"]
    assert {row["video"] for row in csv.DictReader((out / "summary.csv").open())} == {"dashcam_vw_close"}
    for name in ("dashcam_vw_close", "intel_parking_lot"):
        assert read_events(out / name / "events.jsonl")[-1]["frames"] == 3


def test_report_survives_an_event_log_cut_inside_a_character(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    started = {"event": "stream", "status": "started", "source": "/clips/suburban_jünction.mp4", "live": False,
               "fps": 25.0, "total_frames": 100}
    line = json.dumps(started, ensure_ascii=False).encode()
    cut = line[:line.index("ü".encode()) + 1]  # a full disk stopped the write after the first byte of ü
    (run / "events.jsonl").write_bytes(line + b"\n" + cut)
    result = run_cli("report", str(run))
    assert result.returncode == 0, result.stderr
    assert "1 unreadable lines skipped" in result.stderr and (run / "report.html").is_file()


def _faststart_copy(clip: Path, dest: Path) -> Path:
    """`clip` remuxed with its index first (faststart), as cameras and NVR exports write them."""
    import av

    with av.open(str(clip)) as src, av.open(str(dest), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    return dest


def test_a_truncated_file_is_said_so_in_its_report(tmp_path: Path, videos: Path, no_brands_config: Path):
    whole = _faststart_copy(videos / "dashcam_vw_close.mp4", tmp_path / "whole.mp4")
    cut = tmp_path / "cut.mp4"  # a copy that stopped half-way
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out = tmp_path / "out"
    result = run_cli("run", str(cut), "--config", str(no_brands_config), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    ended = read_events(out / "events.jsonl")[-1]
    assert ended["truncated"] is True and ended["reason"] == "end"
    assert f"truncated file: decoding stopped after {ended['frames']} frames" in (out / "report.html").read_text()
    assert ended["frames_undecodable"] == 0  # the frames a cut file flushes after its first failure make no damaged stretch
    assert "damaged file" not in result.stderr


def _damaged_copy(videos: Path, tmp_path: Path) -> Path:
    """150 KB of a recording overwritten at 40 % (a bad sector, a broken copy): the frames there do not
    decode, the rest do."""
    import random

    data = bytearray((videos / "dashcam_uk_vw_hyundai.mp4").read_bytes())
    start, rng = int(len(data) * 0.4), random.Random(7)
    data[start:start + 150_000] = bytes(rng.getrandbits(8) for _ in range(150_000))
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    return damaged


def test_frames_after_a_damaged_stretch_keep_their_own_numbers(tmp_path: Path, videos: Path):
    """The decoder hands out, after the damage, frames it held from before it and skips others in
    silence: each frame is numbered by its timestamp, so frame N is the picture N of the clip."""
    import cv2
    import numpy as np

    from stream_pipeline.sources.file import VideoFileSource

    def small(image):
        return cv2.resize(image, (160, 90), interpolation=cv2.INTER_AREA).astype(np.float32)

    intact = []
    capture = cv2.VideoCapture(str(videos / "dashcam_uk_vw_hyundai.mp4"))
    while True:
        ok, image = capture.read()
        if not ok:
            break
        intact.append(small(image))
    source = VideoFileSource(_damaged_copy(videos, tmp_path))
    source.open()
    frames = [(frame.index, small(frame.image)) for frame in source.frames()]
    numbers = [n for n, _ in frames]
    assert numbers == sorted(set(numbers)) and numbers[-1] == len(intact) - 1
    assert len(frames) + source.frames_undecodable == len(intact) and not source.truncated
    first_gap = next(i for i in range(1, len(numbers)) if numbers[i] > numbers[i - 1] + 1)
    for n, picture in frames[first_gap:first_gap + 2]:  # the first frames out of the damage
        window = range(max(0, n - 20), min(len(intact), n + 21))
        assert min(window, key=lambda j: np.abs(picture - intact[j]).mean()) == n


def test_a_damaged_stretch_mid_file_is_skipped_and_decoding_goes_on(tmp_path: Path, videos: Path,
                                                                   no_brands_config: Path):
    """The run skips the frames that do not decode, says so, and goes on to the end of the file."""
    damaged, out = _damaged_copy(videos, tmp_path), tmp_path / "out"
    result = run_cli("run", str(damaged), "--config", str(no_brands_config), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "could not be decoded (damaged file), skipped; decoding goes on" in result.stderr
    events = read_events(out / "events.jsonl")
    ended = events[-1]
    total = next(e for e in events if e.get("status") == "started")["total_frames"]
    assert ended["truncated"] is False and ended["frames_undecodable"] > 0
    assert ended["frames"] + ended["frames_undecodable"] == total  # every frame decoded or counted as lost
    # vehicles after the damage were seen, at their own frame numbers
    assert max(e["last_frame"] for e in events if e["event"] == "vehicle") == total - 1


def test_console_lines_are_whole_in_a_log(tmp_path: Path, videos: Path, no_brands_config: Path):
    """Run from cron or a service, stderr is a file: a message must stay one line to be grepped
    (rich wrapped them at 80 columns, splitting paths)."""
    folder = tmp_path / ("recordings_of_the_north_gate_camera_lane_3_" * 2) / "2026-11-30"
    folder.mkdir(parents=True)
    (folder / "broken_recording_copied_before_the_recorder_had_finished.mp4").write_bytes(
        b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    (folder / "parking.mp4").symlink_to(videos / "intel_parking_lot.mp4")
    result = run_cli("run", str(folder), "--config", str(no_brands_config), "--out", str(tmp_path / "out"),
                     "--max-frames", "3", "--no-progress")
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    broken = folder / "broken_recording_copied_before_the_recorder_had_finished.mp4"
    assert f"skipped {broken}: cannot open video (unsupported or corrupt): {broken}" in lines
    assert any(line.startswith(f"{folder / 'parking.mp4'}: 3 frames in ") and line.endswith("with a brand")
               for line in lines), lines
    # the index tells the failed input from the processed one
    assert "2 videos (1 failed) · 0 vehicles" in (tmp_path / "out" / "index.html").read_text(encoding="utf-8")


def test_overwrite_with_an_unreadable_input_keeps_the_run_it_would_replace(tmp_path: Path, videos: Path,
                                                                          no_brands_config: Path):
    out = tmp_path / "out"
    first = run_cli("run", str(videos / "intel_parking_lot.mp4"), "--config", str(no_brands_config),
                    "--out", str(out), "--max-frames", "5")
    assert first.returncode == 0, first.stderr
    kept = {name: (out / name).read_bytes() for name in ("events.jsonl", "vehicles.csv", "annotated.mp4")}
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    again = run_cli("run", str(bad), "--config", str(no_brands_config), "--out", str(out), "--overwrite")
    assert again.returncode == 3
    assert again.stderr.strip().splitlines() == [f"stream-pipeline: error: cannot open video (unsupported or corrupt): {bad}"]
    assert {name: (out / name).read_bytes() for name in kept} == kept
    # one that opens (its index is whole) but whose pictures are all damaged: the same
    import random

    whole = _faststart_copy(videos / "dashcam_vw_close.mp4", tmp_path / "whole.mp4")  # the index survives the damage
    data = bytearray(whole.read_bytes())
    start, rng = data.index(b"mdat") + 4, random.Random(3)
    data[start:] = bytes(rng.getrandbits(8) for _ in range(len(data) - start))
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    third = run_cli("run", str(damaged), "--config", str(no_brands_config), "--out", str(out), "--overwrite")
    assert third.returncode == 3
    assert f"stream-pipeline: error: no decodable frames in {damaged} (corrupt or empty video)" in third.stderr
    assert {name: (out / name).read_bytes() for name in kept} == kept


class Xvfb:
    """A throw-away X server (Debian's xvfb) on a free display number, for `--show`."""

    def __init__(self) -> None:
        from tests.mqtt_broker import ensure_debian_tools

        (binary,) = ensure_debian_tools("xvfb", "Xvfb")
        self.number = next(n for n in range(90, 400) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                            and not Path(f"/tmp/.X{n}-lock").exists())
        self.display = f":{self.number}"
        self.proc = subprocess.Popen([binary, self.display, "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import time

        while not Path(f"/tmp/.X11-unix/X{self.number}").exists():  # the server is up when its socket is
            assert self.proc.poll() is None, "Xvfb exited"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_show_survives_the_display_going_away(tmp_path: Path, videos: Path, no_brands_config: Path):
    """An SSH session or remote desktop drops: Qt ends the process holding the window. That is
    the window's own process; the run carries on headless and finalises everything."""
    xvfb = Xvfb()
    out = tmp_path / "out"
    run = CliRun("run", str(videos / "highway_overpass_720p.mp4"), "--config", str(no_brands_config), "--out", str(out),
                 "--max-frames", "300", "--show", "--no-progress", display=xvfb.display)
    try:
        run.wait_for_frames(1)
        xvfb.stop()
        run.wait_for_line("the window closed unexpectedly")
        code, _, stderr = run.finish()
    finally:
        run.kill()
        xvfb.stop()
    assert code == 0, stderr
    assert "QFontDatabase" not in stderr
    ended = read_events(out / "events.jsonl")[-1]
    assert ended["status"] == "ended" and ended["reason"] == "max-frames" and ended["frames"] == 300
    assert count_video_frames(out / "annotated.mp4")[0] == 300


def test_q_in_a_folder_run_stops_the_batch_and_says_so(tmp_path: Path, videos: Path, no_brands_config: Path):
    from tests.mqtt_broker import ensure_debian_tools

    (xdotool,) = ensure_debian_tools("xdotool", "xdotool")
    folder = _linked_clips(tmp_path, videos, "highway_overpass_720p.mp4", "urban_arterial.mp4")
    xvfb = Xvfb()
    out = tmp_path / "out"
    run = CliRun("run", str(folder), "--config", str(no_brands_config), "--out", str(out), "--show", "--no-progress",
                 display=xvfb.display)
    try:
        run.wait_for_frames(1)
        env = {**os.environ, "DISPLAY": xvfb.display}
        window = subprocess.run([xdotool, "search", "--sync", "--name", "^stream-pipeline$"], env=env,
                                capture_output=True, text=True, check=True).stdout.split()[0]
        subprocess.run([xdotool, "key", "--window", window, "q"], env=env, check=True)
        code, _, stderr = run.finish()
    finally:
        run.kill()
        xvfb.stop()
    assert code == 130, stderr
    assert "quit from the window: 1 of 2 inputs not processed" in stderr
    assert read_events(out / "highway_overpass_720p" / "events.jsonl")[-1]["reason"] == "quit"
    assert not (out / "urban_arterial").exists() and (out / "index.html").is_file()


def test_an_intact_mkv_cut_is_not_called_truncated(tmp_path: Path, videos: Path, no_brands_config: Path):
    """MKV estimates its frame count from its duration: 65 for these 62 frames."""
    import av

    cut = tmp_path / "night.mkv"
    with av.open(str(videos / "night_city.mp4")) as src, av.open(str(cut), "w") as dst:
        video = src.streams.video[0]
        stream = dst.add_stream_from_template(video)
        for packet in src.demux(video):
            if packet.dts is None or packet.dts * video.time_base >= 2:  # 2 s, cut as `ffmpeg -t 2 -c copy` cuts
                continue
            packet.stream = stream
            dst.mux(packet)
    out = tmp_path / "out"
    result = run_cli("run", str(cut), "--config", str(no_brands_config), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    ended = read_events(out / "events.jsonl")[-1]
    assert ended["reason"] == "end" and ended["frames"] == 62 and ended["truncated"] is False, (ended, result.stderr)
    assert "truncated" not in result.stderr


def test_ctrl_c_with_the_window_open_is_clean(tmp_path: Path, videos: Path, no_brands_config: Path):
    """Ctrl-C reaches the whole process group, the window's process too: it leaves the stop to the run."""
    xvfb = Xvfb()
    out = tmp_path / "out"
    run = CliRun("run", str(videos / "highway_overpass_720p.mp4"), "--config", str(no_brands_config), "--out", str(out),
                 "--show", "--no-progress", display=xvfb.display)
    try:
        run.wait_for_frames(1)
        for pid in _family(run.proc.pid):
            os.kill(pid, signal.SIGINT)
        code, _, stderr = run.finish()
    finally:
        run.kill()
        xvfb.stop()
    assert code == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert read_events(out / "events.jsonl")[-1]["reason"] == "interrupted"


def _family(pid: int) -> list[int]:
    """`pid` and its children (what a terminal's Ctrl-C reaches)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *map(int, children)]
