"""Training of the brand classifiers (imports TensorFlow; call from CLI functions only).

Main model (`--arch mobilenet`): ImageNet MobileNetV2.
  1. Cache (128 px): K road-footage augmentations of every training image (more for the few
     street crops and rare brands), catalogue-logo renders of every class, and an `other` class
     (catalogue logos of brands outside the classes + non-logo street patches), passed once
     through the frozen lower network (up to block_12) and stored.
  2. Head stage: new softmax head trained on the frozen network (pooled features computed once).
  3. Optional upper fine-tune on the cache: blocks 13-16 + Conv_1 (BatchNorm frozen), Adam 1e-4.
  4. End-to-end stage at the shipped input size (96 px): every convolution trainable (BatchNorm
     frozen), Adam 1e-4, fresh augmentation on the fly. Every stage keeps the best
     validation-loss checkpoint and stops early (or on a time budget).
  5. Threshold calibrated on the validation split (<= 4 % of known images rejected), Keras model
     saved, converted to OpenVINO IR (fp32 weights), metadata written.

Original CNN (`--arch cnn`): the study's 4-layer CNN, 150x150, 10 seed brands.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from stream_pipeline.brands.classifier import OTHER_CLASS, preprocess_crops, rejected
from stream_pipeline.core.errors import UserError
from stream_pipeline.core.paths import PROJECT_ROOT
from stream_pipeline.training.classifier.dataset import (
    ORIGINAL_BRANDS,
    Record,
    load_catalogue,
    load_record_image,
    read_image,
    read_manifest,
)

log = logging.getLogger("stream_pipeline.classifier")

WORK_DIR = PROJECT_ROOT / "work" / "classifier"
MODEL_DIR = PROJECT_ROOT / "models" / "brand_classifier"
MOBILENET_WEIGHTS = "models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
INPUT_SIZE = 128
CNN_SIZE = 150
FEATURE_LAYER = "block_12_add"
TARGET_PER_CLASS = 650  # augmented training views per class in the cache (approx.)
CATALOGUE_RENDERS = 40  # synthetic badges per class from its catalogue logo
OTHER_RENDERS = 6  # per catalogue brand used for the `other` class
MAX_KNOWN_REJECTION = 0.04  # threshold calibration target on validation (test target: <= 5 %)


def configure_tf(threads: int = 1):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import cv2
    import tensorflow as tf

    # OpenCV's own thread pool fights TensorFlow's for the same cores (half the CPU went to
    # spinning in kernel time): augmentation runs one image at a time anyway
    cv2.setNumThreads(1)

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass
    return tf


def load_dataset_info(model_dir: Path = MODEL_DIR) -> tuple[list[Record], dict]:
    records = read_manifest(model_dir / "split_manifest.csv")
    info_file = model_dir / "dataset.json"
    if not info_file.is_file():
        raise UserError(f"{info_file} missing (run `stream-pipeline build-brand-dataset`)")
    return records, json.loads(info_file.read_text())


def load_crops(shared: Path, records: list[Record], size: int) -> np.ndarray:
    """Deterministic model input (no augmentation) for records, uint8 RGB (N, size, size, 3)."""
    out = np.empty((len(records), size, size, 3), np.uint8)
    for i, rec in enumerate(records):
        out[i] = preprocess_crops([load_record_image(shared, rec)], size)[0].astype(np.uint8)
    return out


# ----------------------------------------------------------------------------- MobileNetV2 model

def build_mobilenet(num_classes: int, weights: str | None, size: int = INPUT_SIZE):
    """Full model (RGB 0-255 in, softmax out) and the same layers as a model on FEATURE_LAYER output."""
    import keras

    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=weights)
    base.trainable = False
    pool = keras.layers.GlobalAveragePooling2D(name="gap")
    drop = keras.layers.Dropout(0.3, name="head_dropout")
    dense = keras.layers.Dense(num_classes, activation="softmax", name="brand")

    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_unit")(inputs)
    x = base(x, training=False)
    full = keras.Model(inputs, dense(drop(pool(x))), name="brand_classifier")

    feat_shape = base.get_layer(FEATURE_LAYER).output.shape[1:]
    f_in = keras.Input(feat_shape, name="features")
    h = f_in
    L = base.get_layer
    for b in (13, 14, 15, 16):
        block_in = h
        names = [f"block_{b}_expand", f"block_{b}_expand_BN", f"block_{b}_expand_relu"]
        names += [f"block_{b}_pad"] if b == 13 else []
        names += [f"block_{b}_depthwise", f"block_{b}_depthwise_BN", f"block_{b}_depthwise_relu",
                  f"block_{b}_project", f"block_{b}_project_BN"]
        for n in names:
            h = L(n)(h)
        if b in (14, 15):
            h = L(f"block_{b}_add")([block_in, h])
    for n in ("Conv_1", "Conv_1_bn", "out_relu"):
        h = L(n)(h)
    pooled = pool(h)
    top = keras.Model(f_in, dense(drop(pooled)), name="brand_top")
    top_pooled = keras.Model(f_in, pooled, name="brand_top_pooled")
    p_in = keras.Input((pooled.shape[-1],), name="pooled")
    head = keras.Model(p_in, dense(drop(p_in)), name="brand_head")

    lower_in = keras.Input((size, size, 3))
    lower_base = keras.Model(base.inputs, base.get_layer(FEATURE_LAYER).output)
    lower = keras.Model(lower_in, lower_base(keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(lower_in)))
    return full, top, lower, base, top_pooled, head


def set_upper_trainable(base, trainable: bool) -> None:
    import keras

    upper = False
    for layer in base.layers:
        if layer.name.startswith("block_13"):
            upper = True
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = bool(trainable and upper and not is_bn)
    base.trainable = True  # container on; per-layer flags decide


# ----------------------------------------------------------------------------- feature cache

def _street_backgrounds(shared: Path, records: list[Record], rng: np.random.Generator, n: int = 300,
                        split: str = "train"):
    photos = sorted({r.path for r in records if r.source == "logo-boxes" and r.split == split})
    out = []
    for path in rng.choice(photos, size=min(n, len(photos)), replace=False):
        img = read_image(shared / path)
        s = int(rng.integers(48, 200))
        x, y = int(rng.integers(0, img.shape[1] - s)), int(rng.integers(0, img.shape[0] - s))
        out.append(img[y:y + s, x:x + s])
    return out


def _views_for_split(shared: Path, records: list[Record], info: dict, split: str, rng, labels: list[str]):
    """Yield (BGR uint8 model-size image, label index, weight) training/validation views."""
    from stream_pipeline.training.classifier.augment import augment_sample, read_rgba, render_logo

    size = INPUT_SIZE
    index = {c: i for i, c in enumerate(labels)}
    catalogue = load_catalogue(shared)
    backgrounds = _street_backgrounds(shared, records, rng)
    recs = [r for r in records if r.split == split and r.brand in index]
    if split == "train":
        counts: dict[str, int] = {}
        for r in recs:
            if r.brand != OTHER_CLASS:
                counts[r.brand] = counts.get(r.brand, 0) + (3 if r.domain == "street" else 1)
        image_cache: dict[str, np.ndarray] = {}
        for r in recs:
            if r.brand == OTHER_CLASS:
                k = 1
            else:
                per_unit = TARGET_PER_CLASS / counts[r.brand]
                k = int(np.clip(round(per_unit * (3 if r.domain == "street" else 1)), 1, 40))
            if r.path not in image_cache:
                image_cache.clear() if len(image_cache) > 64 else None
                image_cache[r.path] = read_image(shared / r.path)
            img = image_cache[r.path]
            for _ in range(k):
                yield augment_sample(img, r.box, rng, size), index[r.brand]
        cat_sets = [(c, CATALOGUE_RENDERS, c) for c in info["classes"]]
        cat_sets += [(s, OTHER_RENDERS, OTHER_CLASS) for s in info["catalogue"]["other_train"]]
    else:  # validation: deterministic crops, plus rendered logos for `other`
        for r in recs:
            img = load_record_image(shared, r)
            yield preprocess_crops([img], size)[0].astype(np.uint8)[:, :, ::-1].copy(), index[r.brand]
        cat_sets = [(s, 3, OTHER_CLASS) for s in info["catalogue"]["other_val"]]
    for slug, n, label in cat_sets:
        if slug not in catalogue:
            continue
        rgba = read_rgba(catalogue[slug])
        for _ in range(n):
            bg = backgrounds[int(rng.integers(len(backgrounds)))]
            yield render_logo(rgba, bg, rng, size), index[label]


def build_feature_cache(shared: Path, records, info, labels, split: str, lower, seed: int, batch: int = 64):
    """Run the views of a split through the frozen lower network; store float16 features."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    path = WORK_DIR / f"cache_{split}.npz"
    if path.is_file():
        data = np.load(path)
        log.info("feature cache %s: %d views (reused)", path.name, len(data["y"]))
        return data["x"], data["y"]
    rng = np.random.default_rng(seed + (0 if split == "train" else 1))
    feats, ys, buf, buf_y = [], [], [], []
    t0 = time.time()
    for img, y in _views_for_split(shared, records, info, split, rng, labels):
        buf.append(img[:, :, ::-1])  # BGR -> RGB
        buf_y.append(y)
        if len(buf) == batch:
            feats.append(lower.predict_on_batch(np.asarray(buf, np.float32)).astype(np.float16))
            ys += buf_y
            buf, buf_y = [], []
            if len(ys) % (batch * 20) == 0:
                log.info("cache %s: %d views, %.0f views/s", split, len(ys), len(ys) / (time.time() - t0))
    if buf:
        feats.append(lower.predict_on_batch(np.asarray(buf, np.float32)).astype(np.float16))
        ys += buf_y
    x, y = np.concatenate(feats), np.asarray(ys, np.int32)
    np.savez(path, x=x, y=y)
    log.info("feature cache %s: %d views in %.0f s", split, len(y), time.time() - t0)
    return x, y


