"""`stream-pipeline run`: resolve the source(s) and output folder, show progress, summarise."""

from __future__ import annotations

import argparse
import logging
import os
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from stream_pipeline.core.config import load_config
from stream_pipeline.core.errors import OutputError, SourceError, UserError
from stream_pipeline.core.redaction import redact
from stream_pipeline.pipeline import Pipeline, ProgressCallback, RunSummary
from stream_pipeline.sinks.outdir import OutDirClaim
from stream_pipeline.sinks.summary import SUMMARY_FILE, write_summary
from stream_pipeline.report import ASSETS, INDEX_FILE, write_index, write_report
from stream_pipeline.sources import VIDEO_SUFFIXES, FrameSource, is_live
from stream_pipeline.sources.file import check_readable

log = logging.getLogger(__name__)
console = Console(stderr=True, soft_wrap=True)  # whole lines in logs and pipes: no wrap at 80 columns


class RichProgress(ProgressCallback):
    """A bar for files (frames of total), a live counter for streams."""

    def __init__(self, max_frames: int | None) -> None:
        self.max_frames = max_frames
        self._progress: Progress | None = None
        self._task = None

    def start(self, source: FrameSource) -> None:
        total = source.total_frames
        if self.max_frames is not None and total is not None:
            total = min(total, self.max_frames)
        columns = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn()]
        else:
            columns += [TextColumn("{task.completed} frames")]
        columns += [TextColumn("{task.fields[fps]:.1f} FPS"), TextColumn("{task.fields[vehicles]} vehicles"), TimeElapsedColumn()]
        self._progress = Progress(*columns, console=console, transient=False)
        name = Path(source.name).name if not source.is_live else source.name
        self._task = self._progress.add_task(name, total=total, fps=0.0, vehicles=0)
        self._progress.start()

    def update(self, frames: int, vehicles: int, fps: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=frames, fps=fps, vehicles=vehicles)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class LogProgress(ProgressCallback):
    """`--no-progress`: a plain log line every `every_s` seconds (and at the first frame) instead of a bar.

    Services, pipes and tests read it: `progress: 120 frames, 3 vehicles, 11.8 FPS`.
    """

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self._next = 0.0

    def start(self, source: FrameSource) -> None:
        self._next = time.monotonic()

    def update(self, frames: int, vehicles: int, fps: float) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every_s
            log.info("progress: %d frames, %d vehicles, %.1f FPS", frames, vehicles, fps)


def list_videos(folder: Path) -> list[Path]:
    """The folder's videos (not its sub-folders'), broken links included: a clip linked from a
    share that is not mounted must be reported missing, not skipped in silence."""
    return sorted(p for p in folder.iterdir()
                  if (p.is_file() or (p.is_symlink() and not p.exists())) and p.suffix.lower() in VIDEO_SUFFIXES)


LIST_SUFFIXES = {".txt", ".list", ".lst"}
# A folder run's own files beside the per-video folders
RESERVED_RUN_NAMES = {INDEX_FILE, SUMMARY_FILE, ASSETS}


