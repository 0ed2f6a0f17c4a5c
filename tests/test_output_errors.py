"""An output folder that cannot be written: one line, exit code 5, nothing half-written that
looks complete. Full and read-only disks are real tmpfs mounts where the tests run as root
(CI containers do); elsewhere those cases are skipped and the /dev/full case still runs."""

from __future__ import annotations

import csv
import errno
import os
import subprocess
from pathlib import Path

import cv2
import pytest

from stream_pipeline.core.errors import OutputError
from tests.conftest import read_events, run_cli

OUTPUT_EXIT = 5
ERROR = "stream-pipeline: error: "


@pytest.fixture
def tmpfs(tmp_path: Path):
    """mount(name, options) -> a fresh tmpfs folder; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == OUTPUT_EXIT, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("stream-pipeline:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_out_below_a_file_is_one_line(tmp_path: Path, videos: Path, no_brands_config: Path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for out in (afile / "sub", afile):
        result = run_cli("run", str(videos / "intel_parking_lot.mp4"), "--config", str(no_brands_config),
                         "--out", str(out), "--max-frames", "5")
        assert result.stderr.strip().splitlines() == [f"{ERROR}cannot write output {out}: a file is in the way (not a folder)"]
        assert result.returncode == OUTPUT_EXIT
    assert afile.read_text() == "not a folder"


def test_read_only_output_is_one_line(tmp_path: Path, videos: Path, no_brands_config: Path, tmpfs):
    if os.geteuid() != 0:
        readonly = tmp_path / "readonly"
        readonly.mkdir()
        readonly.chmod(0o555)
    else:  # root ignores permission bits; a read-only mount it cannot ignore
        readonly = tmpfs("readonly", "ro,size=64k")
    result = run_cli("run", str(videos / "intel_parking_lot.mp4"), "--config", str(no_brands_config),
                     "--out", str(readonly / "run"), "--max-frames", "5")
    line = _one_error_line(result)
    assert line.startswith(f"{ERROR}cannot write output {readonly / 'run'}: ")
    assert "Read-only file system" in line or "Permission denied" in line
    assert not any(readonly.iterdir())


def test_full_disk_before_the_run_is_one_line(videos: Path, no_brands_config: Path, tmpfs):
    disk = tmpfs("full", "size=16k")
    with pytest.raises(OSError) as filling:
        with (disk / "filler").open("wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    assert filling.value.errno == errno.ENOSPC
    result = run_cli("run", str(videos / "intel_parking_lot.mp4"), "--config", str(no_brands_config),
                     "--out", str(disk / "run"), "--max-frames", "5")
    line = _one_error_line(result)
    assert line == f"{ERROR}cannot write output {disk / 'run'}: No space left on device"
    assert not any((disk / "run").iterdir())  # the write test left nothing behind


def test_disk_filling_up_during_the_run(videos: Path, no_brands_config: Path, tmpfs):
    """Stops with one line; what is left is valid and visibly unfinished."""
    disk = tmpfs("small", "size=256k")
    out = disk / "run"
    # 400 frames of 720p H.264 need far more than 256 kB: the disk fills before the clip ends.
    result = run_cli("run", str(videos / "highway_overpass_720p.mp4"), "--config", str(no_brands_config),
                     "--out", str(out), "--max-frames", "400", "--no-progress")
    line = _one_error_line(result)
    assert "No space left on device" in line and f"outputs in {out} are incomplete" in line
    # The video could not be finalised: it keeps its .partial name, never the final one.
    assert not (out / "annotated.mp4").exists()
    # Every event line is whole; the log does not end as a finished run does.
    text = (out / "events.jsonl").read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    events = read_events(out / "events.jsonl")
    assert events and events[0]["status"] == "started"
    assert not any(e.get("status") == "ended" for e in events)
    if events[-1]["event"] == "stream" and events[-1]["status"] == "error":
        assert "No space left on device" in events[-1]["error"]
    # CSV rows are whole, snapshots decode.
    raw = (out / "vehicles.csv").read_bytes()
    assert raw == b"" or raw.endswith(b"\r\n")
    rows = list(csv.reader(raw.decode().splitlines()))
    assert all(len(row) == len(rows[0]) for row in rows)
    for snapshot in (out / "snapshots").glob("*.jpg") if (out / "snapshots").exists() else []:
        assert cv2.imread(str(snapshot)) is not None, snapshot


def test_a_write_that_fails_names_the_file(tmp_path: Path):
    """/dev/full answers every write with ENOSPC, without root."""
    from stream_pipeline.sinks.events import EventLog

    target = tmp_path / "events.jsonl"
    target.symlink_to("/dev/full")
    with EventLog(target) as log, pytest.raises(OutputError, match=rf"^cannot write output {target}: No space left on device$"):
        log.write({"event": "stream", "status": "started"})
    with EventLog(target) as log:
        with pytest.raises(OutputError):
            log.write({"event": "stream"})
        log.write({"event": "stream"})  # after the failure the log stays silent: one error, not a cascade


def test_fetch_samples_into_a_file_is_one_line(tmp_path: Path):
    in_the_way = tmp_path / "samples"
    in_the_way.write_text("a file, not a folder")
    result = run_cli("fetch-samples", "--dest", str(in_the_way))
    assert result.returncode == 5
    assert result.stderr.strip().splitlines() == [
        f"stream-pipeline: error: cannot write samples to {in_the_way}: a file is in the way (not a folder)"]