class TimeBudget:
    """Keras callback factory: stop training when a wall-clock budget is spent."""

    @staticmethod
    def make(seconds: float | None):
        import keras

        class _Budget(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.t0 = time.time()

            def on_epoch_end(self, epoch, logs=None):
                if seconds is not None and time.time() - self.t0 > seconds:
                    log.info("time budget of %.0f s spent: stopping after epoch %d", seconds, epoch + 1)
                    self.model.stop_training = True

        return _Budget()


def train_mobilenet(shared: Path, head_epochs: int = 40, finetune_epochs: int = 20, seed: int = 1337,
                    threads: int = 1, resume: bool = True, model_dir: Path = MODEL_DIR,
                    finetune_budget_s: float | None = None, steps_per_epoch: int = 100,
                    e2e_epochs: int = 100, e2e_size: int = 96, e2e_budget_s: float | None = None,
                    e2e_lr: float = 3e-4, e2e_steps: int = 50, init_from: Path | None = None,
                    plateau_patience: int = 3) -> dict:
    if init_from is not None:  # stages 1-2 live in the saved model already
        return train_end_to_end(shared, size=e2e_size, epochs=e2e_epochs, steps_per_epoch=e2e_steps,
                                budget_s=e2e_budget_s, seed=seed, threads=threads, model_dir=model_dir, lr=e2e_lr,
                                init_from=init_from, plateau_patience=plateau_patience)
    tf = configure_tf(threads)
    import keras

    keras.utils.set_random_seed(seed)
    records, info = load_dataset_info(model_dir)
    labels = list(info["classes"]) + [OTHER_CLASS]
    weights = str(shared / MOBILENET_WEIGHTS)
    if not Path(weights).is_file():
        raise UserError(f"MobileNetV2 ImageNet weights not found: {weights}")
    full, top, lower, base, top_pooled, head = build_mobilenet(len(labels), weights)
    xtr, ytr = build_feature_cache(shared, records, info, labels, "train", lower, seed)
    xva, yva = build_feature_cache(shared, records, info, labels, "val", lower, seed)
    n = len(labels)
    counts = np.bincount(ytr, minlength=n).astype(np.float64)
    cw = np.sqrt(counts.mean() / np.maximum(counts, 1))
    class_weight = {i: float(w) for i, w in enumerate(cw)}
    ytr_1h, yva_1h = keras.utils.to_categorical(ytr, n), keras.utils.to_categorical(yva, n)
    history: dict[str, list] = {}
    ckpt_dir = WORK_DIR / "mobilenet"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.05)

    def record(name, hist):
        for k, v in hist.items():
            if isinstance(v, list):
                history.setdefault(k, []).extend(v)
        history.setdefault("stage", []).extend([name] * len(hist.get("loss", [])))

    # Stage 1: head on the frozen network. Blocks 13-16 are frozen, so their pooled output is
    # computed once for the cached views and the head is trained on it.
    set_upper_trainable(base, False)
    head_best, head_done = ckpt_dir / "head_best.weights.h5", ckpt_dir / "head_done.json"
    if resume and head_done.is_file():
        head.load_weights(head_best)
        hist = json.loads(head_done.read_text())
        log.info("head stage already done (resumed)")
    else:
        t0 = time.time()
        pooled_file = WORK_DIR / "pooled.npz"
        if pooled_file.is_file():
            data = np.load(pooled_file)
            ptr, pva = data["train"], data["val"]
        else:
            ptr = top_pooled.predict(xtr, batch_size=128, verbose=0)
            pva = top_pooled.predict(xva, batch_size=128, verbose=0)
            np.savez(pooled_file, train=ptr, val=pva)
        log.info("pooled features in %.0f s", time.time() - t0)
        head.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
        cbs = [keras.callbacks.ModelCheckpoint(str(head_best), monitor="val_loss", save_best_only=True,
                                               save_weights_only=True),
               keras.callbacks.EarlyStopping(monitor="val_loss", patience=5),
               keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=2),
               keras.callbacks.CSVLogger(str(ckpt_dir / "head_log.csv"))]
        h = head.fit(ptr, ytr_1h, batch_size=64, epochs=head_epochs, validation_data=(pva, yva_1h),
                     class_weight=class_weight, callbacks=cbs, verbose=2, shuffle=True)
        head.load_weights(head_best)
        hist = {k: [float(v) for v in vals] for k, vals in h.history.items()}
        hist["seconds"] = time.time() - t0
        head_done.write_text(json.dumps(hist))
    record("head", hist)

    # Stage 2: fine-tune blocks 13-16 + Conv_1 (BatchNorm frozen) at a low learning rate on
    # random draws of the cached views (an "epoch" is steps_per_epoch batches).
    ft_best, ft_done = ckpt_dir / "finetune_best.weights.h5", ckpt_dir / "finetune_done.json"
    if finetune_epochs > 0:
        set_upper_trainable(base, True)
        top.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss, metrics=["accuracy"])
        if resume and ft_done.is_file():
            top.load_weights(ft_best)
            hist = json.loads(ft_done.read_text())
            log.info("fine-tune stage already done (resumed)")
        else:
            t0 = time.time()
            sw = cw[ytr].astype(np.float32)
            ds = (tf.data.Dataset.from_tensor_slices((xtr, ytr_1h.astype(np.float32), sw))
                  .shuffle(len(xtr), seed=seed).repeat().batch(64).prefetch(2))
            # the head-stage validation loss is the bar the fine-tuned weights must beat
            best_so_far = float(min(history.get("val_loss", [np.inf])))
            cbs = [keras.callbacks.ModelCheckpoint(str(ft_best), monitor="val_loss", save_best_only=True,
                                                   save_weights_only=True, initial_value_threshold=best_so_far),
                   keras.callbacks.EarlyStopping(monitor="val_loss", patience=5),
                   keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=2),
                   keras.callbacks.CSVLogger(str(ckpt_dir / "finetune_log.csv")),
                   TimeBudget.make(finetune_budget_s)]
            top.save_weights(str(ft_best))
            h = top.fit(ds, steps_per_epoch=steps_per_epoch, epochs=finetune_epochs, validation_data=(xva, yva_1h),
                        callbacks=cbs, verbose=2)
            top.load_weights(ft_best)
            hist = {k: [float(v) for v in vals] for k, vals in h.history.items()}
            hist["seconds"] = time.time() - t0
            ft_done.write_text(json.dumps(hist))
        record("finetune", hist)
        set_upper_trainable(base, False)

    if e2e_epochs > 0:  # stage 3 (end-to-end) also calibrates, saves and exports
        return train_end_to_end(shared, size=e2e_size, epochs=e2e_epochs, steps_per_epoch=e2e_steps,
                                budget_s=e2e_budget_s, seed=seed, threads=threads, model_dir=model_dir, lr=e2e_lr,
                                plateau_patience=plateau_patience)

    return calibrate_and_save(full, shared, records, info, labels, INPUT_SIZE, seed, history, model_dir)


