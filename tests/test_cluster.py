"""`stream-pipeline run FOLDER --ray ADDRESS`: videos as tasks on a local Ray head (127.0.0.1)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_pipeline.core.paths import PROJECT_ROOT
from tests.conftest import read_events, run_cli
from tests.live_helpers import free_port

pytest.importorskip("ray", reason="the cluster extra (pip install .[cluster]); `make test` installs it")

CLIPS = ("dashcam_vw_close.mp4", "suburban_junction.mp4", "urban_arterial.mp4")
# Differ from run to run by design: the line's id and the time it was written.
VOLATILE = ("event_id", "wall_time")


def cut_clip(source: Path, target: Path, frames: int) -> None:
    import cv2

    capture = cv2.VideoCapture(str(source))
    size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), capture.get(cv2.CAP_PROP_FPS), size)
    for _ in range(frames):
        ok, image = capture.read()
        assert ok, source
        writer.write(image)
    writer.release()
    capture.release()


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory, videos: Path) -> Path:
    """Three short clips cut from the shared footage, and one corrupt video."""
    folder = tmp_path_factory.mktemp("clips")
    for name in CLIPS:
        cut_clip(videos / name, folder / name, 40)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    return folder


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head on 127.0.0.1 with 2 CPUs, stopped (with its workers) at the end."""
    port = free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
           "RAY_USAGE_STATS_ENABLED": "0"}
    log_path = tmp_path_factory.mktemp("ray") / "head.log"
    with log_path.open("w") as log:
        head = subprocess.Popen(
            [str(ray_bin), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
             "--include-dashboard=false", "--disable-usage-stats", "--block"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT,
        )
    try:
        # Ready when `ray start` says so (bounded, in case it never does).
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log_path.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Ray head did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()  # --block: stops the head's processes too
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in VOLATILE} for row in csv.DictReader(f)]


def test_folder_on_ray_equals_local_run(tmp_path: Path, clip_folder: Path, ray_head: str):
    local, remote = tmp_path / "local", tmp_path / "ray"
    local_run = run_cli("run", str(clip_folder), "--out", str(local), "--no-progress")
    ray_run = run_cli("run", str(clip_folder), "--out", str(remote), "--ray", ray_head, "--workers", "2")
    # The corrupt video is reported and skipped by both, the others done; same exit code.
    for result in (local_run, ray_run):
        assert result.returncode == 3, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("stream-pipeline: error:")]
        assert len(errors) == 1 and "1 of 4 inputs failed" in errors[0] and "broken.mp4" in errors[0], result.stderr
    assert "3 of 4 videos done" in ray_run.stderr and "2 at a time" in ray_run.stderr
    for name in CLIPS:
        stem = Path(name).stem
        a, b = read_events(local / stem / "events.jsonl"), read_events(remote / stem / "events.jsonl")
        strip = lambda events: [{k: v for k, v in e.items() if k not in (*VOLATILE, "elapsed_s", "fps")} for e in events]
        assert strip(a) == strip(b), stem
        assert b[-1]["status"] == "ended" and b[-1]["frames"] == 40
        assert _rows(local / stem / "vehicles.csv") == _rows(remote / stem / "vehicles.csv")
        assert sorted(p.name for p in (remote / stem / "snapshots").iterdir()) == sorted(p.name for p in (local / stem / "snapshots").iterdir())
        assert (remote / stem / "report.html").is_file() and (remote / stem / "annotated.mp4").is_file()
    summary = _rows(remote / "summary.csv")
    assert summary == _rows(local / "summary.csv")
    assert {row["video"] for row in summary} == {Path(n).stem for n in CLIPS}
    assert any(row["brand"] == "volkswagen" and row["video"] == "dashcam_vw_close" for row in summary)
    index = (remote / "index.html").read_text()
    assert all(f"{Path(n).stem}/report.html" in index for n in CLIPS)


def test_list_file_of_inputs_and_no_ray_import_without_flag(tmp_path: Path, clip_folder: Path, no_brands_config: Path):
    """A text file lists the inputs; a run without --ray never imports Ray."""
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# two clips\n{clip_folder / CLIPS[1]}\n\n{clip_folder / CLIPS[2]}\n")
    out = tmp_path / "out"
    code = (
        "import sys\n"
        "from stream_pipeline.cli import main\n"
        f"rc = main(['run', {str(listing)!r}, '--config', {str(no_brands_config)!r}, '--out', {str(out)!r},"
        " '--max-frames', '5', '--no-progress'])\n"
        "assert rc == 0, rc\n"
        "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'\n"
        "print('no ray')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)
    assert result.returncode == 0 and "no ray" in result.stdout, result.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "report") == [Path(n).stem for n in CLIPS[1:]]
    assert {row["video"] for row in _rows(out / "summary.csv")} <= {Path(n).stem for n in CLIPS[1:]}


@pytest.mark.parametrize("options, message", [
    (["--workers", "4"], "--workers goes with --ray ADDRESS"),
    (["--workers", "0", "--retries", "5"], "--workers and --retries go with --ray ADDRESS"),
])
def test_ray_options_without_ray_are_refused(tmp_path: Path, clip_folder: Path, options, message):
    """Ignored in silence, they would let a user believe the batch ran on the cluster."""
    result = run_cli("run", str(clip_folder), "--out", str(tmp_path / "out"), *options)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"stream-pipeline: error: {message}"]
    assert not (tmp_path / "out").exists()


def test_unreachable_ray_head_is_one_line_error(tmp_path: Path, clip_folder: Path):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = run_cli("run", str(clip_folder), "--out", str(tmp_path / "out"), "--ray", address)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"stream-pipeline: error: cannot reach the Ray head at {address}: Connection refused"]


def test_overwrite_on_an_unreachable_ray_head_keeps_the_previous_run(tmp_path: Path, clip_folder: Path,
                                                                       no_brands_config: Path):
    out = tmp_path / "out"
    first = run_cli("run", str(clip_folder / CLIPS[1]), "--config", str(no_brands_config), "--out", str(out),
                    "--max-frames", "5", "--no-progress")
    assert first.returncode == 0, first.stderr
    events = (out / "events.jsonl").read_bytes()
    address = f"127.0.0.1:{free_port()}"
    result = run_cli("run", str(clip_folder), "--out", str(out), "--ray", address, "--overwrite")
    assert result.returncode == 2 and "cannot reach the Ray head" in result.stderr
    assert (out / "events.jsonl").read_bytes() == events
