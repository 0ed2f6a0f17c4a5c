"""Sub-commands of the brand classifier: import-brands, build-brand-dataset, train-classifier,
evaluate-classifier, classify, benchmark-classifier.

Heavy libraries (tensorflow, openvino) are imported inside the command functions.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from pathlib import Path

from stream_pipeline.core.errors import ModelError, UserError

log = logging.getLogger("stream_pipeline.classifier")


def _shared(args) -> Path:
    from stream_pipeline.core.paths import shared_dir

    return Path(args.shared).resolve() if getattr(args, "shared", None) else shared_dir()


def _model_dir(args) -> Path:
    from stream_pipeline.brands.classifier import DEFAULT_MODEL_DIR

    return Path(args.model_dir) if getattr(args, "model_dir", None) else DEFAULT_MODEL_DIR


def _cmd_import_brands(args) -> int:
    from stream_pipeline.training.classifier.dataset import NameMapper, validate_brand_folder

    folder = Path(args.folder)
    report_file = Path(args.report) if args.report else None
    if report_file is not None and report_file.is_dir():  # said before the scan, not after it
        raise UserError(f"--report {report_file} is a folder: name a file in it, e.g. {report_file / 'report.json'}")
    shared = None
    try:
        shared = _shared(args)
    except UserError:
        pass
    mapper = NameMapper.from_shared(shared) if shared is not None else None
    report = validate_brand_folder(folder, mapper, min_images=args.min_images)
    summary = report.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{folder}: {summary['usable_images']} usable images in {len(summary['brands'])} brands")
        for brand, n in summary["brands"].items():
            flag = "  (too few)" if brand in summary["brands_with_too_few_images"] else ""
            print(f"  {brand:<24} {n:5d}{flag}")
        for key in ("unmapped_folders", "unreadable", "tiny", "skipped_non_images"):
            if summary[key]:
                print(f"{key.replace('_', ' ')} ({len(summary[key])}): " + ", ".join(summary[key][:20]))
        print(f"exact duplicate sets: {len(summary['exact_duplicates'])}; near-duplicate groups: "
              f"{len(summary['near_duplicate_groups'])} "
              f"({sum(len(g) for g in summary['near_duplicate_groups'])} images); "
              f"groups spanning brands: {len(summary['cross_brand_duplicates'])}")
    if report_file is not None:
        try:  # its folder is created, as enroll creates --gallery's
            report_file.parent.mkdir(parents=True, exist_ok=True)
            report_file.write_text(json.dumps(summary, indent=2))
        except OSError as exc:
            reason = ("a file is in the way (not a folder)" if exc.errno in (errno.EEXIST, errno.ENOTDIR)
                      else exc.strerror or str(exc))
            raise UserError(f"cannot write --report {report_file}: {reason}") from None
    return 0 if not (summary["unreadable"] or summary["unmapped_folders"]) or not args.strict else 1


def _cmd_build_dataset(args) -> int:
    from stream_pipeline.training.classifier.dataset import build_brand_dataset, write_manifest

    out = _model_dir(args)
    records, info = build_brand_dataset(_shared(args), min_images=args.min_images, seed=args.seed)
    write_manifest(out / "split_manifest.csv", records)
    (out / "dataset.json").write_text(json.dumps(info, indent=1))
    print(f"{len(info['classes'])} classes, {len(records)} records, {info['groups']} groups "
          f"({info['near_duplicate_groups']} near-duplicate groups); unseen brands: {info['unseen_brands']}")
    print(f"manifest: {out / 'split_manifest.csv'}")
    return 0


def _cmd_train(args) -> int:
    from stream_pipeline.training.classifier import train

    shared = _shared(args)
    if args.metric_render_ids and not args.metric_dim:
        raise UserError("--metric-render-ids applies to the metric stage: add --metric-dim D")
    if args.metric_render_ids < 0:
        raise UserError(f"--metric-render-ids {args.metric_render_ids}: a sampling weight, 0 (off) or more")
    if args.metric_dim:
        from stream_pipeline.training.classifier import metric

        if args.arch != "mobilenet":
            raise UserError("--metric-dim applies to --arch mobilenet")
        if args.ship_only:
            metric.finalize_metric(shared, size=args.e2e_size, dim=args.metric_dim, threads=args.threads,
                                   model_dir=_model_dir(args), seed=args.seed)
        else:
            metric.train_metric_end_to_end(
                shared, Path(args.init_from) if args.init_from else None, size=args.e2e_size, dim=args.metric_dim,
                epochs=args.e2e_epochs, steps_per_epoch=args.e2e_steps, seed=args.seed, threads=args.threads,
                model_dir=_model_dir(args), lr=args.e2e_lr, plateau_patience=args.plateau_patience,
                budget_s=args.e2e_budget_min * 60 if args.e2e_budget_min else None, open_set=args.metric_open_set,
                margin=args.metric_margin, metric_weight=args.metric_weight,
                render_identities=args.metric_render_ids)
    elif args.ship_only:
        if args.arch != "mobilenet":
            raise UserError("--ship-only applies to --arch mobilenet")
        train.finalize(shared, size=args.e2e_size, threads=args.threads, model_dir=_model_dir(args), seed=args.seed)
    elif args.arch == "cnn":
        train.train_cnn(shared, epochs=args.epochs or 40, seed=args.seed, threads=args.threads,
                        resume=args.resume)
    else:
        budget = args.finetune_budget_min * 60 if args.finetune_budget_min else None
        train.train_mobilenet(shared, head_epochs=args.epochs or 40, finetune_epochs=args.finetune_epochs,
                              seed=args.seed, threads=args.threads, resume=args.resume,
                              model_dir=_model_dir(args), finetune_budget_s=budget,
                              steps_per_epoch=args.steps_per_epoch, e2e_epochs=args.e2e_epochs,
                              e2e_size=args.e2e_size, e2e_lr=args.e2e_lr, e2e_steps=args.e2e_steps,
                              init_from=Path(args.init_from) if args.init_from else None,
                              plateau_patience=args.plateau_patience,
                              e2e_budget_s=args.e2e_budget_min * 60 if args.e2e_budget_min else None)
    return 0


def _cmd_evaluate(args) -> int:
    from stream_pipeline.training.classifier import evaluate

    model_dir = _model_dir(args)
    report = evaluate.evaluate(_shared(args), arch=args.arch, model_dir=model_dir, threads=args.threads)
    print(json.dumps(report["summary"], indent=2))
    if (model_dir / "eval_report.json").is_file() and (model_dir / "metadata.json").is_file():
        from stream_pipeline.training.classifier.card import write_model_card

        print(f"model card: {write_model_card(model_dir)}")
    return 0


def _classify_gallery(args) -> Path | None:
    """--gallery FILE; else the model folder's gallery when it has one; --no-gallery: softmax only."""
    from stream_pipeline.brands.gallery import GALLERY_NAME

    if args.no_gallery:
        if args.gallery:
            raise UserError("--gallery and --no-gallery contradict each other: pass one")
        return None
    if args.gallery:
        if not Path(args.gallery).is_file():
            raise ModelError(f"brand gallery not found: {args.gallery}")  # exit 4, as run and gallery list
        return Path(args.gallery)
    default = _model_dir(args) / GALLERY_NAME
    return default if default.is_file() else None