def read_list(path: Path) -> list[str]:
    """A text file of inputs: one path or URL a line; blank lines and `#` comments skipped;
    relative paths are relative to the list's folder."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: Notepad's BOM is not part of a path
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read input list {path}: {exc}") from None
    entries, seen = [], set()
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = line if is_live(line) or Path(line).expanduser().is_absolute() else str(path.parent / line)
        if _listed_before(entry, seen):
            log.warning("%s line %d: %s is already listed; processed once", path, number, line)
            continue
        entries.append(entry)
    if not entries:
        raise UserError(f"no inputs listed in {path}")
    return entries


def _listed_before(entry: str, seen: set[str]) -> bool:
    """One video listed twice would be counted twice in the summary. By path, as given: two links to
    one file are two inputs, as in a folder."""
    key = entry if is_live(entry) else os.path.abspath(Path(entry).expanduser())
    if key in seen:
        return True
    seen.add(key)
    return False


def resolve_all(given: list[str]) -> list[str]:
    """The inputs of `run SOURCE...`: each argument resolved (resolve_sources), in order, each video once."""
    if len(given) == 1:
        return resolve_sources(given[0])
    out, seen = [], set()
    for source in given:
        path = Path(source).expanduser()
        # a missing file among several (a wildcard lists dangling links too) fails as that input only
        entries = [source] if not is_live(source) and not path.exists() else resolve_sources(source)
        for entry in entries:
            if _listed_before(entry, seen):
                log.warning("%s is given twice; processed once", entry)
            else:
                out.append(entry)
    return out


def resolve_sources(source: str) -> list[str]:
    """One entry per input: the source itself, each video in a folder, or each line of a list file."""
    if is_live(source):
        return [source]
    path = Path(source).expanduser()
    if path.is_dir():
        videos = list_videos(path)
        if not videos:
            raise UserError(f"no video files in folder {path} (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
        return [str(v) for v in videos]
    if not path.exists():
        raise SourceError(f"input not found: {path}")
    if path.suffix.lower() in LIST_SUFFIXES:
        return read_list(path)
    return [str(path)]


def run_dir_names(sources: list[str]) -> list[str]:
    """One sub-folder name per input of a folder run: the video's name, made unique."""
    names: list[str] = []
    for source in sources:
        stem = Path(source.split("?")[0].rstrip("/")).stem if is_live(source) else Path(source).stem
        stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in stem) or "input"
        name, n = stem, 2
        # the folder's own outputs (index.html, summary.csv, assets/) must not be taken by a video
        while name in names or name.lower() in RESERVED_RUN_NAMES:
            name, n = f"{stem}-{n}", n + 1
        names.append(name)
    return names


def default_out_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def _report(summary: RunSummary) -> None:
    line = (
        f"{summary.source}: {summary.frames} frames in {summary.elapsed_s:.1f} s ({summary.fps:.1f} FPS), "
        f"{summary.vehicles} vehicles, {summary.brands_decided} with a brand"
    )
    if summary.frames_dropped:
        line += f", {summary.frames_dropped} frames skipped to stay live"
    console.print(redact(line), markup=False)
    written = [name for name in ("events.jsonl", "vehicles.csv", "snapshots/", "report.html")
               if (summary.out_dir / name.rstrip("/")).exists()]
    console.print(f"  outputs: {summary.out_dir}/ (annotated.mp4: {summary.codec or 'off'}; {', '.join(written)})",
                  markup=False)


def _write_report(out_dir: Path, folder_mode: bool) -> None:
    """The report is a view of events.jsonl: failing to build it must not fail the run."""
    link = f"../{INDEX_FILE}" if folder_mode else None
    try:
        try:
            write_report(out_dir, index_link=link)
        except KeyboardInterrupt:
            # Ctrl-C / SIGTERM just after the last frame: the report is a second's work, so it
            # is finished (a second Ctrl-C still stops it), then the interrupt goes on.
            log.info("interrupted: finishing the report of %s first", out_dir)
            write_report(out_dir, index_link=link)
            raise
    except Exception as exc:  # noqa: BLE001 - any failure here is reported, never fatal
        log.error("report for %s not written: %s", out_dir, exc)


def _write_index(out_root: Path, run_dirs: list[Path]) -> str | None:
    """Returns why the index was not written (logged already), or None."""
    try:
        path = write_index(out_root, run_dirs)
        console.print(f"index of all videos: {path}", markup=False)
    except Exception as exc:  # noqa: BLE001 - reported; the runs' own outputs are complete
        problem = f"index {out_root / INDEX_FILE} not written: {exc}"
        log.error("%s", problem)
        return problem
    return None


def finish_folder(out_root: Path, run_dirs: list[Path]) -> list[str]:
    """After a folder run: `summary.csv` (every vehicle with its video) and `index.html`.
    Returns what could not be written (each logged already): the caller fails the run on it,
    so a script reading the exit status does not take a batch without its summary as done."""
    done = [d for d in run_dirs if (d / "events.jsonl").is_file()]
    problems = []
    try:
        write_summary(out_root, done)
    except OutputError as exc:
        log.error("%s", exc)
        problems.append(str(exc))
    index_problem = _write_index(out_root, done)
    if index_problem:
        problems.append(index_problem)
    return problems


