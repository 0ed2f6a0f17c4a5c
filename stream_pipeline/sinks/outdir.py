"""The output folder: checked before a run, and one error type when writing to it fails."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from stream_pipeline.core.errors import OutputError, UserError

# What a run writes in its folder, and a folder run at its root: what --overwrite replaces.
RUN_OUTPUTS = ("events.jsonl", "vehicles.csv", "annotated.mp4", "report.html", "report", "snapshots")
FOLDER_OUTPUTS = ("summary.csv", "index.html")


def output_error(path: Path, exc: OSError) -> OutputError:
    """One readable line for a failed write (`No space left on device`, `Read-only file system`...)."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOTDIR or (exc.errno == errno.EEXIST and not path.is_dir()):
        reason = "a file is in the way (not a folder)"
    return OutputError(f"cannot write output {path}: {reason}")


def prepare_out_dir(out: Path) -> None:
    """Create `out` and prove a file can be written there, before any model is loaded."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        try:
            os.write(fd, b"stream-pipeline write test\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise output_error(out, exc) from None


def previous_runs(out: Path) -> list[Path]:
    """Run folders in `out` (itself, or its sub-folders after a folder run) holding a run's event log."""
    if not out.is_dir():
        return []
    runs = [out] if (out / "events.jsonl").is_file() else []
    return runs + sorted(d for d in out.iterdir() if d.is_dir() and (d / "events.jsonl").is_file())


def never_started(run: Path) -> bool:
    """A run whose source never opened: its log holds only `stream` events, the last an `error`,
    none with frames, and there is no video or snapshot. Nothing in it is worth protecting, so a
    rerun once the file or camera is fixed need not be told --overwrite. A log of `started` alone
    is a run going on (or killed) whose video is being written: protected."""
    if any(run.glob("annotated*.mp4")) or (run / "snapshots").is_dir() and any((run / "snapshots").iterdir()):
        return False
    try:
        with (run / "events.jsonl").open("rb") as log:
            head = log.read(1 << 16)
            if log.read(1):
                return False  # a log this long is a run
        events = [json.loads(line) for line in head.splitlines() if line.strip()]
    except (OSError, ValueError):
        return False
    return bool(events) and isinstance(events[-1], dict) and events[-1].get("status") == "error" and all(
        isinstance(e, dict) and e.get("event") == "stream" and e.get("status") in ("started", "error")
        and not e.get("frames") for e in events)


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that already holds a run, unless told to replace it: a rerun would
    overwrite its records and mix its snapshots with the new run's. Nothing is removed here:
    `clear_previous_runs` does that once the models have loaded, so a run that cannot start
    leaves the previous one as it was."""
    runs = [run for run in previous_runs(out) if not never_started(run)]
    if runs and not overwrite:
        where = out if runs == [out] else f"{out} ({len(runs)} run folders)"
        raise UserError(f"--out {where} already holds a run (events.jsonl); choose another folder, "
                        "or pass --overwrite to replace it")


def clear_previous_runs(out: Path, only_never_started: bool = False) -> None:
    """--overwrite: remove the previous runs' own outputs (RUN_OUTPUTS in each run folder,
    FOLDER_OUTPUTS at the root); nothing else in the folder is touched, and a folder that holds
    no run is left alone (an index.html of the user's own is not a run's). `only_never_started`:
    only runs whose source never opened, the folder's own outputs kept."""
    runs = previous_runs(out)
    if only_never_started:
        runs = [run for run in runs if never_started(run)]
    if not runs:
        return
    try:
        for run in runs:
            for name in RUN_OUTPUTS:
                target = run / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
        for name in FOLDER_OUTPUTS if not only_never_started else ():
            if (out / name).is_file():
                (out / name).unlink()
    except OSError as exc:
        raise output_error(out, exc) from None


class OutDirClaim:
    """An output folder checked (`check_out_dir`) and proven writable before the models load;
    a previous run in it is cleared (--overwrite) only once they have, so a run that cannot
    start leaves it as it was, and a folder made for a run that never started is removed."""

    def __init__(self, out: Path, overwrite: bool) -> None:
        check_out_dir(out, overwrite)
        self.out, self.overwrite = out, overwrite
        self.created = not out.exists()
        prepare_out_dir(out)

    def replaces_a_run(self) -> bool:
        """--overwrite and the folder holds a run that started: what a run that cannot start must keep."""
        return self.overwrite and self.out.is_dir() and any(not never_started(r) for r in previous_runs(self.out))

    def take(self) -> None:
        """The run starts: clear the previous one (--overwrite), or one whose source never opened."""
        clear_previous_runs(self.out, only_never_started=not self.overwrite)

    @contextmanager
    def loading_models(self):
        """Around model loading: a model error leaves no empty folder behind; success takes the folder."""
        try:
            yield
        except UserError:
            if self.created and self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()
            raise
        self.take()
