"""Evaluation on the test split (metrics JSON, confusion matrix, training curves) and the
crops/s benchmark. The shipped OpenVINO path gives the reported numbers; the Keras model is
run alongside to measure agreement."""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np

from stream_pipeline.brands.classifier import OTHER_CLASS, BrandClassifier, decide
from stream_pipeline.core.errors import ModelError
from stream_pipeline.core.types import UNKNOWN_BRAND
from stream_pipeline.training.classifier.dataset import ORIGINAL_BRANDS, load_record_image

log = logging.getLogger("stream_pipeline.classifier")

UNKNOWN_RENDERS = 5  # synthetic badges per held-out catalogue brand
ORIGINAL_STUDY_ACCURACY = 0.83


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and micro/macro/weighted averages.

    Predictions outside `labels` (e.g. "unknown") count as errors (false negatives)."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    per_class = {}
    for c in labels:
        tp = int(np.sum((yt == c) & (yp == c)))
        fp = int(np.sum((yt != c) & (yp == c)))
        fn = int(np.sum((yt == c) & (yp != c)))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        per_class[c] = {"precision": p, "recall": r, "f1": f, "support": int(np.sum(yt == c))}
    present = [c for c in labels if per_class[c]["support"] > 0]
    sup = np.array([per_class[c]["support"] for c in present], np.float64)
    tp_all = int(np.sum((yt == yp) & np.isin(yt, labels)))
    fp_all = int(np.sum((yt != yp) & np.isin(yp, labels)))
    fn_all = int(np.sum((yt != yp) & np.isin(yt, labels)))
    micro_p = tp_all / (tp_all + fp_all) if tp_all + fp_all else 0.0
    micro_r = tp_all / (tp_all + fn_all) if tp_all + fn_all else 0.0
    out = {
        "n": int(len(yt)),
        "accuracy": float(np.mean(yt == yp)) if len(yt) else 0.0,
        "per_class": per_class,
        "micro": {"precision": micro_p, "recall": micro_r,
                  "f1": 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0},
    }
    for avg, w in (("macro", np.ones_like(sup)), ("weighted", sup)):
        w = w / w.sum() if w.sum() else w
        out[avg] = {k: float(sum(wi * per_class[c][k] for wi, c in zip(w, present)))
                    for k in ("precision", "recall", "f1")}
    return out


def confusion(y_true: list[str], y_pred: list[str], rows: list[str], cols: list[str]) -> np.ndarray:
    ri, ci = {c: i for i, c in enumerate(rows)}, {c: i for i, c in enumerate(cols)}
    cm = np.zeros((len(rows), len(cols)), np.int64)
    for t, p in zip(y_true, y_pred):
        if t in ri and p in ci:
            cm[ri[t], ci[p]] += 1
    return cm


