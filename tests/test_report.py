"""The run report, as a real headless browser (Debian's chromium) renders it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import read_events, run_cli

CONFIG = """\
zones:
  - name: lanes
    line: [[0.0, 0.5], [1.0, 0.5]]
"""
VIDEOS = ("dashcam_vw_close.mp4", "highway_overpass_720p.mp4")
FRAMES = 138  # the whole dash-cam clip; the first 4.6 s of the highway


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, videos: Path) -> Path:
    """One run over a folder of two videos, brands on: a named VW with its badge, and a
    highway with a counting line."""
    base = tmp_path_factory.mktemp("report")
    clips = base / "clips"
    clips.mkdir()
    for name in VIDEOS:
        (clips / name).symlink_to(videos / name)
    config = base / "zones.yaml"
    config.write_text(CONFIG)
    result = run_cli("run", str(clips), "--config", str(config), "--out", str(base / "out"),
                     "--max-frames", str(FRAMES), "--no-progress")
    assert result.returncode == 0, result.stderr
    return base / "out"


def _run_dirs(root: Path) -> list[Path]:
    return [root / Path(name).stem for name in VIDEOS]


class _Links(HTMLParser):
    """Every src / href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [value for key, value in attrs if key in ("src", "href") and value]


def _probe(chromium: str, page: Path, width: int, tmp_path: Path) -> dict:
    """Load `page` in a same-folder iframe of the given width; report what the browser made of it:
    vehicle table rows, every image with its loaded size, and the page's scroll width."""
    probe = page.parent / "_probe.html"
    probe.write_text(f"""<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" src="{page.name}" style="width:{width}px;height:900px;border:0"></iframe><pre id="out">pending</pre>
<script>
document.getElementById('f').addEventListener('load', function () {{
  var d = this.contentDocument;
  var images = Array.from(d.images).map(function (i) {{
    return {{src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth}}; }});
  document.getElementById('out').textContent = JSON.stringify({{
    rows: d.querySelectorAll('table.vehicles tbody tr').length, images: images,
    scrollWidth: d.documentElement.scrollWidth, title: d.title}});
}});
</script></body></html>""")
    try:
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000", "--dump-dom",
             probe.as_uri()],
            capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    match = re.search(r'<pre id="out">(.*?)</pre>', done.stdout, re.S)
    assert match, done.stderr[-2000:]
    assert match.group(1) != "pending", "the report did not finish loading"
    return json.loads(match.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"'))


def _screenshot(chromium: str, page: Path, width: int, height: int, path: Path, tmp_path: Path) -> Image.Image:
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={width},{height}",
         f"--screenshot={path}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True)
    return Image.open(path).convert("RGB")


def test_every_video_gets_a_report_and_the_folder_an_index(folder_run: Path):
    for run_dir in _run_dirs(folder_run):
        assert (run_dir / "report.html").is_file()
        for chart in ("brands", "timeline"):
            assert (run_dir / "report" / f"{chart}.png").is_file()
    assert (folder_run / "highway_overpass_720p" / "report" / "zones.png").is_file()
    assert (folder_run / "index.html").is_file()


@pytest.mark.parametrize("name", [Path(v).stem for v in VIDEOS])
def test_report_renders_rows_and_images_in_a_browser(folder_run: Path, chromium: str, tmp_path: Path, name: str):
    run_dir = folder_run / name
    vehicles = [e for e in read_events(run_dir / "events.jsonl") if e["event"] == "vehicle"]
    assert vehicles
    seen = _probe(chromium, run_dir / "report.html", 1200, tmp_path)
    assert seen["rows"] == len(vehicles)
    charts = {i["src"] for i in seen["images"] if i["src"].endswith(".png")}
    assert charts == {"report/brands.png", "report/timeline.png", "report/zones.png"}  # the run had a line
    broken = [i["src"] for i in seen["images"] if not (i["complete"] and i["width"] > 0)]
    assert broken == []
    # One vehicle thumbnail per record with a snapshot, one badge thumbnail per badge snapshot.
    thumbs = [i for i in seen["images"] if i["src"].startswith("report/thumbs/")]
    assert len(thumbs) == sum(bool(v["snapshot"]) + bool(v["badge_snapshot"]) for v in vehicles)


def test_report_reads_on_a_phone(folder_run: Path, chromium: str, tmp_path: Path):
    run_dir = folder_run / "highway_overpass_720p"
    seen = _probe(chromium, run_dir / "report.html", 390, tmp_path)
    assert seen["scrollWidth"] <= 390  # nothing wider than the screen: no sideways scrolling
    shot = _screenshot(chromium, run_dir / "report.html", 390, 1600, tmp_path / "phone.png", tmp_path)
    pixels = np.asarray(shot).reshape(-1, 3)
    # Not blank: text, charts and thumbnails give many colours and a spread of brightness. The
    # count depends on which vehicle thumbnails come first (189 and 205 seen for two detector
    # exports on the same clip); a blank or unstyled page has a few dozen at most.
    assert len(np.unique(pixels // 16, axis=0)) > 150
    assert pixels.std() > 25


def test_report_is_self_contained(folder_run: Path):
    for page in [folder_run / "index.html", *(d / "report.html" for d in _run_dirs(folder_run))]:
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        assert parser.refs
        for ref in parser.refs:
            assert "://" not in ref and not ref.startswith("/"), ref  # no network, no absolute paths
            assert (page.parent / ref).is_file(), ref


def test_report_shows_the_runs_brands_and_counts(folder_run: Path):
    vw = folder_run / "dashcam_vw_close"
    html = (vw / "report.html").read_text(encoding="utf-8")
    vehicles = [e for e in read_events(vw / "events.jsonl") if e["event"] == "vehicle"]
    polo = max(vehicles, key=lambda v: v["frames_seen"])
    assert polo["brand"] == "volkswagen" and polo["badge_snapshot"]
    assert f'src="report/thumbs/{Path(polo["badge_snapshot"]).name}"' in html
    assert ">volkswagen<" in html
    highway = folder_run / "highway_overpass_720p"
    ended = read_events(highway / "events.jsonl")[-1]
    lanes = ended["zones"]["lanes"]
    assert lanes["in"] + lanes["out"] > 0
    row = re.search(r"<td>all vehicles</td><td class=\"num\">(\d+)</td><td class=\"num\">(\d+)</td>",
                    (highway / "report.html").read_text(encoding="utf-8"))
    assert row and (int(row.group(1)), int(row.group(2))) == (lanes["in"], lanes["out"])
    index = (folder_run / "index.html").read_text(encoding="utf-8")
    assert 'href="dashcam_vw_close/report.html"' in index and 'href="highway_overpass_720p/report.html"' in index


def test_report_command_rebuilds_from_events(folder_run: Path, tmp_path: Path):
    copy = tmp_path / "out"
    shutil.copytree(folder_run, copy)
    original = (copy / "highway_overpass_720p" / "report.html").read_text(encoding="utf-8")
    for run_dir in _run_dirs(copy):
        (run_dir / "report.html").unlink()
        shutil.rmtree(run_dir / "report")
    (copy / "index.html").unlink()
    # A run killed mid-write leaves half a line: the rest still makes a report.
    with (copy / "dashcam_vw_close" / "events.jsonl").open("a") as handle:
        handle.write('{"event": "vehi')
    result = run_cli("report", str(copy))
    assert result.returncode == 0, result.stderr
    assert (copy / "highway_overpass_720p" / "report.html").read_text(encoding="utf-8") == original
    assert (copy / "dashcam_vw_close" / "report.html").is_file() and (copy / "index.html").is_file()
    single = run_cli("report", str(copy / "highway_overpass_720p"))
    assert single.returncode == 0 and single.stdout.strip() == str(copy / "highway_overpass_720p" / "report.html")


def test_report_command_on_a_folder_without_runs(tmp_path: Path):
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"stream-pipeline: error: no events.jsonl in {tmp_path} or its sub-folders: not a run output folder"]
    events = tmp_path / "events.jsonl"  # the log itself, not its folder
    events.write_text("")
    result = run_cli("report", str(events))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"stream-pipeline: error: {events} is a file: give the run's output folder (the one holding events.jsonl)"]


def test_ctrl_c_while_the_report_is_written_finishes_it_then_stops(folder_run: Path, tmp_path: Path, monkeypatch):
    """Ctrl-C (or SIGTERM) just after the last frame landed in the report's writing and left none."""
    from stream_pipeline import runner

    run_dir = tmp_path / "run"
    shutil.copytree(folder_run / "highway_overpass_720p", run_dir)
    original = (run_dir / "report.html").read_text(encoding="utf-8")
    (run_dir / "report.html").unlink()
    shutil.rmtree(run_dir / "report")
    real, calls = runner.write_report, []

    def interrupted_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "write_report", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        runner._write_report(run_dir, folder_mode=True)
    assert (run_dir / "report.html").read_text(encoding="utf-8") == original
