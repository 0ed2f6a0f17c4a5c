"""Configuration validation: errors name the key; the shipped YAML is the documented default."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_pipeline.core.config import DEFAULT_CONFIG, PipelineConfig, load_config
from stream_pipeline.core.errors import ConfigError
from tests.conftest import run_cli


def test_default_yaml_matches_built_in_defaults():
    # configs/default.yaml documents every key with its default: they must not drift apart.
    assert load_config(DEFAULT_CONFIG) == PipelineConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("detector:\n  confidance: 0.3\n", "unknown key 'detector.confidance'"),
        ("detector:\n  confidence: 1.5\n", "'detector.confidence'"),
        ("brands:\n  min_votes: many\n", "'brands.min_votes'"),
        ("tracker:\n  min_hits: 0\n", "'tracker.min_hits'"),
        ("detector:\n  classes: [car, boat]\n", "'detector.classes.1'"),
        ("colour: red\n", "unknown key 'colour'"),
        ("detector: [1, 2\n", "invalid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        # YAML would keep the second silently and undo the first
        ("output: {video: false}\nbrands: {enabled: false}\noutput: {csv: false}\n",
         "(line 3): key 'output' is given twice"),
        ("tracker:\n  min_hits: 3\n  min_hits: 5\n", "(line 3): key 'min_hits' is given twice"),
    ],
)
def test_invalid_config_names_the_problem(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_config_error_is_one_line_and_nonzero(tmp_path: Path, videos: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("tracker:\n  min_hitz: 3\n")
    result = run_cli("run", str(videos / "intel_parking_lot.mp4"), "--config", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["stream-pipeline: error: invalid config " + str(path) + ": unknown key 'tracker.min_hitz'"]


def test_cli_missing_input_is_one_line_and_nonzero(tmp_path: Path):
    result = run_cli("run", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "out"))
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [f"stream-pipeline: error: input not found: {tmp_path / 'nope.mp4'}"]


def test_cli_missing_config_file(tmp_path: Path, videos: Path):
    result = run_cli("run", str(videos / "intel_parking_lot.mp4"), "--config", str(tmp_path / "none.yaml"))
    assert result.returncode == 2
    assert "config file not found" in result.stderr
    folder = run_cli("run", str(videos / "intel_parking_lot.mp4"), "--config", str(tmp_path))
    assert folder.returncode == 2
    assert folder.stderr.strip().splitlines() == [f"stream-pipeline: error: config file is a folder, not a YAML file: {tmp_path}"]


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path):
    path = tmp_path / "merge.yaml"
    path.write_text("x-common: &common {min_hits: 4, duplicate_frames: 9}\n"
                    "tracker:\n  <<: *common\n  min_hits: 5\n")
    with pytest.raises(ConfigError, match="unknown key 'x-common'"):  # merging itself is fine
        load_config(path)
    from stream_pipeline.core.config import read_yaml

    assert read_yaml(path)["tracker"] == {"min_hits": 5, "duplicate_frames": 9}


def test_verbose_is_taken_after_the_command_too(tmp_path: Path, videos: Path, no_brands_config: Path):
    result = run_cli("run", str(videos / "dashcam_vw_close.mp4"), "--config", str(no_brands_config),
                     "--out", str(tmp_path / "out"), "--max-frames", "2", "--no-progress", "-v")
    assert result.returncode == 0, result.stderr
    assert " DEBUG " in result.stderr
