"""`benchmark --compare-ultralytics`: `yolo track` and `stream-pipeline run` on the same clip.

Both run as separate processes, one after the other, timed from start to exit (model
loading included), with the peak resident memory of each process tree (the process and
its children, sampled) and the kernel's own peak of the largest process (wait4).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from stream_pipeline.core.config import PipelineConfig
from stream_pipeline.core.errors import UserError
from stream_pipeline.core.paths import PROJECT_ROOT, shared_path
from stream_pipeline.detection import COCO_VEHICLE_IDS

SAMPLE_S = 0.2


@dataclass
class ProcessRun:
    name: str
    command: list[str]
    frames: int
    wall_s: float
    exit_code: int
    peak_rss_tree_mb: float  # sampled sum over the process and its children
    peak_rss_max_mb: float  # kernel's ru_maxrss of the largest process

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def timed_process(name: str, command: list[str], frames: int, cwd: Path, env: dict | None = None,
                  log_path: Path | None = None) -> ProcessRun:
    """Run `command` to its end; wall time from spawn to exit, peak RSS of its tree."""
    import psutil

    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    try:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            proc = psutil.Process(child.pid)
            while not done.is_set():
                peak[0] = max(peak[0], _tree_rss(proc))
                done.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    finally:
        if log_path:
            log.close()
    return ProcessRun(name, command, frames, wall, child.returncode, peak[0] / 2**20, usage.ru_maxrss / 1024)


def yolo_command(clip: Path, config: PipelineConfig, project: Path) -> list[str]:
    """`yolo track` with the float checkpoint of the same network, same classes, input size and
    thresholds, writing its annotated video as `stream-pipeline run` does."""
    yolo = shutil.which("yolo") or str(Path(sys.executable).with_name("yolo"))
    det = config.detector
    classes = ",".join(str(COCO_VEHICLE_IDS[c]) for c in det.classes)
    return [yolo, "track", f"model={shared_path('models', 'yolo11n.pt')}", f"source={clip}", f"classes=[{classes}]",
            f"imgsz={det.imgsz}", f"conf={det.confidence}", f"iou={det.iou}", f"agnostic_nms={det.agnostic_nms}",
            "tracker=bytetrack.yaml", "device=cpu", "save=True", "verbose=False", f"project={project}", "name=yolo",
            "exist_ok=True"]


def pipeline_command(clip: Path, out: Path, config_path: str | None) -> list[str]:
    command = [sys.executable, "-m", "stream_pipeline", "run", str(clip), "--out", str(out), "--no-progress"]
    if config_path:
        command += ["--config", str(config_path)]
    return command


def compare(clip: Path, frames: int, config: PipelineConfig, config_path: str | None,
            keep: Path | None = None) -> dict:
    if not shared_path("models", "yolo11n.pt").is_file():
        raise UserError(f"float checkpoint not found: {shared_path('models', 'yolo11n.pt')}")
    with tempfile.TemporaryDirectory(prefix="sp-compare-") as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        # PYTHONPATH: the child runs this very checkout, installed or not.
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
        yolo = timed_process("yolo track", yolo_command(clip, config, work / "yolo"), frames, work,
                             log_path=work / "yolo.log")
        ours = timed_process("stream-pipeline run", pipeline_command(clip, work / "run", config_path), frames,
                             PROJECT_ROOT, env=env, log_path=work / "run.log")
        for run in (yolo, ours):
            if run.exit_code != 0:
                log = (work / ("yolo.log" if run is yolo else "run.log")).read_text(errors="replace")[-800:]
                raise UserError(f"{run.name} failed with exit code {run.exit_code}: {log.strip()}")
        ended = _ended_event(work / "run" / "events.jsonl")
    result = {
        "clip": str(clip),
        "frames": frames,
        "brands_enabled": config.brands.enabled,
        "yolo_track": {**_row(yolo)},
        "stream_pipeline": {**_row(ours), "vehicles": ended.get("vehicles"), "frames_processed": ended.get("frames")},
        "ratio": round(ours.fps / yolo.fps, 3) if yolo.fps else None,
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }
    return result


def _row(run: ProcessRun) -> dict:
    data = asdict(run)
    data.pop("frames")
    data["command"] = " ".join(run.command)
    data["wall_s"] = round(run.wall_s, 2)
    data["fps"] = round(run.fps, 2)
    data["peak_rss_tree_mb"] = round(run.peak_rss_tree_mb, 1)
    data["peak_rss_max_mb"] = round(run.peak_rss_max_mb, 1)
    return data


def _ended_event(path: Path) -> dict:
    import json

    if not path.is_file():
        return {}
    for line in reversed(path.read_text(encoding="utf-8").splitlines()):
        event = json.loads(line)
        if event.get("event") == "stream" and event.get("status") in ("ended", "error"):
            return event
    return {}
