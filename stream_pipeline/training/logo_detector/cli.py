"""Sub-commands of the logo (badge) detector: train, evaluate, detect."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from stream_pipeline.core.errors import UserError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- train
def _cmd_train(args: argparse.Namespace) -> int:
    from stream_pipeline.training.logo_detector.common import WORK_DIR, setup_offline_ultralytics

    setup_offline_ultralytics(args.threads)
    from stream_pipeline.training.logo_detector import dataset, train

    run_dir = train.RUNS_DIR / args.name
    if not args.ship_only:
        train.check_device(args.device)
    if args.imgsz is None:  # ship at the size the run trained at
        args.imgsz = _run_imgsz(run_dir) or train.TRAIN_IMGSZ
    if args.ship_only:
        return _ship(run_dir, args.imgsz)
    if args.resume:
        train.train(Path(), name=args.name, resume=True, threads=args.threads, device=args.device,
                    workers=args.workers)
    else:
        data_yaml = dataset.prepare(
            WORK_DIR / f"dataset_{args.name}",
            resplit=args.resplit,
            synthetic_dir=Path(args.synthetic) if args.synthetic else None,
        )
        if args.prepare_only:
            print(data_yaml)
            return 0
        train.RUNS_DIR.mkdir(parents=True, exist_ok=True)
        command = "OMP_NUM_THREADS=1 stream-pipeline " + " ".join(sys.argv[1:])
        train.train(
            data_yaml,
            name=args.name,
            epochs=args.epochs,
            imgsz=args.imgsz,
            batch=args.batch,
            threads=args.threads,
            fraction=args.fraction,
            time_hours=args.hours,
            weights=Path(args.weights) if args.weights else None,
            lr0=args.lr0,
            device=args.device,
            workers=args.workers,
        )
    if not args.resume:
        (run_dir / "command.txt").write_text(command + "\n")
    times = train.epoch_times(run_dir)
    if times:
        print(f"epochs {len(times)}, median {sorted(times)[len(times) // 2]:.0f} s/epoch")
    if args.install:
        return _ship(run_dir, args.imgsz)
    print(f"trained: {run_dir / 'weights' / 'best.pt'} (not installed; see --install)")
    return 0


def _run_imgsz(run_dir: Path) -> int | None:
    """The input size a run trained at (ultralytics' args.yaml), if the run exists."""
    import yaml

    args_file = run_dir / "args.yaml"
    if not args_file.is_file():
        return None
    return int((yaml.safe_load(args_file.read_text()) or {}).get("imgsz") or 0) or None


def _photo_conf_meta(report: dict) -> dict:
    """metadata.json's detect-logos threshold and its rule, when the evaluation chose one."""
    choice = report.get("photo_conf_choice")
    if not choice:
        return {}
    return {"photo_conf": report["photo_conf"],
            "photo_conf_rule": choice["rule"] + " on val whole photos, detect-logos' fused passes (IoU 0.3)"}


def _ship(run_dir: Path, imgsz: int, full_imgsz: int = 640) -> int:
    """Install best.pt, export OpenVINO, choose the threshold on val, write metadata."""
    from stream_pipeline.training.logo_detector import evaluate, train
    from stream_pipeline.training.logo_detector.common import METADATA_FILE, MODEL_DIR, WORK_DIR
    from stream_pipeline.training.logo_detector.model_card import write_model_card

    weights = train.install_weights(run_dir)
    export_dir = train.export_openvino(weights, imgsz)
    meta = {"imgsz": imgsz, "full_frame_imgsz": full_imgsz, "conf": 0.25, "iou": 0.6, "names": ["logo"]}
    METADATA_FILE.write_text(json.dumps(meta, indent=1) + "\n")
    # unseen-brand sets, when built (synth.py): badge swaps of the test crops, video composites
    folders = tuple(d for d in (WORK_DIR / "swap_test_unseen", WORK_DIR / "synth_unseen") if d.is_dir())
    report = evaluate.evaluate(export_dir, full_imgsz=full_imgsz, crop_imgsz=imgsz, folders=folders)
    meta["conf"] = report["conf"]
    meta["conf_rule"] = report["conf_choice"]["rule"] + " on val vehicle crops (IoU 0.5)"
    meta.update(_photo_conf_meta(report))
    meta["train_run"] = run_dir.name
    METADATA_FILE.write_text(json.dumps(meta, indent=1) + "\n")
    evaluate.save_report(report, MODEL_DIR / "evaluation.json")
    print(evaluate.format_report(report))
    cmd_file = run_dir / "command.txt"
    command = cmd_file.read_text().strip() if cmd_file.exists() else "(training command not recorded)"
    print(f"wrote {write_model_card(run_dir, command, train.epoch_times(run_dir))}")
    return 0


# --------------------------------------------------------------------------- evaluate
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from stream_pipeline.training.logo_detector import evaluate

    splits = tuple(s.strip() for s in args.split.split(",") if s.strip())
    bad = [s for s in splits if s not in ("train", "val", "test")]
    if bad:
        raise UserError(f"unknown split {bad[0]!r} (use train, val, test)")
    report = evaluate.evaluate(
        Path(args.model) if args.model else None,
        splits=splits,
        full_imgsz=args.full_imgsz,
        crop_imgsz=args.imgsz,
        conf=args.conf,
        choose_on="val" if "val" in splits else splits[0],
        folders=tuple(Path(f) for f in args.folder),
        timing_images=args.timing_images,
        painted_out=args.painted_out,
    )
    print(evaluate.format_report(report))
    if args.out:
        evaluate.save_report(report, Path(args.out))
    if args.write_metadata:
        from stream_pipeline.training.logo_detector.common import METADATA_FILE

        meta = json.loads(METADATA_FILE.read_text()) if METADATA_FILE.exists() else {}
        meta.update({"conf": report["conf"], "imgsz": report["crop_imgsz"], "full_frame_imgsz": args.full_imgsz})
        for key in ("photo_conf", "photo_conf_rule"):  # another model's photo threshold must not stay
            meta.pop(key, None)
        meta.update(_photo_conf_meta(report))
        METADATA_FILE.write_text(json.dumps(meta, indent=1) + "\n")
        print(f"wrote {METADATA_FILE}")
    return 0


# --------------------------------------------------------------------------- detect
def _expand_images(items: list[str]) -> list[Path]:
    """As classify and enroll take them (`image_inputs`): a folder's images, not its sub-folders'."""
    from stream_pipeline.training.classifier.dataset import image_inputs, no_images_in

    paths = [Path(p) for p in image_inputs(items)]
    if not paths:
        raise UserError(f"no images given: {no_images_in(items)}")
    return paths


def _cmd_detect(args: argparse.Namespace) -> int:
    from stream_pipeline.brands.logo_detector import LogoDetector
    from stream_pipeline.brands.photo import VehicleFinder, detect_in_photo
    from stream_pipeline.core.errors import ModelError
    from stream_pipeline.core.paths import PROJECT_ROOT
    from stream_pipeline.training.classifier.dataset import read_image

    if args.conf is not None and not 0 < args.conf <= 1:
        raise UserError(f"--conf must be a score in (0, 1], not {args.conf}")
    if args.imgsz is not None and not 32 <= args.imgsz <= 4096:
        raise UserError(f"--imgsz must be between 32 and 4096 pixels, not {args.imgsz}")
    paths = _expand_images(args.images)
    model = Path(args.model).expanduser() if args.model else None
    if model is not None and not model.exists() and not (PROJECT_ROOT / model).exists():
        # named as the user's shell resolves it, not as the project-relative fallback
        raise ModelError(f"logo detector model not found: {model.absolute()}")
    detector = LogoDetector.load(model, conf=args.conf)
    vehicles = None
    if args.mode == "auto":
        try:
            vehicles = VehicleFinder()
        except UserError as exc:  # no ../shared: whole-image pass only
            log.warning("no vehicle detector (%s): whole-image pass only", exc)
    status = 0
    for path in paths:
        image = read_image(path)  # as classify reads it: a truncated JPEG is unreadable, not half grey
        if image is None:
            print(f"stream-pipeline: error: cannot read image {path}", file=sys.stderr)
            status = 2
            continue
        if args.mode == "auto":
            det = detect_in_photo(detector, image, vehicles, conf=args.conf, whole_imgsz=args.imgsz)
        else:
            size = args.imgsz or (
                detector.imgsz if args.mode == "crop" else int(detector.metadata.get("full_frame_imgsz", 640))
            )
            [det] = detector.detect([image], imgsz=size)
        boxes = [
            {"xyxy": [round(float(v), 2) for v in xyxy], "confidence": round(float(c), 4)}
            for xyxy, c in zip(det.xyxy, det.confidence)
        ]
        if args.json:
            print(json.dumps({"path": str(path), "boxes": boxes}), flush=True)
        else:
            text = ", ".join(f"[{', '.join(f'{v:.0f}' for v in b['xyxy'])}] {b['confidence']:.2f}" for b in boxes)
            print(f"{path}: {len(boxes)} badge(s) {text}".rstrip(), flush=True)
    return status


def add_commands(subparsers) -> None:
    """Register sub-commands on the top-level argparse subparsers."""
    t = subparsers.add_parser(
        "train-logo-detector",
        help="train the YOLO badge detector on crops of ../shared/data/logo-boxes (+flickr)",
        description="Builds the leakage-free split (models/logo_detector/split.json, kept if present), "
        "cuts vehicle-sized crops into work/logo_detector/, fine-tunes ../shared/models/yolo11n.pt "
        "on one CPU thread, and with --install ships best.pt + OpenVINO export + metadata.",
    )
    t.add_argument("--name", default="logo320", help="run name under work/logo_detector/runs/")
    t.add_argument("--epochs", type=int, default=17)
    t.add_argument("--imgsz", type=int, default=None,
                   help="training (and runtime crop) input size (default 320; with --ship-only or --resume: the run's)")
    t.add_argument("--hours", type=float, default=None, help="wall-clock budget (overrides --epochs; LR schedule fits it)")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--weights", default=None, metavar="PT",
                   help="starting checkpoint (default ../shared/models/yolo11n.pt), e.g. models/logo_detector/best.pt")
    t.add_argument("--lr0", type=float, default=0.002, help="initial learning rate (AdamW, cosine)")
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared 2-core machine)")
    t.add_argument("--device", default=None,
                   help="cpu (default) or a CUDA device, e.g. 0 (mixed precision); with --resume: the run's own")
    t.add_argument("--workers", type=int, default=None,
                   help="data-loader processes (default 0: shares a 2-core machine; e.g. 8 with a GPU)")
    t.add_argument("--fraction", type=float, default=1.0, help="fraction of the training crops (timing runs)")
    t.add_argument("--resume", action="store_true", help="continue the run's last.pt")
    t.add_argument("--resplit", action="store_true", help="rebuild the committed split manifest")
    t.add_argument("--prepare-only", action="store_true", help="build the dataset and stop")
    t.add_argument("--synthetic", metavar="DIR", help="extra YOLO images/labels folder added to training")
    t.add_argument("--install", action="store_true", help="after training: ship to models/logo_detector/")
    t.add_argument("--ship-only", action="store_true", help="no training: ship the run's current best.pt")
    t.set_defaults(func=_cmd_train)

    e = subparsers.add_parser(
        "evaluate-logo-detector",
        help="precision / recall / mAP50 of the badge detector on the held-out split",
    )
    e.add_argument("--model", help="model (.pt, OpenVINO folder or .xml); default: models/logo_detector/")
    e.add_argument("--split", default="val,test", help="comma-separated splits (default val,test)")
    e.add_argument("--full-imgsz", type=int, default=640, help="input size on full photos (default 640)")
    e.add_argument("--imgsz", type=int, default=None, help="input size on vehicle crops (default: metadata)")
    e.add_argument("--conf", type=float, default=None, help="threshold (default: chosen on val crops)")
    e.add_argument("--folder", action="append", default=[], metavar="DIR",
                   help="also evaluate a YOLO images/ + labels/ folder (e.g. synthetic unseen brands), as crops")
    e.add_argument("--timing-images", type=int, default=60, help="test photos used for the timing (0: none)")
    e.add_argument("--out", help="write the JSON report here")
    e.add_argument("--painted-out", action="store_true",
                   help="also count detections where the test badges are painted out (badge-swap artefact check)")
    e.add_argument("--write-metadata", action="store_true", help="store the chosen threshold in metadata.json")
    e.set_defaults(func=_cmd_evaluate)

    d = subparsers.add_parser("detect-logos", help="find vehicle badges in images (vehicle crops or photos)")
    d.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    d.add_argument("--json", action="store_true", help="one JSON object per line per image")
    d.add_argument("--model", help="model (.pt, OpenVINO folder or .xml); default: models/logo_detector/")
    d.add_argument("--conf", type=float, default=None,
                   help="confidence threshold (default: metadata's photo_conf for --mode auto, whose passes are "
                        "fused into scores of their own scale; its conf otherwise)")
    d.add_argument(
        "--mode",
        choices=("auto", "crop", "full"),
        default="auto",
        help="auto (default): vehicle crops found by the COCO detector + whole-image passes (+ tiles of the "
        "crop size on photos over twice that), fused (a badge scores the mean of its two best passes); "
        "crop: the image is a vehicle crop (one pass at the crop size); full: one pass at 640",
    )
    d.add_argument("--imgsz", type=int, default=None, help="override the (whole-image) input size")
    d.set_defaults(func=_cmd_detect)
