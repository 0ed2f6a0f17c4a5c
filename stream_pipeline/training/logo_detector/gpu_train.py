"""One logo-detector training run on a GPU machine with only PyTorch and ultralytics.

Standalone (runs without this project installed), next to what gpu_pack.py wrote:
    tar xzf data.tar.gz
    PYTHONPATH=stub python3 gpu_train.py TAG WEIGHTS LR0 HOURS WORKERS BATCH DEVICE [OUT]
The recipe is train.py's (HYPERPARAMETERS, AdamW, cosine, one warm-up epoch, imgsz 416),
with mixed precision and data-loader workers; `HOURS` fits the cosine schedule to the
time, as `train-logo-detector --hours` does. Validation runs once, at the end (the real
evaluation is `stream-pipeline evaluate-logo-detector` back home). Stripped checkpoints
go to OUT: TAG_last.pt, and snapshots at 60 % and 80 % of the time, with TAG_args.yaml and
TAG_results.csv. To ship: put them in work/logo_detector/runs/NAME/ as weights/best.pt,
args.yaml and results.csv, then `stream-pipeline train-logo-detector --name NAME --ship-only`.
"""

import os
import shutil
import sys
import time
from pathlib import Path

# Keep in step with train.py's HYPERPARAMETERS (this file cannot import the project).
HYPERPARAMETERS = dict(mosaic=0.0, close_mosaic=0, scale=0.5, translate=0.1, fliplr=0.5, degrees=0.0,
                       hsv_h=0.015, hsv_s=0.6, hsv_v=0.4, mixup=0.0, erasing=0.0)
SNAPSHOTS = (0.6, 0.8)


def main(argv: list[str]) -> int:
    tag, weights, lr0, hours, workers, batch, device = argv[:7]
    here = Path(__file__).resolve().parent
    out = Path(argv[7]) if len(argv) > 7 else here / "out"
    out.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(here / f"cfg_{tag}")
    import ultralytics.engine.trainer as trainer_module

    trainer_module.check_amp = lambda *args, **kwargs: True  # the check downloads yolo26n.pt
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import strip_optimizer

    data = here / "ds" / "data.yaml"
    data.write_text(f"path: {here / 'ds'}\ntrain: images/train\nval: images/val\nnames:\n  0: logo\n")
    budget = float(hours) * 3600
    marks = list(SNAPSHOTS)
    t0 = time.time()

    def snapshot(trainer) -> None:
        done = (time.time() - t0) / budget
        while marks and done >= marks[0]:
            mark = marks.pop(0)
            dst = out / f"{tag}_t{int(mark * 100)}_ep{trainer.epoch + 1}.pt"
            shutil.copy(trainer.last, dst)
            strip_optimizer(dst)
            print(f"[{tag}] snapshot {dst.name}", flush=True)

    model = YOLO(weights)
    model.add_callback("on_fit_epoch_end", snapshot)
    model.train(data=str(data), epochs=200, time=float(hours), imgsz=416, batch=int(batch), workers=int(workers),
                device=device, project=str(here / "runs"), name=tag, exist_ok=True, single_cls=True,
                amp=device != "cpu", plots=False, cache="ram", val=False, patience=1000, optimizer="AdamW",
                lr0=float(lr0), cos_lr=True, warmup_epochs=1.0, seed=0, deterministic=False, verbose=True,
                **HYPERPARAMETERS)
    run = here / "runs" / tag
    shutil.copy(run / "weights" / "last.pt", out / f"{tag}_last.pt")
    strip_optimizer(out / f"{tag}_last.pt")
    # what `train-logo-detector --ship-only` reads back home: the input size and the epoch times
    for name in ("args.yaml", "results.csv"):
        shutil.copy(run / name, out / f"{tag}_{name}")
    print(f"[{tag}] done in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