def _cmd_build_gallery(args) -> int:
    from stream_pipeline.training.classifier.gallery import build_and_evaluate, write_gallery

    model_dir = _model_dir(args)
    gallery, report = build_and_evaluate(_shared(args), model_dir, seed=args.seed, per_brand=args.per_brand,
                                         threads=args.threads, top_k=args.top_k, scoring=args.scoring,
                                         use_negatives=not args.no_negatives)
    path = write_gallery(gallery, report, model_dir)
    print(json.dumps({k: report[k] for k in ("references", "threshold", "calibration", "unknown_rejection_crossfit",
                                             "enrolment", "non_badges", "softmax_test_top1")}, indent=1))
    print(f"gallery: {path}")
    return 0


def _cmd_classify(args) -> int:
    from stream_pipeline.brands.classifier import BrandClassifier
    from stream_pipeline.training.classifier.dataset import image_inputs, no_images_in, read_image

    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise UserError(f"--threshold must be a probability between 0 and 1, not {args.threshold}")
    inputs = image_inputs(args.images)  # a folder stands for its images, as for detect-logos and enroll
    if not inputs:
        raise UserError(f"no images given: {no_images_in(args.images)}")
    clf = BrandClassifier.load(_model_dir(args) if args.model_dir else None, threshold=args.threshold)
    gallery_file = _classify_gallery(args)
    if gallery_file is not None:
        from stream_pipeline.brands.gallery import Gallery

        clf.use_gallery(Gallery.load(gallery_file))
    if gallery_file is not None and args.threshold is not None:
        log.warning("--threshold applies to the softmax alone: with a gallery its similarity thresholds decide "
                    "(pass --no-gallery to use --threshold)")
    images, paths, unreadable = [], [], []
    for p in inputs:
        img = read_image(Path(p))  # None as well for a file it may not read, or a dangling link
        if img is None:
            unreadable.append(p)
            continue
        images.append(img)
        paths.append(p)
    if not paths:
        raise UserError(f"cannot read image {unreadable[0]}" if len(unreadable) == 1 else
                        f"none of the {len(unreadable)} images could be read (first: {unreadable[0]})")
    for p in unreadable:
        print(f"stream-pipeline: error: cannot read image {p}", file=sys.stderr)
    # an image file is judged as a whole photo (the gallery's whole-photo threshold): its width says
    # nothing of the badge's size, unlike a badge crop cut from a frame
    for path, pred in zip(paths, clf.classify(images, widths=[None] * len(images))):
        if args.json:
            print(json.dumps({"path": path, "brand": pred.brand, "confidence": round(pred.confidence, 4),
                              "top": [[s.brand, round(s.probability, 4)] for s in pred.top]}))
        else:
            tops = ", ".join(f"{s.brand} {s.probability:.2f}" for s in pred.top)
            print(f"{path}: {pred.brand} ({pred.confidence:.2f})  [{tops}]")
    return 2 if unreadable else 0  # as detect-logos: the readable ones are answered, the exit says some were not


