"""Users without ../shared: fetch-samples downloads what the default config reads from there."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_pipeline import samples
from stream_pipeline.core import paths
from stream_pipeline.core.errors import ModelError

MODEL = "shared:models/yolo11n_int8_openvino_model"


def test_without_shared_the_detector_is_fetched_and_then_found(tmp_path: Path, shared: Path, monkeypatch):
    monkeypatch.setenv(paths.SHARED_ENV, str(tmp_path / "no_shared_here"))
    monkeypatch.setattr(paths, "SAMPLES_DIR", tmp_path / "samples")
    monkeypatch.setattr(samples, "SAMPLES_DIR", tmp_path / "samples")
    with pytest.raises(ModelError, match="fetch-samples"):
        paths.resolve_model_path(MODEL)
    (tmp_path / "empty_shared").mkdir()  # a shared folder without the model names it too
    monkeypatch.setenv(paths.SHARED_ENV, str(tmp_path / "empty_shared"))
    with pytest.raises(ModelError, match="fetch-samples"):
        paths.resolve_model_path(MODEL)
    monkeypatch.setenv(paths.SHARED_ENV, str(tmp_path / "no_shared_here"))
    # the manifest's public URLs, served from a local copy of the same files (no network here)
    real = samples.load_models

    def local_urls(path=samples.MANIFEST):
        out = []
        for model in real(path):
            files = tuple(f.__class__(f.name, f.file, f.shared, (shared / f.shared).as_uri(), f.sha256)
                          for f in model.files)
            out.append(model.__class__(model.name, model.shared, files))
        return out

    monkeypatch.setattr(samples, "load_models", local_urls)
    [folder] = samples.fetch_samples(tmp_path / "clips", names=["yolo11n_int8_openvino_model"])
    assert folder == tmp_path / "samples" / "models" / "yolo11n_int8_openvino_model"
    assert paths.resolve_model_path(MODEL) == folder
    from stream_pipeline.core.config import DetectorConfig
    from stream_pipeline.detection.vehicle_detector import VehicleDetector

    detector = VehicleDetector(DetectorConfig())  # the default config's model, from the fetched files
    assert len(detector.detect(__import__("numpy").zeros((640, 640, 3), "uint8"))) == 0


def test_a_wrong_download_is_refused_and_not_kept(tmp_path: Path, shared: Path, monkeypatch):
    monkeypatch.setenv(paths.SHARED_ENV, str(tmp_path / "no_shared_here"))
    monkeypatch.setattr(samples, "SAMPLES_DIR", tmp_path / "samples")
    [model] = samples.load_models()
    wrong = model.files[0].__class__(model.files[0].name, model.files[0].file, model.files[0].shared,
                                     (shared / "models" / "yolo11n.pt").as_uri(), model.files[0].sha256)
    with pytest.raises(Exception, match="sha256"):
        samples.fetch_model(model.__class__(model.name, model.shared, (wrong,)))
    assert not any((tmp_path / "samples").rglob("*.xml*"))