def write_model_files(full, model_dir: Path, labels: list[str], size: int, info: dict, threshold: float,
                      cal: dict, seed: int, history: dict, other_threshold: float = 1.0) -> dict:
    """Metadata, training history and the OpenVINO export beside the saved .keras model."""
    metadata = {
        "labels": labels,
        "other_class": OTHER_CLASS,
        "input_size": size,
        "input": "RGB float32 0-255, NHWC (the model rescales to [-1, 1]); crops resized to "
                 f"{size}x{size} without keeping aspect (INTER_AREA down, INTER_LINEAR up)",
        "crop_margin": info.get("crop_margin", 0.15),
        "threshold": threshold,
        "other_threshold": other_threshold,
        "threshold_calibration": cal,
        "architecture": "MobileNetV2 1.0 (ImageNet) + GAP + dropout 0.3 + dense softmax",
        "seed": seed,
        "trained_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (model_dir / "metadata.json").write_text(json.dumps(metadata, indent=2))
    (model_dir / "training_history.json").write_text(json.dumps(history, indent=1))
    export_openvino(full, model_dir)
    return metadata


def render_catalogue_brands(shared: Path, records: list[Record], slugs: list[str], split: str, per_brand: int,
                            size: int, rng: np.random.Generator) -> tuple[list[np.ndarray], list[str]]:
    """Catalogue logos rendered as road badges on street backgrounds of `split` (unknown brands
    for calibration and evaluation). Returns BGR images and their slugs."""
    from stream_pipeline.training.classifier.augment import read_rgba, render_logo

    backgrounds = _street_backgrounds(shared, records, rng, n=100, split=split)
    catalogue = load_catalogue(shared)
    images, brands = [], []
    for slug in slugs:
        if slug in catalogue:
            rgba = read_rgba(catalogue[slug])
            for _ in range(per_brand):
                images.append(render_logo(rgba, backgrounds[int(rng.integers(len(backgrounds)))], rng, size))
                brands.append(slug)
    return images, brands


def calibrate_threshold(probs: np.ndarray, y: np.ndarray, labels: list[str], unknown_probs: np.ndarray | None = None,
                        max_rejection: float = MAX_KNOWN_REJECTION) -> tuple[float, float, dict]:
    """Rejection thresholds on validation: (brand-probability threshold, `other`-probability
    threshold). Without unknown-brand images: the largest brand threshold rejecting
    <= max_rejection of known images. With them: the pair rejecting the most unknown images
    within that budget (ties: fewer known images rejected)."""
    other = labels.index(OTHER_CLASS)
    grid_t = np.round(np.arange(0.0, 0.96, 0.01), 2)
    grid_o = [1.0] if unknown_probs is None else [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 1.0]
    best = (-1.0, 0.0, 0.0, 1.0)  # (unknown rejected, -known rejected, threshold, other threshold)
    for o in grid_o:
        for t in grid_t:
            known = float(rejected(probs, other, t, o).mean())
            if known > max_rejection:
                continue
            unk = float(rejected(unknown_probs, other, t, o).mean()) if unknown_probs is not None else t
            best = max(best, (unk, -known, float(t), float(o)))
    _unk, _known, threshold, other_threshold = best
    cal = {"val_images": int(len(y)), "rejected_as_other": float((probs.argmax(axis=1) == other).mean()),
           "rejected_total": float(rejected(probs, other, threshold, other_threshold).mean()),
           "target_max_rejection": max_rejection, "val_top1": float(np.mean(probs.argmax(axis=1) == y))}
    if unknown_probs is not None:
        cal["val_unknown_images"] = int(len(unknown_probs))
        cal["val_unknown_rejected"] = float(rejected(unknown_probs, other, threshold, other_threshold).mean())
    return threshold, other_threshold, cal


def calibrate_and_save(full, shared: Path, records: list[Record], info: dict, labels: list[str], size: int,
                       seed: int, history: dict, model_dir: Path, export_model=None) -> dict:
    """Validation probabilities (known val images + renders of the validation-only `other`
    brands) -> rejection thresholds; then .keras, metadata, history and the OpenVINO IR
    (of `export_model` when given: the same softmax plus an embedding output)."""
    val_recs = [r for r in records if r.split == "val" and r.brand in info["classes"]]
    pv = full.predict(load_crops(shared, val_recs, size).astype(np.float32), batch_size=64, verbose=0)
    yv = np.array([labels.index(r.brand) for r in val_recs])
    unknown, _ = render_catalogue_brands(shared, records, info["catalogue"]["other_val"], "val", 5, size,
                                         np.random.default_rng(seed + 3))
    pu = full.predict(preprocess_crops(unknown, size), batch_size=64, verbose=0)
    threshold, other_threshold, cal = calibrate_threshold(pv, yv, labels, pu)
    log.info("thresholds: brand %.2f, other %.2f: %s", threshold, other_threshold, cal)
    model_dir.mkdir(parents=True, exist_ok=True)
    shipped = export_model if export_model is not None else full
    shipped.save(model_dir / "brand_classifier.keras")
    return write_model_files(shipped, model_dir, labels, size, info, threshold, cal, seed, history, other_threshold)


def export_openvino(model, model_dir: Path) -> Path:
    """Keras -> TF SavedModel -> OpenVINO IR. Weights stay fp32: fp16 weights moved the
    fine-tuned model's probabilities by up to 0.03, enough to flip near-ties against Keras."""
    import openvino as ov

    saved = WORK_DIR / "saved_model"
    if saved.exists():
        import shutil

        shutil.rmtree(saved)
    model.export(str(saved), format="tf_saved_model", verbose=False)
    ov_model = ov.convert_model(str(saved))
    xml = model_dir / "brand_classifier.xml"
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    return xml


# ----------------------------------------------------------------------------- original CNN

def build_original_cnn(num_classes: int, size: int = CNN_SIZE):
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (32, 64, 96, 128):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="original_cnn")
    model.compile(optimizer=keras.optimizers.Adam(3e-4), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def cnn_records(records: list[Record]) -> dict[str, list[Record]]:
    return {s: [r for r in records if r.source == "logos-seed" and r.split == s] for s in ("train", "val", "test")}


def train_cnn(shared: Path, epochs: int = 40, seed: int = 1337, threads: int = 1, resume: bool = True,
              model_dir: Path = MODEL_DIR) -> dict:
    configure_tf(threads)
    import keras

    keras.utils.set_random_seed(seed)
    records, _info = load_dataset_info(model_dir)
    labels = list(ORIGINAL_BRANDS)
    sets = cnn_records(records)
    xtr = load_crops(shared, sets["train"], CNN_SIZE)
    xva = load_crops(shared, sets["val"], CNN_SIZE)
    ytr = keras.utils.to_categorical([labels.index(r.brand) for r in sets["train"]], len(labels))
    yva = keras.utils.to_categorical([labels.index(r.brand) for r in sets["val"]], len(labels))
    out = WORK_DIR / "cnn"
    out.mkdir(parents=True, exist_ok=True)
    model = build_original_cnn(len(labels))
    aug = keras.Sequential([keras.layers.RandomRotation(0.06), keras.layers.RandomZoom(0.15),
                            keras.layers.RandomTranslation(0.1, 0.1)])
    import tensorflow as tf

    ds = (tf.data.Dataset.from_tensor_slices((xtr, ytr)).shuffle(len(xtr), seed=seed).batch(32)
          .map(lambda a, b: (aug(tf.cast(a, tf.float32), training=True), b)))
    cbs = [
        keras.callbacks.ModelCheckpoint(str(out / "best.keras"), monitor="val_loss", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=10),
        keras.callbacks.CSVLogger(str(out / "log.csv"), append=resume),
        keras.callbacks.BackupAndRestore(str(out / "backup")),
    ]
    t0 = time.time()
    h = model.fit(ds, epochs=epochs, validation_data=(xva.astype(np.float32), yva), callbacks=cbs, verbose=2)
    hist = {k: [float(v) for v in vals] for k, vals in h.history.items()}
    hist["seconds"] = time.time() - t0
    (out / "history.json").write_text(json.dumps(hist))
    return hist


# ----------------------------------------------------------------------------- end-to-end stage

# Share of a brand's training views drawn from each photo domain (renormalised over the domains
# the brand has). The road decides what a brand looks like: web photos of BMW, VW and Mercedes
# outnumber their street crops 3-10x and taught a studio look the road does not have.
DOMAIN_SHARES = {"street": 0.6, "closeup": 0.2, "web": 0.2}
MAX_DRAWS_PER_IMAGE = 40.0  # relative weight cap: a brand with 13 photos is not drawn 50x each


def domain_balanced_weights(recs: list[Record]) -> list[float]:
    """Sampling weight per record: each brand gets about TARGET_PER_CLASS views, split between
    its domains by DOMAIN_SHARES, evenly within a domain; `other` patches weigh 1."""
    per_domain: dict[tuple[str, str], int] = {}
    for r in recs:
        per_domain[(r.brand, r.domain)] = per_domain.get((r.brand, r.domain), 0) + 1
    domains_of: dict[str, list[str]] = {}
    for brand, domain in per_domain:
        domains_of.setdefault(brand, []).append(domain)
    out = []
    for r in recs:
        if r.brand == OTHER_CLASS:
            out.append(1.0)
            continue
        total = sum(DOMAIN_SHARES.get(d, 0.2) for d in domains_of[r.brand])
        share = DOMAIN_SHARES.get(r.domain, 0.2) / total
        out.append(min(MAX_DRAWS_PER_IMAGE, TARGET_PER_CLASS * share / per_domain[(r.brand, r.domain)]))
    return out


class TrainSampler:
    """Endless stream of augmented training views, drawn with the same per-class balance as the
    feature cache (street crops 3x), plus catalogue renders of classes and `other` brands.

    Each view also carries an identity for the metric stage: its brand, or with
    `render_identities` > 0 each `other` catalogue brand its own identity (numbered after the
    brands, in `info["catalogue"]["other_train"]` order) drawn with that weight instead of
    OTHER_RENDERS; -1 for views of no identity (non-logo patches, `other` renders otherwise)."""

    def __init__(self, shared: Path, records: list[Record], info: dict, labels: list[str], size: int, seed: int,
                 render_identities: float = 0.0):
        from stream_pipeline.training.classifier.augment import read_rgba

        self.size = size
        self.rng = np.random.default_rng(seed)
        self.index = {c: i for i, c in enumerate(labels)}
        recs = [r for r in records if r.split == "train" and r.brand in self.index]
        self.items, weights = [], []
        record_weights = domain_balanced_weights(recs)
        for r, weight in zip(recs, record_weights):
            img = read_image(shared / r.path)
            box = r.box
            if box is not None:  # keep a context window around the badge only
                x1, y1, x2, y2 = box
                w, h = x2 - x1, y2 - y1
                cx1, cy1 = max(0, int(x1 - 0.6 * w)), max(0, int(y1 - 0.6 * h))
                cx2, cy2 = min(img.shape[1], int(x2 + 0.6 * w) + 1), min(img.shape[0], int(y2 + 0.6 * h) + 1)
                img = img[cy1:cy2, cx1:cx2].copy()
                box = (x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1)
            y = self.index[r.brand]
            self.items.append(("img", img, box, y, r.domain, -1 if r.brand == OTHER_CLASS else y))
            weights.append(weight)
        catalogue = load_catalogue(shared)
        for c in info["classes"]:
            if c in catalogue:
                self.items.append(("logo", read_rgba(catalogue[c]), None, self.index[c], "render", self.index[c]))
                weights.append(float(CATALOGUE_RENDERS))
        n_brands = len(labels) - 1
        for k, s in enumerate(info["catalogue"]["other_train"]):
            if s in catalogue:
                identity = n_brands + k if render_identities else -1
                self.items.append(("logo", read_rgba(catalogue[s]), None, self.index[OTHER_CLASS], "render", identity))
                weights.append(float(render_identities or OTHER_RENDERS))
        w = np.asarray(weights, np.float64)
        self.p = w / w.sum()
        self.backgrounds = _street_backgrounds(shared, records, self.rng)
        ys = np.array([it[3] for it in self.items])
        per_class = np.bincount(ys, weights=self.p, minlength=len(labels))
        self.class_weight = np.sqrt(per_class.mean() / np.maximum(per_class, 1e-9)).astype(np.float32)

    def __call__(self):
        from stream_pipeline.training.classifier.augment import augment_sample, render_logo

        while True:
            kind, img, box, y, domain, identity = self.items[int(self.rng.choice(len(self.items), p=self.p))]
            if kind == "img":
                view = augment_sample(img, box, self.rng, self.size, domain)
            else:
                view = render_logo(img, self.backgrounds[int(self.rng.integers(len(self.backgrounds)))], self.rng,
                                   self.size)
            yield view[:, :, ::-1].astype(np.float32), y, self.class_weight[y], identity


def _sampler_worker(queue, shared: Path, model_dir: Path, size: int, seed: int, batch: int,
                    render_identities: float = 0.0) -> None:
    """Runs in its own process: augmentation (Python + OpenCV) then overlaps the TensorFlow step
    instead of taking turns with it under the GIL. Sends the class weights, then batches forever."""
    import multiprocessing as mp
    import queue as queue_module

    import cv2

    cv2.setNumThreads(1)
    records, info = load_dataset_info(model_dir)
    sampler = TrainSampler(shared, records, info, list(info["classes"]) + [OTHER_CLASS], size, seed,
                           render_identities)
    parent = mp.parent_process()

    def put(item) -> bool:
        # a daemon worker is only reaped when its parent exits cleanly; a parent killed by a
        # signal would leave it blocked on a full queue forever, so it checks on the parent
        while True:
            try:
                queue.put(item, timeout=5)
                return True
            except queue_module.Full:
                if parent is not None and not parent.is_alive():
                    queue.cancel_join_thread()  # nobody reads the pipe: don't flush it at exit
                    return False

    if not put(sampler.class_weight):
        return
    views = sampler()
    while True:
        xs, ys, ids = zip(*((v, y, i) for v, y, _w, i in (next(views) for _ in range(batch))))
        if not put((np.stack(xs).astype(np.uint8), np.asarray(ys, np.int32), np.asarray(ids, np.int32))):
            return


class BackgroundBatches:
    """Augmented training batches produced by a worker process (spawned, not forked: the parent
    already runs TensorFlow threads). Use as a context manager so the worker never outlives training."""

    def __init__(self, shared: Path, model_dir: Path, size: int, seed: int, batch: int = 32, prefetch: int = 6,
                 render_identities: float = 0.0):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue(maxsize=prefetch)
        self.process = ctx.Process(target=_sampler_worker,
                                   args=(self.queue, shared, model_dir, size, seed, batch, render_identities),
                                   daemon=True, name="augment")
        self.size, self.batch = size, batch

    def __enter__(self) -> "BackgroundBatches":
        self.process.start()
        self.class_weight = self.queue.get(timeout=600)
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.join(timeout=10)

    def __call__(self):
        while True:
            x, y, ids = self.queue.get(timeout=600)
            # the views are RGB already (TrainSampler flips BGR)
            yield x.astype(np.float32), y, self.class_weight[y], ids


def epochs_logged(csv_log: Path) -> int:
    """Epochs an earlier run of this stage logged: a resumed run seeds its augmentation with it,
    so it sees fresh views instead of replaying the ones its checkpoint was trained on."""
    if not csv_log.is_file():
        return 0
    return max(0, len(csv_log.read_text().splitlines()) - 1)


def fit_from_batches(model, batches, n_classes: int, epochs: int, steps_per_epoch: int, validation: tuple,
                     callbacks: list, targets=None) -> dict[str, list[float]]:
    """`model.fit` for an endless batch iterator, with the usual Keras callbacks. `targets` maps
    the one-hot labels (and the batch's identities) to what a multi-output model takes (and
    sample weights likewise).

    Not tf.data: `Dataset.from_generator` halved the training step rate on 2 cores (its Python
    callback contends with the step); `train_on_batch` runs at the full rate."""
    import keras

    cb = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    cb.on_train_begin()
    history: dict[str, list[float]] = {}
    stream = batches()
    for epoch in range(epochs):
        cb.on_epoch_begin(epoch)
        t0 = time.time()
        sums: dict[str, float] = {}
        for _ in range(steps_per_epoch):
            x, y, w, *identities = next(stream)  # BackgroundBatches adds the views' identities
            ids = identities[0] if identities else None
            y1h = keras.utils.to_categorical(y, n_classes)
            logs = model.train_on_batch(x, targets(y1h, ids) if targets else y1h,
                                        sample_weight=targets(w, None) if targets else w, return_dict=True)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        logs = {k: v / steps_per_epoch for k, v in sums.items()}
        val = model.evaluate(*validation, batch_size=64, verbose=0, return_dict=True)
        logs.update({f"val_{k}": float(v) for k, v in val.items()})
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        cb.on_epoch_end(epoch, logs)  # checkpoint, LR schedule, CSV, early stop, time budget
        log.info("epoch %d/%d %.0fs: %s", epoch + 1, epochs, time.time() - t0,
                 " ".join(f"{k} {v:.4g}" for k, v in logs.items()))
        for k, v in logs.items():
            history.setdefault(k, []).append(float(v))
        if model.stop_training:
            break
    cb.on_train_end()
    return history


def unfreeze_convolutions(base) -> None:
    """Every layer of the backbone trainable but BatchNorm (its statistics stay ImageNet's)."""
    import keras

    base.trainable = True
    for layer in base.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)


