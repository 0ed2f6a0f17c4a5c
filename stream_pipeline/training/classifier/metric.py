"""Metric-learning end-to-end stage (imports TensorFlow; call from CLI functions only).

The gallery compares badge embeddings. Taken from under the softmax, the pooled MobileNet
features are post-ReLU (all positive, cosine ~0.6 between any two badges), so a never-trained
brand lands close to look-alike trained brands and cannot be told apart by distance (issue 11:
34 % of real unseen-brand photos rejected). Here the backbone is trained end to end with a
second head beside the softmax: a 256-d projection of the pooled features, L2-normalised, and a
CosFace loss (cosine to a learned centre per brand, minus a margin for the true brand) that pulls
a brand's crops together and pushes brands apart by angle. `other` views train the softmax only
(or, `open_set`, are pushed to be equally far from every brand centre). With render identities,
each `other` catalogue brand of the training split gets a centre of its own too: the embedding
then learns to tell apart a few hundred logo shapes, not 47, which is what a brand it never saw
(rejection, enrolment) needs; the softmax still calls them all `other`.

The exported model has two outputs, softmax and embedding; the runtime (brands/classifier.py)
uses the embedding output when the IR has one.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

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


def centre_count(settings: dict, info: dict) -> int:
    """CosFace centres of a checkpoint from its settings (written before a run starts): the
    brands, plus one per `other` training catalogue brand with render identities. Settings
    written before the count was stored are derived from the dataset."""
    if "centres" in settings:
        return int(settings["centres"])
    extra = len(info["catalogue"]["other_train"]) if settings.get("render_identities") else 0
    return len(info["classes"]) + extra


def build_metric_model(n_labels: int, size: int, dim: int, weights: str | None = None, extra_identities: int = 0):
    """(training model: softmax + cosine-to-centre outputs, export model: softmax + embedding,
    the plain softmax model, the backbone); all share the same layers. The centres are the
    brands' plus `extra_identities` more (render identities)."""
    import keras

    full, _top, _lower, base, _tp, _head = train.build_mobilenet(n_labels, weights, size)
    inputs = keras.Input((size, size, 3), name="image")
    x = full.get_layer("to_unit")(inputs)
    pooled = full.get_layer("gap")(base(x, training=False))
    probs = full.get_layer("brand")(full.get_layer("head_dropout")(pooled))
    projection = keras.layers.Dense(dim, use_bias=False, name="embed_projection")
    emb = keras.layers.UnitNormalization(name="embedding")(projection(pooled))
    # brand centres, one unit column each; `other` has none (it is not one look)
    cos = keras.layers.Dense(n_labels - 1 + extra_identities, use_bias=False, kernel_constraint=keras.constraints.UnitNorm(axis=0),
                             name="cos")(emb)
    training_model = keras.Model(inputs, {"brand": probs, "cos": cos}, name="brand_metric_training")
    export_model = keras.Model(inputs, [probs, emb], name="brand_classifier")
    return training_model, export_model, full, base


def cosface_loss(n_brands: int, scale: float, margin: float, open_set: bool = False, n_centres: int | None = None):
    """CosFace: cross-entropy over scale * (cosine - margin on the true brand). Labels are one-hot
    over the `n_centres` identities (the brands first, then any render identities) + an `other`
    bit: a row of no identity contributes zero. With
    `open_set`, an `other` view (a logo of no class, a non-logo patch) gets the uniform target
    over the brands instead (entropic open-set loss): alike to every brand centre, so near none.
    Tried on the shipped data: it made validation `other` renders less uniform, not more (model card)."""
    import keras

    n_ids = n_centres or n_brands

    def loss(y_true, cos):
        y = y_true[:, :n_ids]
        target = y
        if open_set:  # an `other` view of no identity: uniform over the brands
            other = y_true[:, n_ids:n_ids + 1] * (1.0 - keras.ops.sum(y, axis=1, keepdims=True))
            uniform = keras.ops.concatenate([keras.ops.ones_like(y[:, :n_brands]) / n_brands,
                                             keras.ops.zeros_like(y[:, n_brands:])], axis=1)
            target = y + other * uniform
        return keras.losses.categorical_crossentropy(target, scale * (cos - margin * y), from_logits=True)

    return loss


def init_centres_from_views(model, export, batches, n_centres: int, steps: int = 80) -> int:
    """Each identity's centre set to the mean embedding of its views in `steps` training batches
    (the untouched random ones stay for identities not drawn). A random centre makes the CosFace
    loss huge, and its gradient wrecks the backbone in the first end-to-end steps; a trained
    projection's embeddings already cluster by brand. Returns how many centres were set."""
    sums = np.zeros((n_centres, export.outputs[1].shape[-1]), np.float64)
    counts = np.zeros(n_centres, np.int64)
    stream = batches()
    for _ in range(steps):
        x, _y, _w, ids = next(stream)
        emb = np.asarray(export.predict(x, verbose=0, batch_size=len(x))[1])
        keep = ids >= 0
        np.add.at(sums, ids[keep], emb[keep])
        np.add.at(counts, ids[keep], 1)
    layer = model.get_layer("cos")
    kernel = np.asarray(layer.get_weights()[0]).copy()  # (dim, n_centres)
    seen = counts > 0
    means = sums[seen] / np.linalg.norm(sums[seen], axis=1, keepdims=True)
    kernel[:, seen] = means.T
    layer.set_weights([kernel.astype(np.float32)])
    return int(seen.sum())