def _cmd_benchmark(args) -> int:
    from stream_pipeline.training.classifier.evaluate import benchmark

    result = benchmark(_model_dir(args), batch=args.batch, seconds=args.seconds, threads=args.threads,
                       keras_too=args.keras)
    print(json.dumps(result, indent=2))
    if args.save:
        (_model_dir(args) / "benchmark.json").write_text(json.dumps(result, indent=2))
    return 0


def add_commands(subparsers) -> None:
    """Register sub-commands on the top-level argparse subparsers."""

    def common(p, model=True):
        p.add_argument("--shared", default=None, help="shared data folder (default: ../shared or $STREAM_PIPELINE_SHARED)")
        if model:
            p.add_argument("--model-dir", default=None, help="model folder (default: models/brand_classifier)")

    p = subparsers.add_parser("import-brands", help="validate a folder-per-brand image set and report what it holds")
    p.add_argument("folder", help="folder with one sub-folder of images per brand")
    p.add_argument("--min-images", type=int, default=20, help="flag brands with fewer usable images")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--report", default=None, help="also write the JSON report to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 if any file is unreadable or a folder unmapped")
    common(p, model=False)
    p.set_defaults(func=_cmd_import_brands)

    p = subparsers.add_parser("build-brand-dataset", help="build the de-duplicated 80/10/10 brand split manifest")
    p.add_argument("--min-images", type=int, default=12, help="duplicate-free images a brand needs to be a class")
    p.add_argument("--seed", type=int, default=1337)
    common(p)
    p.set_defaults(func=_cmd_build_dataset)

    p = subparsers.add_parser("train-classifier", help="train the brand classifier (MobileNetV2) or the original CNN")
    p.add_argument("--arch", choices=["mobilenet", "cnn"], default="mobilenet")
    p.add_argument("--epochs", type=int, default=None, help="max epochs (head stage for mobilenet; default 40)")
    p.add_argument("--finetune-epochs", type=int, default=20, help="max fine-tuning epochs (mobilenet; 0 skips)")
    p.add_argument("--steps-per-epoch", type=int, default=100, help="batches of 64 per fine-tuning epoch (mobilenet)")
    p.add_argument("--finetune-budget-min", type=float, default=None,
                   help="stop fine-tuning after this many minutes (best checkpoint is kept)")
    p.add_argument("--e2e-epochs", type=int, default=100,
                   help="max end-to-end epochs (mobilenet, 50 batches of 32 each; 0 skips)")
    p.add_argument("--e2e-lr", type=float, default=3e-4, help="Adam learning rate of the end-to-end stage")
    p.add_argument("--e2e-size", type=int, default=96, help="input size of the end-to-end stage and the shipped model")
    p.add_argument("--e2e-budget-min", type=float, default=None, help="stop the end-to-end stage after this many minutes")
    p.add_argument("--e2e-steps", type=int, default=50, help="batches of 32 per end-to-end epoch")
    p.add_argument("--plateau-patience", type=int, default=3,
                   help="end-to-end epochs without a better validation loss before the learning rate halves")
    p.add_argument("--init-from", default=None, metavar="MODEL.keras",
                   help="start the end-to-end stage from a saved classifier (e.g. the shipped one), skipping stages 1-2")
    p.add_argument("--metric-dim", type=int, default=0, metavar="D",
                   help="metric-learning end-to-end stage instead: a D-d CosFace embedding trained beside the "
                        "softmax, from --init-from (the gallery then compares that embedding)")
    p.add_argument("--metric-margin", type=float, default=0.25, help="with --metric-dim: CosFace cosine margin")
    p.add_argument("--metric-weight", type=float, default=0.5, help="with --metric-dim: CosFace loss weight (softmax: 1)")
    p.add_argument("--metric-open-set", action="store_true",
                   help="with --metric-dim: `other` views pushed equally far from every brand centre (entropic open-set loss)")
    p.add_argument("--metric-render-ids", type=float, default=0.0, metavar="W",
                   help="with --metric-dim: each `other` catalogue brand of the training split is an identity of its "
                        "own for the embedding (the softmax still says `other`), its renders drawn with weight W "
                        "(a class's renders: 40)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for TensorFlow")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--resume", action="store_true", help="reuse cached features / finished stages / checkpoints")
    p.add_argument("--ship-only", action="store_true",
                   help="no training: calibrate, save and export the best end-to-end checkpoint of --e2e-size")
    common(p)
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("evaluate-classifier", help="evaluate on the test split: metrics JSON, confusion matrix, curves")
    p.add_argument("--arch", choices=["mobilenet", "cnn"], default="mobilenet")
    p.add_argument("--threads", type=int, default=2)
    common(p)
    p.set_defaults(func=_cmd_evaluate)

    p = subparsers.add_parser("classify", help="name the brand of badge crop images")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="badge images, or folders of them")
    p.add_argument("--json", action="store_true", help="one JSON object per line per image")
    p.add_argument("--threshold", type=float, default=None,
                   help="softmax rejection threshold, without a gallery (default: model's calibrated one)")
    p.add_argument("--gallery", default=None, metavar="FILE",
                   help="decide by this brand gallery (default: the model folder's gallery.npz)")
    p.add_argument("--no-gallery", action="store_true", help="decide by the softmax alone")
    common(p)
    p.set_defaults(func=_cmd_classify)

    p = subparsers.add_parser("build-gallery", help="build and calibrate the brand gallery of a trained classifier")
    p.add_argument("--per-brand", type=int, default=None,
                   help="reference crops per trained brand (default: every training crop)")
    p.add_argument("--top-k", type=int, default=None, help="references averaged per brand score (default: chosen on val)")
    p.add_argument("--scoring", choices=["nearest", "prototype"], default=None,
                   help="a brand's score: its nearest references, or the mean of its references (default: chosen on val)")
    p.add_argument("--no-negatives", action="store_true",
                   help="no non-badge references (the logo detector's boxes that are not badges; they keep enrolled "
                        "brands from being given to lettering, lamps and blank crops)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1337)
    common(p)
    p.set_defaults(func=_cmd_build_gallery)

    p = subparsers.add_parser("benchmark-classifier", help="batched classification throughput (crops/s)")
    p.add_argument("--batch", type=int, default=32, help="crops per batch")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keras", action="store_true", help="also time the Keras model")
    p.add_argument("--save", action="store_true", help="write the result to <model-dir>/benchmark.json (model card)")
    common(p)
    p.set_defaults(func=_cmd_benchmark)