def validation_views(shared: Path, records: list[Record], info: dict, labels: list[str], size: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation set of the end-to-end stages: real val crops + `other` renders of the
    validation catalogue brands; (RGB float images at `size`, one-hot labels)."""
    import keras

    rng = np.random.default_rng(seed + 1)
    xv, yv = [], []
    for img, y in _views_for_split(shared, records, info, "val", rng, labels):
        xv.append(preprocess_crops([img], size)[0])  # BGR view -> RGB float at `size`
        yv.append(y)
    return np.asarray(xv, np.float32), keras.utils.to_categorical(np.asarray(yv), len(labels))


def train_end_to_end(shared: Path, size: int = 96, epochs: int = 100, steps_per_epoch: int = 50,
                     budget_s: float | None = None, seed: int = 1337, threads: int = 1,
                     model_dir: Path = MODEL_DIR, lr: float = 3e-4, init_from: Path | None = None,
                     plateau_patience: int = 3) -> dict:
    """Stage 3: all convolution layers trainable (BatchNorm frozen), on-the-fly augmentation,
    starting from the stage-1/2 weights; the model's input size becomes `size`.

    init_from: a saved brand classifier (.keras, same labels) to start from when this size has no
    checkpoint yet, e.g. the shipped model, so stages 1-2 need not be rerun."""
    configure_tf(threads)
    import keras

    keras.utils.set_random_seed(seed)
    records, info = load_dataset_info(model_dir)
    labels = list(info["classes"]) + [OTHER_CLASS]
    n = len(labels)
    weights = str(shared / MOBILENET_WEIGHTS)
    ckpt_dir = WORK_DIR / "mobilenet"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    e2e_best = ckpt_dir / f"e2e{size}_best.weights.h5"
    full, top, _lower, base, _tp, _head = build_mobilenet(n, weights, size)
    # the network is fully convolutional: a checkpoint trained at another input size is a better
    # start than the stage-2 weights (newest first)
    other_sizes = sorted((p for p in ckpt_dir.glob("e2e*_best.weights.h5") if p != e2e_best),
                         key=lambda p: p.stat().st_mtime, reverse=True)
    if e2e_best.is_file():
        full.load_weights(e2e_best)
        log.info("resuming end-to-end stage from %s", e2e_best.name)
    elif init_from is not None:
        _load_saved_classifier(full, Path(init_from), labels)
        log.info("end-to-end stage at %d px starts from %s", size, init_from)
        # the saved model's own history leads the curves of the model trained from it
        before = Path(init_from).parent / "training_history.json"
        if before.is_file():
            (ckpt_dir / "history_before.json").write_text(before.read_text())
    elif other_sizes:
        full.load_weights(other_sizes[0])
        log.info("end-to-end stage at %d px starts from %s", size, other_sizes[0].name)
    else:
        src = ckpt_dir / "finetune_best.weights.h5"
        if not src.is_file():
            src = ckpt_dir / "head_best.weights.h5"
            _f, _t, _l, _b, _p, head = build_mobilenet(n, weights, INPUT_SIZE)
            head.load_weights(src)
            full.set_weights(_f.get_weights())
        else:
            _f, t128, _l, _b, _p, _h = build_mobilenet(n, weights, INPUT_SIZE)
            t128.load_weights(src)
            full.set_weights(_f.get_weights())
        log.info("end-to-end stage starts from %s", src.name)
    unfreeze_convolutions(base)

    batches = BackgroundBatches(shared, model_dir, size, seed + 11 + epochs_logged(ckpt_dir / f"e2e{size}_log.csv"))

    xv, yv = validation_views(shared, records, info, labels, size, seed)

    full.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.05),
                 metrics=["accuracy"])
    if not e2e_best.is_file():
        full.save_weights(str(e2e_best))
    start = full.evaluate(xv, yv, verbose=0, batch_size=64)
    log.info("end-to-end start: val_loss %.4f val_accuracy %.4f", start[0], start[1])
    cbs = [keras.callbacks.ModelCheckpoint(str(e2e_best), monitor="val_loss", save_best_only=True,
                                           save_weights_only=True, initial_value_threshold=float(start[0])),
           keras.callbacks.EarlyStopping(monitor="val_loss", patience=10),
           keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=plateau_patience),
           keras.callbacks.CSVLogger(str(ckpt_dir / f"e2e{size}_log.csv"), append=True),
           TimeBudget.make(budget_s)]
    t0 = time.time()
    with batches:
        hist: dict = fit_from_batches(full, batches, n, epochs, steps_per_epoch, (xv, yv), cbs)
    hist["seconds"] = time.time() - t0
    (ckpt_dir / f"e2e{size}_done.json").write_text(json.dumps(hist))
    return finalize(shared, size=size, threads=threads, model_dir=model_dir, seed=seed)


def _load_saved_classifier(full, path: Path, labels: list[str]) -> None:
    """Copy the weights of a saved brand classifier into `full` (any input size: the network is
    fully convolutional). When its labels (metadata.json beside it) differ from ours, the
    backbone is copied whole and the softmax columns of the labels both share; new labels keep
    their fresh initialisation, with the lowest old bias so they start unlikely."""
    import keras

    if not path.is_file():
        raise UserError(f"--init-from: no such model file: {path}")
    saved = keras.saving.load_model(str(path), compile=False)
    if len(saved.outputs) > 1:  # a metric-trained classifier: (softmax, embedding); take the softmax part
        saved = keras.Model(saved.inputs, saved.outputs[0])
    meta = path.parent / "metadata.json"
    saved_labels = json.loads(meta.read_text()).get("labels") if meta.is_file() else labels
    if saved_labels == labels:
        full.set_weights(saved.get_weights())
        return
    old, new = saved.get_weights(), full.get_weights()
    if len(old) != len(new) or any(a.shape != b.shape for a, b in zip(old[:-2], new[:-2])):
        raise UserError(f"--init-from: {path} is not a brand classifier of this architecture")
    kernel, bias = new[-2].copy(), new[-1].copy()
    bias[:] = float(old[-1].min())
    shared_labels = [lab for lab in labels if lab in saved_labels]
    for lab in shared_labels:
        i, j = saved_labels.index(lab), labels.index(lab)
        kernel[:, j], bias[j] = old[-2][:, i], old[-1][i]
    full.set_weights(old[:-2] + [kernel, bias])
    log.info("--init-from: %d of %d labels carried over; new: %s", len(shared_labels), len(labels),
             ", ".join(lab for lab in labels if lab not in saved_labels) or "none")


def finalize(shared: Path, size: int = 96, threads: int = 1, model_dir: Path = MODEL_DIR, seed: int = 1337) -> dict:
    """Best end-to-end checkpoint -> threshold calibration, .keras, OpenVINO IR, metadata, history."""
    configure_tf(threads)
    import csv as _csv

    records, info = load_dataset_info(model_dir)
    labels = list(info["classes"]) + [OTHER_CLASS]
    ckpt_dir = WORK_DIR / "mobilenet"
    full, *_ = build_mobilenet(len(labels), None, size)
    best = ckpt_dir / f"e2e{size}_best.weights.h5"
    if not best.is_file():
        raise UserError(f"no end-to-end checkpoint at {size} px: {best} (train first, or pass the right --e2e-size)")
    full.load_weights(best)
    history: dict[str, list] = {}
    before = ckpt_dir / "history_before.json"  # stages of a model this one started from (--init-from)
    if before.is_file():
        for k, v in json.loads(before.read_text()).items():
            if k in ("loss", "accuracy", "val_loss", "val_accuracy", "stage"):
                history[k] = list(v)
    # every end-to-end run (e.g. 96 px, then 128 px from its weights) in the order they were trained
    e2e_logs = sorted(ckpt_dir.glob("e2e*_log.csv"), key=lambda p: p.stat().st_mtime)
    stages = [("head", ckpt_dir / "head_log.csv"), ("finetune", ckpt_dir / "finetune_log.csv")]
    stages += [(f"end-to-end {p.stem[3:-4]}px", p) for p in e2e_logs]
    for name, path in stages:
        if not path.is_file():
            continue
        with open(path, newline="") as fh:
            rows = list(_csv.DictReader(fh))
        for row in rows:
            for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
                history.setdefault(k, []).append(float(row[k]))
            history.setdefault("stage", []).append(name)
    return calibrate_and_save(full, shared, records, info, labels, size, seed, history, model_dir)