def check_folder_outputs(problems: list[str]) -> None:
    if problems:
        raise OutputError(f"{problems[0]} (each video's own outputs are complete)")


def run_command(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be at least 1")
    if not getattr(args, "ray", None):
        given = [f"--{name}" for name in ("workers", "retries") if getattr(args, name, None) is not None]
        if given:  # ignored in silence, they would let a user believe the batch ran on the cluster
            raise UserError(f"{' and '.join(given)} go{'es' if len(given) == 1 else ''} with --ray ADDRESS")
    given = list(args.source)  # one or more SOURCE arguments
    sources = resolve_all(given)
    out_root = Path(args.out) if args.out else default_out_dir()
    # An unusable output folder, or one holding a previous run, is reported before the models
    # load, in one line; a previous run is cleared (--overwrite) only once they have loaded.
    claim = OutDirClaim(out_root, overwrite=getattr(args, "overwrite", False))
    folder_mode = (len(given) > 1 or len(sources) > 1 or Path(given[0]).is_dir()
                   or Path(given[0]).suffix.lower() in LIST_SUFFIXES)
    names = run_dir_names(sources)
    if getattr(args, "ray", None):
        # Only here is anything of Ray imported.
        from stream_pipeline.cluster.ray_runner import run_on_ray

        # the models load on the cluster's workers: the previous run is cleared once it is reached
        return run_on_ray(args, config, sources, [out_root / name for name in names], out_root,
                          on_connected=claim.take)
    with claim.loading_models():
        if claim.replaces_a_run() and not folder_mode and not is_live(sources[0]):
            check_readable(sources[0])  # a file that cannot be read must not cost the run it would replace
        pipeline = Pipeline(config)
    failures: list[str] = []
    run_dirs: list[Path] = []
    folder_problems: list[str] = []
    try:
        for source, name in zip(sources, names):
            out_dir = out_root / name if folder_mode else out_root
            progress = LogProgress() if args.no_progress else RichProgress(args.max_frames)
            run_dirs.append(out_dir)
            try:
                summary = pipeline.run(source, out_dir, max_frames=args.max_frames, show=args.show, progress=progress)
            except OutputError as exc:
                raise OutputError(f"{exc} (run stopped; outputs in {out_dir} are incomplete)") from None
            except SourceError as exc:
                if not folder_mode:
                    raise
                console.print(f"[red]skipped[/red] {escape(redact(source))}: {escape(str(exc))}", highlight=False)
                failures.append(f"{redact(source)}: {exc}")
                continue
            finally:
                # Whatever the run's fate, its report shows what events.jsonl holds.
                if (out_dir / "events.jsonl").is_file():
                    _write_report(out_dir, folder_mode)
            _report(summary)
            if summary.error:
                if not folder_mode:
                    raise SourceError(f"{summary.error} (outputs so far kept in {summary.out_dir})")
                failures.append(f"{redact(source)}: {summary.error}")
            if summary.stopped_by in ("interrupted", "quit"):
                interrupted = summary.stopped_by == "interrupted"
                left = len(sources) - len(run_dirs)
                if interrupted:
                    console.print(f"interrupted: outputs finalised in {summary.out_dir}")
                if left:  # the whole batch stops: a script reading the exit status must not take it as done
                    console.print(f"{'interrupted' if interrupted else 'quit from the window'}: "
                                  f"{left} of {len(sources)} inputs not processed", markup=False)
                if interrupted or left:
                    return 130
                break
    finally:
        if folder_mode:
            folder_problems = finish_folder(out_root, run_dirs)
    if failures:
        raise SourceError(f"{len(failures)} of {len(sources)} inputs failed; first: {failures[0]}")
    check_folder_outputs(folder_problems)
    return 0