def _compile(model, n_brands: int, lr: float, metric_weight: float, scale: float, margin: float,
             open_set: bool = False, n_centres: int | None = None) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss={"brand": keras.losses.CategoricalCrossentropy(label_smoothing=0.05),
                        "cos": cosface_loss(n_brands, scale, margin, open_set, n_centres)},
                  loss_weights={"brand": 1.0, "cos": metric_weight},
                  metrics={"brand": ["accuracy"]})


def train_metric_end_to_end(shared: Path, init_from: Path | None, size: int = 160, dim: int = 256,
                            epochs: int = 100, steps_per_epoch: int = 50, warmup_epochs: int = 3,
                            budget_s: float | None = None, seed: int = 1337, threads: int = 2,
                            model_dir: Path = train.MODEL_DIR, lr: float = 1e-4, metric_weight: float = 0.5,
                            scale: float = 30.0, margin: float = 0.25, plateau_patience: int = 3,
                            open_set: bool = False, render_identities: float = 0.0) -> dict:
    """Warm-up: the new projection and centres alone on the frozen classifier (the centres alone
    when `init_from` is a metric classifier already: its projection is trained); then every
    convolution (BatchNorm frozen) with both losses. Resumes from its best checkpoint.
    `render_identities` > 0: every `other` training catalogue brand is an identity of its own,
    its renders drawn with that weight (TrainSampler)."""
    train.configure_tf(threads)
    import keras

    keras.utils.set_random_seed(seed)
    records, info = train.load_dataset_info(model_dir)
    labels = list(info["classes"]) + [OTHER_CLASS]
    n = len(labels)
    ckpt_dir = train.WORK_DIR / CKPT_SUBDIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    best, csv_log = checkpoint_files(ckpt_dir, size, dim)
    n_centres = centre_count({"render_identities": render_identities}, info)
    model, export, full, base = build_metric_model(n, size, dim, str(shared / train.MOBILENET_WEIGHTS),
                                                   n_centres - (n - 1))
    resuming = best.is_file()
    projection_trained = False
    if resuming:
        saved = settings_file(ckpt_dir, size, dim)
        saved_centres = centre_count(json.loads(saved.read_text()) if saved.is_file() else {}, info)
        if saved_centres != n_centres:
            raise UserError(f"the metric checkpoint {best} has {saved_centres} centres, this run {n_centres} "
                            "(another --metric-render-ids, or a rebuilt dataset): delete it to start afresh, "
                            "or resume with its settings")
        model.load_weights(best)
        log.info("resuming the metric stage from %s", best)
    elif init_from is not None:
        projection_trained = _load_metric_classifier(export, Path(init_from), labels)
        if not projection_trained:
            train._load_saved_classifier(full, Path(init_from), labels)
        log.info("metric stage at %d px starts from %s", size, init_from)
    else:
        raise UserError("--metric-dim needs --init-from MODEL.keras (a trained brand classifier) to start from")

    # written now, not at the end: a run stopped by hand is still shipped with its settings
    settings_file(ckpt_dir, size, dim).write_text(json.dumps(
        {"dim": dim, "scale": scale, "margin": margin, "metric_weight": metric_weight, "size": size,
         "open_set": open_set, "render_identities": render_identities, "centres": n_centres,
         "init_from": str(init_from) if init_from else None}))
    xv, yv = train.validation_views(shared, records, info, labels, size, seed)

    def cos_target(y1h, ids):
        """identity one-hot (brands, then render identities) + the `other` bit"""
        ident = np.zeros((len(y1h), n_centres), np.float32)
        if ids is None:
            ident[:, :n - 1] = y1h[:, :n - 1]
        else:
            rows = np.flatnonzero(ids >= 0)
            ident[rows, ids[rows]] = 1.0
        return np.concatenate([ident, y1h[:, n - 1:]], axis=1)

    # validation `other` renders are of other brands than the training identities: no identity
    validation = (xv, {"brand": yv, "cos": cos_target(yv, None)})

    def targets(y, ids):
        if ids is None:  # sample weights
            return {"brand": y, "cos": y}
        return {"brand": y, "cos": cos_target(y, ids)}

    hist: dict = {}
    t0 = time.time()
    views_seed = seed + 11 + train.epochs_logged(csv_log)
    frozen_in_warmup = {"brand", "head_dropout", "to_unit", "gap"} | ({"embed_projection"} if projection_trained else set())
    with train.BackgroundBatches(shared, model_dir, size, views_seed, render_identities=render_identities) as batches:
        if not resuming:
            log.info("centres set from the embeddings of training views: %d of %d",
                     init_centres_from_views(model, export, batches, n_centres), n_centres)
        if not resuming and warmup_epochs:
            base.trainable = False
            for layer in model.layers:
                if layer.name in frozen_in_warmup:
                    layer.trainable = False
            _compile(model, n - 1, 1e-3, metric_weight, scale, margin, open_set, n_centres)
            log.info("warm-up: projection and brand centres on the frozen classifier")
            train.fit_from_batches(model, batches, n, warmup_epochs, steps_per_epoch, validation, [],
                                   targets=targets)
        for layer in model.layers:
            layer.trainable = True
        train.unfreeze_convolutions(base)
        _compile(model, n - 1, lr, metric_weight, scale, margin, open_set, n_centres)
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
    settings = settings_file(ckpt_dir, size, dim)
    metric_settings = json.loads(settings.read_text()) if settings.is_file() else {"dim": dim}
    extra = centre_count(metric_settings, info) - (len(labels) - 1)
    model, export, full, _base = build_metric_model(len(labels), size, dim, extra_identities=extra)
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
    metadata["metric"] = metric_settings
    metadata["embedding_output"] = 1  # output index of the embedding (the runtime checks it)
    (model_dir / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return metadata
