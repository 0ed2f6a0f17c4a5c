"""Shared fixtures: the ../shared folder, CLI runner, output readers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stream_pipeline.core.paths import PROJECT_ROOT, shared_dir

NO_BRANDS = "brands:\n  enabled: false\n"

# One pytest process loads TensorFlow (classifier tests) and later torch (ultralytics' predict,
# through torchvision.ops -> torch._dynamo -> triton). Importing triton's C extension after
# TensorFlow's segfaults the process (reproduced: `import tensorflow; import triton`). Torch on CPU
# has no use for triton and treats it as absent when its import fails, so it is blocked here.
# (No CLI command loads both libraries; vehicle_detector.load_yolo guards the same way.)
sys.modules.setdefault("triton", None)


@pytest.fixture(scope="session")
def shared() -> Path:
    return shared_dir()


@pytest.fixture(scope="session")
def videos(shared: Path) -> Path:
    return shared / "videos"


@pytest.fixture
def no_brands_config(tmp_path: Path) -> Path:
    path = tmp_path / "no_brands.yaml"
    path.write_text(NO_BRANDS)
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium, for tests that look at the HTML report as a browser renders it.
    CI starts from a fresh machine with package registries only: install it there when missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        done = subprocess.run(sudo + command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            pytest.fail(f"chromium is needed and could not be installed ({' '.join(command)}): {done.stderr.strip()[-500:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.fail("chromium installed but not on PATH")
    return found


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m stream_pipeline ARGS` as a user would (headless)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("DISPLAY", None)
    full_env.pop("WAYLAND_DISPLAY", None)
    return subprocess.run(
        [sys.executable, "-m", "stream_pipeline", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
        env=full_env,
    )


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def count_video_frames(path: Path) -> tuple[int, str]:
    """Decode every frame (proves the file is finalised and playable); returns (frames, codec)."""
    import av

    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context.name
        return sum(1 for _ in container.decode(video=0)), codec