def plot_confusion(cm: np.ndarray, rows: list[str], cols: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(6, 0.28 * len(cols) + 3)
    fig, ax = plt.subplots(figsize=(size, size * len(rows) / len(cols) + 0.8))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=5,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(history: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        if key in history:
            ax.plot(epochs, history[key], label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label=f"val {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    stages = history.get("stage")
    if stages:
        for i in range(1, len(stages)):
            if stages[i] != stages[i - 1]:
                for ax in axes:
                    ax.axvline(i + 0.5, color="grey", ls="--")
                    ax.text(i + 0.6, ax.get_ylim()[1], stages[i], va="top", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _summary_block(metrics: dict) -> dict:
    return {"n": metrics["n"], "accuracy": round(metrics["accuracy"], 4),
            "macro_f1": round(metrics["macro"]["f1"], 4), "weighted_f1": round(metrics["weighted"]["f1"], 4)}


def evaluate(shared: Path, arch: str = "mobilenet", model_dir: Path | None = None, threads: int = 2) -> dict:
    from stream_pipeline.training.classifier import train

    model_dir = Path(model_dir) if model_dir else train.MODEL_DIR
    if arch == "cnn":
        return evaluate_cnn(shared, model_dir, threads)
    records, info = train.load_dataset_info(model_dir)
    clf = BrandClassifier.load(model_dir, num_threads=threads)
    labels = clf.metadata["labels"]
    classes = info["classes"]
    test = [r for r in records if r.split == "test" and r.brand in classes]
    t0 = time.time()
    crops = [load_record_image(shared, r) for r in test]
    probs = clf.predict_proba(crops)
    preds = decide(probs, labels, clf.threshold, other_threshold=clf.other_threshold)
    closed = [p.top[0].brand for p in preds]  # best brand class, no rejection
    opened = [p.brand for p in preds]  # what the runtime outputs (may be "unknown")
    truth = [r.brand for r in test]

    # Keras agreement on the same crops.
    agreement = None
    keras_file = model_dir / "brand_classifier.keras"
    if keras_file.is_file():
        train.configure_tf(threads)
        import keras

        from stream_pipeline.brands.classifier import preprocess_crops

        kmodel = keras.models.load_model(keras_file, compile=False)
        kprobs = kmodel.predict(preprocess_crops(crops, clf.input_size), batch_size=64, verbose=0)
        if isinstance(kprobs, (list, tuple)):  # a metric-trained model: (softmax, embedding)
            kprobs = kprobs[0]
        agreement = {"top1_agreement": float(np.mean(kprobs.argmax(1) == probs.argmax(1))),
                     "max_abs_prob_diff": float(np.abs(kprobs - probs).max()),
                     "decision_agreement": float(np.mean(
                         [a.brand == b.brand for a, b in zip(decide(kprobs, labels, clf.threshold, other_threshold=clf.other_threshold), preds)]))}

    # The runtime decision: by the gallery when the model folder has one.
    from stream_pipeline.brands.gallery import GALLERY_NAME, Gallery
    from stream_pipeline.training.classifier.gallery import SIZE_BUCKETS, badge_px

    gallery_file = model_dir / GALLERY_NAME
    by_gallery = None
    if gallery_file.is_file():
        gallery = Gallery.load(gallery_file)
        clf.use_gallery(gallery)  # checks it was embedded by this model
        # the unknown-brand figures below stay the softmax's: the shipped gallery has the held-out
        # brands enrolled; its own rejection is cross-fitted in gallery_report.json
        # the runtime decision (gallery + softmax); badge crops are judged by their width band as
        # in the pipeline, whole photos by the whole-photo threshold as `classify` does
        gp = clf.classify(crops, widths=[c.shape[1] if r.box is not None else None for r, c in zip(test, crops)])
        clf.gallery = None
        by_gallery = {"nearest": [p.top[0].brand for p in gp], "decided": [p.brand for p in gp]}

    def breakdown(pred_closed, pred_open):
        def block(idx):
            idx = list(idx)
            t = [truth[i] for i in idx]
            return {"n": len(idx),
                    "top1": round(float(np.mean([truth[i] == pred_closed[i] for i in idx])), 4) if idx else None,
                    "with_rejection": round(float(np.mean([truth[i] == pred_open[i] for i in idx])), 4) if idx else None,
                    "rejected": round(float(np.mean([pred_open[i] == UNKNOWN_BRAND for i in idx])), 4) if t else None}

        out = {"all": block(range(len(test))),
               "original_10": block(i for i, r in enumerate(test) if r.brand in ORIGINAL_BRANDS)}
        out["by_domain"] = {d: block(i for i, r in enumerate(test) if r.domain == d) for d in ("street", "closeup", "web")}
        out["street_by_badge_px"] = {
            name: block(i for i, r in enumerate(test) if r.domain == "street" and lo <= (badge_px(r) or 0) < hi)
            for lo, hi, name in SIZE_BUCKETS}
        out["street_under_24px"] = block(i for i, r in enumerate(test) if r.domain == "street"
                                         and (badge_px(r) or 0) < 24)
        out["street_original_10"] = block(i for i, r in enumerate(test) if r.domain == "street"
                                          and r.brand in ORIGINAL_BRANDS)
        return out

    closed_m = classification_metrics(truth, closed, classes)
    open_m = classification_metrics(truth, opened, classes)
    orig = [i for i, r in enumerate(test) if r.brand in ORIGINAL_BRANDS]
    orig_seed = [i for i in orig if test[i].source == "logos-seed"]
    street = [i for i, r in enumerate(test) if r.domain == "street"]

    def sub(idx, which):
        return classification_metrics([truth[i] for i in idx], [which[i] for i in idx], classes)

    known_rejected = float(np.mean([b == UNKNOWN_BRAND for b in opened]))

    # Unknown brands never seen in training: held-out catalogue brands rendered as road badges,
    # photos of brands with too few images (unseen split), and non-logo street patches.
    unk_imgs, unk_brands = train.render_catalogue_brands(shared, records, info["catalogue"]["unknown_test"], "test",
                                                         UNKNOWN_RENDERS, clf.input_size, np.random.default_rng(7))
    unseen = [r for r in records if r.split == "unseen"]
    unseen_imgs = [load_record_image(shared, r) for r in unseen]
    bg = [r for r in records if r.split == "test" and r.brand == OTHER_CLASS]
    bg_imgs = [load_record_image(shared, r) for r in bg]
    unk_pred = clf.classify(unk_imgs)
    unseen_pred = clf.classify(unseen_imgs)
    bg_pred = clf.classify(bg_imgs)

    def rej(preds_):
        return float(np.mean([p.brand == UNKNOWN_BRAND for p in preds_])) if preds_ else None

    all_unknown = unk_pred + unseen_pred
    wrongly_named = {}
    for p, slug in zip(unk_pred, unk_brands):
        if p.brand != UNKNOWN_BRAND:
            wrongly_named[slug] = wrongly_named.get(slug, 0) + 1
    seconds = time.time() - t0

    summary = {
        "classes": len(classes),
        "test_images_known": len(test),
        "decision": "gallery" if by_gallery else "softmax",
        "softmax_breakdown": breakdown(closed, opened),
        "gallery_breakdown": breakdown(by_gallery["nearest"], by_gallery["decided"]) if by_gallery else None,
        "closed_set_top1": {"all": _summary_block(closed_m), "original_10": _summary_block(sub(orig, closed)),
                            "original_10_seed_photos_only": _summary_block(sub(orig_seed, closed)),
                            "street_crops": _summary_block(sub(street, closed))},
        "with_rejection": {"all": _summary_block(open_m), "original_10": _summary_block(sub(orig, opened)),
                           "street_crops": _summary_block(sub(street, opened))},
        "known_rejected_rate": round(known_rejected, 4),
        "unknown_rejection": {
            "held_out_catalogue_brands": {"brands": len(set(unk_brands)), "images": len(unk_pred),
                                          "rejected": round(rej(unk_pred), 4)},
            "unseen_brand_photos": {"brands": sorted({r.brand for r in unseen}), "images": len(unseen_pred),
                                    "rejected": round(rej(unseen_pred), 4) if unseen_pred else None},
            "all_unknown_brand_images": {"images": len(all_unknown), "rejected": round(rej(all_unknown), 4)},
            "non_logo_street_patches": {"images": len(bg_pred), "rejected": round(rej(bg_pred), 4)},
        },
        "threshold": clf.threshold,
        "other_threshold": clf.other_threshold,
        "openvino_vs_keras": agreement,
        "original_study_accuracy": ORIGINAL_STUDY_ACCURACY,
        "seconds": round(seconds, 1),
    }
    report = {
        "summary": summary,
        "closed_set": closed_m,
        "with_rejection": open_m,
        "original_10_closed_set": sub(orig, closed),
        "street_crops_closed_set": sub(street, closed),
        "unknown_brands_most_often_named": dict(sorted(wrongly_named.items(), key=lambda kv: -kv[1])[:15]),
        "errors": [{"path": test[i].key, "true": truth[i], "pred": opened[i], "top": closed[i],
                    "confidence": round(preds[i].confidence, 3)}
                   for i in range(len(test)) if opened[i] != truth[i]],
    }
    (model_dir / "eval_report.json").write_text(json.dumps(report, indent=1))
    cols = classes + [UNKNOWN_BRAND]
    plot_confusion(confusion(truth, opened, classes, cols), classes, cols, model_dir / "confusion_matrix.png",
                   f"brand classifier, test split (n={len(test)}), with rejection")
    hist_file = model_dir / "training_history.json"
    if hist_file.is_file():
        plot_curves(json.loads(hist_file.read_text()), model_dir / "training_curves.png",
                    "MobileNetV2 brand classifier (head stage, then fine-tuning)")
    return report


def _read_csv_history(path: Path) -> dict:
    hist: dict[str, list] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                if k != "epoch":
                    hist.setdefault(k, []).append(float(v))
    return hist


def evaluate_cnn(shared: Path, model_dir: Path, threads: int = 2) -> dict:
    from stream_pipeline.training.classifier import train

    train.configure_tf(threads)
    import keras

    records, _info = train.load_dataset_info(model_dir)
    ckpt = train.WORK_DIR / "cnn" / "best.keras"
    if not ckpt.is_file():
        raise ModelError(f"original CNN checkpoint missing: {ckpt} (run `stream-pipeline train-classifier --arch cnn`)")
    model = keras.models.load_model(ckpt, compile=False)
    labels = list(ORIGINAL_BRANDS)
    test = train.cnn_records(records)["test"]
    x = train.load_crops(shared, test, train.CNN_SIZE).astype(np.float32)
    probs = model.predict(x, batch_size=64, verbose=0)
    pred = [labels[i] for i in probs.argmax(1)]
    truth = [r.brand for r in test]
    m = classification_metrics(truth, pred, labels)
    out = model_dir / "original_cnn"
    out.mkdir(parents=True, exist_ok=True)
    hist = _read_csv_history(train.WORK_DIR / "cnn" / "log.csv") if (train.WORK_DIR / "cnn" / "log.csv").is_file() else {}
    summary = {"model": "original 4-layer CNN (conv 32/64/96/128, dense 512, dropout 0.5, Adam 3e-4), 150x150",
               "test_images": len(test), "accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro"]["f1"], 4),
               "epochs_trained": len(hist.get("loss", [])),
               "best_val_loss": round(min(hist["val_loss"]), 4) if hist.get("val_loss") else None,
               "original_study_accuracy": ORIGINAL_STUDY_ACCURACY,
               "split": "leakage-free: logos-seed images of split_manifest.csv (near-duplicates grouped)"}
    report = {"summary": summary, "metrics": m}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plot_confusion(confusion(truth, pred, labels, labels), labels, labels, out / "confusion_matrix.png",
                   f"original CNN, seed test split (n={len(test)})")
    if hist:
        plot_curves(hist, out / "training_curves.png", "original CNN (10 seed brands)")
    return report


def benchmark(model_dir: Path | None, batch: int = 32, seconds: float = 10.0, threads: int = 2,
              keras_too: bool = False) -> dict:
    """crops/s of BrandClassifier.classify on batches of badge-sized crops (preprocessing included)."""
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, size=(int(rng.integers(16, 96)), int(rng.integers(16, 96)), 3), dtype=np.uint8)
             for _ in range(batch)]
    clf = BrandClassifier.load(model_dir, num_threads=threads, batch_size=batch)
    clf.classify(crops)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        clf.classify(crops)
        n += len(crops)
    rate = n / (time.perf_counter() - t0)
    t1 = time.perf_counter()
    for c in crops[:16]:
        clf.classify([c])
    single_ms = (time.perf_counter() - t1) / 16 * 1000
    result = {"engine": "openvino", "threads": threads, "batch": batch, "crops_per_s": round(rate, 1),
              "single_crop_latency_ms": round(single_ms, 2), "input_size": clf.input_size}
    if keras_too:
        from stream_pipeline.brands.classifier import preprocess_crops
        from stream_pipeline.training.classifier import train

        train.configure_tf(threads)
        import keras

        kmodel = keras.models.load_model(Path(clf.model_dir) / "brand_classifier.keras", compile=False)
        x = preprocess_crops(crops, clf.input_size)
        kmodel.predict_on_batch(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            kmodel.predict_on_batch(preprocess_crops(crops, clf.input_size))
            n += len(crops)
        result["keras_crops_per_s"] = round(n / (time.perf_counter() - t0), 1)
    return result
