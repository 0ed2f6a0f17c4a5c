"""Metric-learning end-to-end stage (imports TensorFlow; call from CLI functions only).

The gallery compares badge embeddings. Taken from under the softmax, the pooled MobileNet
features are post-ReLU (all positive, cosine ~0.6 between any two badges), so a never-trained
brand lands close to look-alike trained brands and cannot be told apart by distance (issue 11:
34 % of real unseen-brand photos rejected). Here the backbone is trained end to end with a
second head beside the softmax: a 256-d projection of the pooled features, L2-normalised, and a
CosFace loss (cosine to a learned centre per brand, minus a margin for the true brand) that pulls
a brand's crops together and pushes brands apart by angle. `other` views train the softmax only
(or, `open_set`, are pushed to be equally far from every brand centre).

The exported model has two outputs, softmax and embedding; the runtime (brands/classifier.py)
uses the embedding output when the IR has one.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from stream_pipeline.brands.classifier import OTHER_CLASS
from stream_pipeline.core.errors import UserError
from stream_pipeline.training.classifier import train

log = logging.getLogger("stream_pipeline.classifier")

CKPT_SUBDIR = "metric"


def checkpoint_files(ckpt_dir: Path, size: int, dim: int) -> tuple[Path, Path]:
    """(best weights, CSV log) of the metric stage at this input size and embedding size."""
    return ckpt_dir / f"e2e{size}_d{dim}_best.weights.h5", ckpt_dir / f"e2e{size}_d{dim}_log.csv"


def settings_file(ckpt_dir: Path, size: int, dim: int) -> Path:
    return ckpt_dir / f"e2e{size}_d{dim}_settings.json"


def _load_metric_classifier(export, path: Path, labels: list[str]) -> bool:
    """Copy a saved metric-trained classifier (softmax + embedding, same labels and embedding
    size) into `export` whole, projection included; False when it is not one."""
    import keras

    if not path.is_file():
        raise UserError(f"--init-from: no such model file: {path}")
    saved = keras.saving.load_model(str(path), compile=False)
    meta = path.parent / "metadata.json"
    saved_labels = json.loads(meta.read_text()).get("labels") if meta.is_file() else None
    old, new = saved.get_weights(), export.get_weights()
    if len(saved.outputs) != 2 or saved_labels != labels or [a.shape for a in old] != [b.shape for b in new]:
        return False
    export.set_weights(old)
    return True


def build_metric_model(n_labels: int, size: int, dim: int, weights: str | None = None):
    """(training model: softmax + cosine-to-centre outputs, export model: softmax + embedding,
    the plain softmax model, the backbone); all share the same layers."""
    import keras

    full, _top, _lower, base, _tp, _head = train.build_mobilenet(n_labels, weights, size)
    inputs = keras.Input((size, size, 3), name="image")
    x = full.get_layer("to_unit")(inputs)
    pooled = full.get_layer("gap")(base(x, training=False))
    probs = full.get_layer("brand")(full.get_layer("head_dropout")(pooled))
    projection = keras.layers.Dense(dim, use_bias=False, name="embed_projection")
    emb = keras.layers.UnitNormalization(name="embedding")(projection(pooled))
    # brand centres, one unit column each; `other` has none (it is not one look)
    cos = keras.layers.Dense(n_labels - 1, use_bias=False, kernel_constraint=keras.constraints.UnitNorm(axis=0),
                             name="cos")(emb)
    training_model = keras.Model(inputs, {"brand": probs, "cos": cos}, name="brand_metric_training")
    export_model = keras.Model(inputs, [probs, emb], name="brand_classifier")
    return training_model, export_model, full, base


def cosface_loss(n_brands: int, scale: float, margin: float, open_set: bool = False):
    """CosFace: cross-entropy over scale * (cosine - margin on the true brand). Labels are one-hot
    over brands + `other`: an `other` row has no brand bit, so it contributes zero. With
    `open_set`, an `other` view (a logo of no class, a non-logo patch) gets the uniform target
    over the brands instead (entropic open-set loss): alike to every brand centre, so near none.
    Tried on the shipped data: it made validation `other` renders less uniform, not more (model card)."""
    import keras

    def loss(y_true, cos):
        y = y_true[:, :n_brands]
        target = y + y_true[:, n_brands:n_brands + 1] / n_brands if open_set else y
        return keras.losses.categorical_crossentropy(target, scale * (cos - margin * y), from_logits=True)

    return loss


def _compile(model, n_brands: int, lr: float, metric_weight: float, scale: float, margin: float,
             open_set: bool = False) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss={"brand": keras.losses.CategoricalCrossentropy(label_smoothing=0.05),
                        "cos": cosface_loss(n_brands, scale, margin, open_set)},
                  loss_weights={"brand": 1.0, "cos": metric_weight},
                  metrics={"brand": ["accuracy"]})


def train_metric_end_to_end(shared: Path, init_from: Path | None, size: int = 160, dim: int = 256,
                            epochs: int = 100, steps_per_epoch: int = 50, warmup_epochs: int = 3,
                            budget_s: float | None = None, seed: int = 1337, threads: int = 2,
                            model_dir: Path = train.MODEL_DIR, lr: float = 1e-4, metric_weight: float = 0.5,
                            scale: float = 30.0, margin: float = 0.25, plateau_patience: int = 3,
                            open_set: bool = False) -> dict:
    """Warm-up: the new projection and centres alone on the frozen classifier; then every
    convolution (BatchNorm frozen) with both losses. Resumes from its best checkpoint."""
    train.configure_tf(threads)
    import keras

    keras.utils.set_random_seed(seed)
    records, info = train.load_dataset_info(model_dir)
    labels = list(info["classes"]) + [OTHER_CLASS]
    n = len(labels)
    ckpt_dir = train.WORK_DIR / CKPT_SUBDIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    best, csv_log = checkpoint_files(ckpt_dir, size, dim)
    model, export, full, base = build_metric_model(n, size, dim, str(shared / train.MOBILENET_WEIGHTS))
    resuming = best.is_file()
    if resuming:
        model.load_weights(best)
        log.info("resuming the metric stage from %s", best)
    elif init_from is not None:
        if not _load_metric_classifier(export, Path(init_from), labels):
            train._load_saved_classifier(full, Path(init_from), labels)
        log.info("metric stage at %d px starts from %s", size, init_from)
    else:
        raise UserError("--metric-dim needs --init-from MODEL.keras (a trained brand classifier) to start from")

    # written now, not at the end: a run stopped by hand is still shipped with its settings
    settings_file(ckpt_dir, size, dim).write_text(json.dumps(
        {"dim": dim, "scale": scale, "margin": margin, "metric_weight": metric_weight, "size": size,
         "open_set": open_set, "init_from": str(init_from) if init_from else None}))
    xv, yv = train.validation_views(shared, records, info, labels, size, seed)
    validation = (xv, {"brand": yv, "cos": yv})

    def targets(y1h):
        return {"brand": y1h, "cos": y1h}

    hist: dict = {}
    t0 = time.time()
    views_seed = seed + 11 + train.epochs_logged(csv_log)
    with train.BackgroundBatches(shared, model_dir, size, views_seed) as batches:
        if not resuming and warmup_epochs:
            base.trainable = False
            for layer in model.layers:
                if layer.name in ("brand", "head_dropout", "to_unit", "gap"):
                    layer.trainable = False
            _compile(model, n - 1, 1e-3, metric_weight, scale, margin, open_set)
            log.info("warm-up: projection and brand centres on the frozen classifier")
            train.fit_from_batches(model, batches, n, warmup_epochs, steps_per_epoch, validation, [],
                                   targets=targets)
        for layer in model.layers:
            layer.trainable = True
        train.unfreeze_convolutions(base)
        _compile(model, n - 1, lr, metric_weight, scale, margin, open_set)
        if not best.is_file():
            model.save_weights(str(best))
        start = model.evaluate(xv, validation[1], verbose=0, batch_size=64, return_dict=True)
        log.info("metric stage start: %s", start)
        cbs = [keras.callbacks.ModelCheckpoint(str(best), monitor="val_loss", save_best_only=True,
                                               save_weights_only=True, initial_value_threshold=float(start["loss"])),
               keras.callbacks.EarlyStopping(monitor="val_loss", patience=10),
               keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=plateau_patience),
               keras.callbacks.CSVLogger(str(csv_log), append=True),
               train.TimeBudget.make(budget_s)]
        hist = train.fit_from_batches(model, batches, n, epochs, steps_per_epoch, validation, cbs, targets=targets)
    hist["seconds"] = time.time() - t0
    (ckpt_dir / f"e2e{size}_d{dim}_done.json").write_text(json.dumps(hist))
    return finalize_metric(shared, size=size, dim=dim, threads=threads, model_dir=model_dir, seed=seed)


def finalize_metric(shared: Path, size: int = 160, dim: int = 256, threads: int = 2,
                    model_dir: Path = train.MODEL_DIR, seed: int = 1337) -> dict:
    """Best metric checkpoint -> rejection thresholds on the softmax, then the two-output model
    saved (.keras) and exported (OpenVINO IR), metadata naming the embedding."""
    train.configure_tf(threads)
    import csv

    records, info = train.load_dataset_info(model_dir)
    labels = list(info["classes"]) + [OTHER_CLASS]
    ckpt_dir = train.WORK_DIR / CKPT_SUBDIR
    best, log_file = checkpoint_files(ckpt_dir, size, dim)
    if not best.is_file():
        raise UserError(f"no metric checkpoint at {size} px: {best} (train first, or pass the right --e2e-size)")
    model, export, full, _base = build_metric_model(len(labels), size, dim)
    model.load_weights(best)
    history: dict[str, list] = {}
    if log_file.is_file():
        with open(log_file, newline="") as fh:
            for row in csv.DictReader(fh):
                # the softmax's own loss, comparable with the earlier stages' curves
                for key, col in (("loss", "brand_loss"), ("accuracy", "brand_accuracy"),
                                 ("val_loss", "val_brand_loss"), ("val_accuracy", "val_brand_accuracy")):
                    if col in row:
                        history.setdefault(key, []).append(float(row[col]))
                history.setdefault("stage", []).append(f"metric {size}px")
    metadata = train.calibrate_and_save(full, shared, records, info, labels, size, seed, history, model_dir,
                                        export_model=export)
    metadata["architecture"] = (f"MobileNetV2 1.0 (ImageNet) + GAP + dropout 0.3 + dense softmax; embedding: "
                                f"{dim}-d projection of the pooled features, L2-normalised (CosFace-trained)")
    settings = settings_file(ckpt_dir, size, dim)
    metadata["metric"] = json.loads(settings.read_text()) if settings.is_file() else {"dim": dim}
    metadata["embedding_output"] = 1  # output index of the embedding (the runtime checks it)
    (model_dir / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return metadata
