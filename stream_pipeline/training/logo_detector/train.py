"""Fine-tune YOLO11n (COCO, ../shared/models/yolo11n.pt) into a one-class badge detector.

Training runs on vehicle-sized crops at TRAIN_IMGSZ (see dataset.py), on one CPU thread
with no data-loader workers so it can share a 2-core machine. Runs live under
work/logo_detector/runs/<name>; `resume=True` continues the last.pt of a stopped run.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from stream_pipeline.core.errors import UserError
from stream_pipeline.core.paths import shared_dir
from stream_pipeline.training.logo_detector.common import MODEL_DIR, WORK_DIR, setup_offline_ultralytics

log = logging.getLogger(__name__)

TRAIN_IMGSZ = 320
RUNS_DIR = WORK_DIR / "runs"

# Augmentation tuned for small badges on vehicle crops: no mosaic (it would halve the
# badges and build scenes the detector never sees at run time), scale jitter x0.5-1.5 (the
# dataset's close-range windows cover the badges that fill 20-50 % of a crop).
HYPERPARAMETERS = dict(
    mosaic=0.0,
    close_mosaic=0,
    scale=0.5,
    translate=0.1,
    fliplr=0.5,
    degrees=0.0,
    hsv_h=0.015,
    hsv_s=0.6,
    hsv_v=0.4,
    mixup=0.0,
    erasing=0.0,
)


def base_weights() -> Path:
    path = shared_dir() / "models" / "yolo11n.pt"
    if not path.exists():
        raise UserError(f"starting checkpoint not found: {path}")
    return path


def train(
    data_yaml: Path,
    name: str = "logo320",
    epochs: int = 30,
    imgsz: int = TRAIN_IMGSZ,
    batch: int = 16,
    threads: int = 1,
    resume: bool = False,
    fraction: float = 1.0,
    patience: int = 100,
    time_hours: float | None = None,
    weights: Path | None = None,
    lr0: float = 0.002,
    device: str | None = None,
    workers: int | None = None,
) -> Path:
    """Train (or resume) and return the run folder.

    time_hours: wall-clock budget; ultralytics then re-estimates the epoch count after
    each epoch so the learning-rate schedule ends on time (overrides `epochs`).
    weights: starting checkpoint (default: COCO yolo11n.pt), e.g. the shipped detector, to
    continue training a model whose run folder is gone.
    device: "cpu" (default), or a CUDA device ("0"): mixed precision, and `workers`
    data-loader processes (default 0, so training can share a 2-core machine). On resume, only
    what is given overrides the run's own device and workers.
    """
    setup_offline_ultralytics(threads)
    from ultralytics import YOLO

    check_device(device)
    on_gpu = is_cuda(device)
    _skip_online_amp_check()  # also for a resumed GPU run whose device is not given again

    run_dir = RUNS_DIR / name
    last = run_dir / "weights" / "last.pt"
    t0 = time.time()
    if resume:
        if not last.exists():
            raise UserError(f"nothing to resume: {last} does not exist")
        log.info("resuming %s", last)
        given = {k: v for k, v in (("device", device), ("workers", workers)) if v is not None}
        YOLO(str(last)).train(resume=True, **given)
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        if weights is not None and not Path(weights).is_file():
            raise UserError(f"starting checkpoint not found: {weights}")
        model = YOLO(str(weights or base_weights()))
        model.train(
            data=str(data_yaml),
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            workers=workers or 0,
            device=device or "cpu",
            project=str(RUNS_DIR),
            name=name,
            exist_ok=True,
            single_cls=True,
            amp=on_gpu,
            plots=False,
            cache="ram",
            fraction=fraction,
            patience=patience,
            **({"time": time_hours} if time_hours else {}),
            optimizer="AdamW",
            lr0=lr0,
            cos_lr=True,
            warmup_epochs=1.0,
            seed=0,
            deterministic=False,
            verbose=True,
            **HYPERPARAMETERS,
        )
    (run_dir / "train_wall_time.json").write_text(json.dumps({"seconds": time.time() - t0}))
    return run_dir


def is_cuda(device: str | None) -> bool:
    """A CUDA device string ("0", "0,1", "cuda:0"), not "cpu" or "mps"."""
    return device is not None and device.strip().lower() not in ("", "cpu", "mps")


def check_device(device: str | None) -> None:
    """Refuse a CUDA device on a machine without one, before any data is built or run deleted."""
    if not is_cuda(device):
        return
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device on this machine; use --device cpu")


def _skip_online_amp_check() -> None:
    """ultralytics checks mixed precision on a GPU by downloading yolo26n.pt; offline that fails
    (not always with the ConnectionError it expects), so trust AMP on CUDA as it does when
    offline, and leave its own answer (no AMP) for anything else."""
    from ultralytics.utils import WEIGHTS_DIR

    if (WEIGHTS_DIR / "yolo26n.pt").is_file():
        return
    import ultralytics.engine.trainer as trainer

    original = trainer.check_amp

    def check_amp(model, *args, **kwargs):
        if next(model.parameters()).device.type == "cuda":
            log.info("AMP check skipped (it needs yolo26n.pt from the network)")
            return True
        return original(model, *args, **kwargs)

    trainer.check_amp = check_amp


def epoch_times(run_dir: Path) -> list[float]:
    """Seconds per epoch from ultralytics' results.csv (its `time` column is cumulative)."""
    csv = run_dir / "results.csv"
    if not csv.exists():
        return []
    lines = csv.read_text().splitlines()
    header = [h.strip() for h in lines[0].split(",")]
    if "time" not in header:
        return []
    col = header.index("time")
    cumulative = [float(line.split(",")[col]) for line in lines[1:] if line.strip()]
    return [b - a for a, b in zip([0.0] + cumulative[:-1], cumulative)]


def install_weights(run_dir: Path, which: str = "best") -> Path:
    """Copy the run's best.pt (stripped of optimizer state) into models/logo_detector/."""
    src = run_dir / "weights" / f"{which}.pt"
    if not src.exists():
        raise UserError(f"no {which}.pt in {run_dir}/weights")
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    dst = MODEL_DIR / "best.pt"
    shutil.copy(src, dst)
    try:
        from ultralytics.utils.torch_utils import strip_optimizer

        strip_optimizer(str(dst))
    except (RuntimeError, OSError, KeyError, AttributeError) as exc:  # stripping is optional
        log.warning("could not strip optimizer from %s: %s", dst, exc)
    return dst


def export_openvino(weights: Path, imgsz: int, fp16: bool = True) -> Path:
    """Export weights to OpenVINO IR next to them (models/logo_detector/best_openvino_model/).

    Dynamic input shape, so one IR serves vehicle crops (320) and whole photos (640);
    weights stored as FP16 (half the size; OpenVINO on CPU still computes in FP32).
    """
    setup_offline_ultralytics()
    from ultralytics import YOLO

    out = YOLO(str(weights)).export(
        format="openvino", imgsz=imgsz, dynamic=True, batch=1, device="cpu", **({"quantize": 16} if fp16 else {})
    )
    return Path(out)
