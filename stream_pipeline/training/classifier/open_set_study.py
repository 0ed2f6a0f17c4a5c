"""Open-set study on a trained classifier's features: which decision rule rejects real photos of
never-trained brands best at the same cost to known brands. Not on the runtime path; it records
why the shipped gallery is built the way it is.

    python -m stream_pipeline.training.classifier.open_set_study [--model-dir DIR] [--heads]

Features (pooled, raw) and softmax outputs of every train/val/test/unseen crop are computed once
with the shipped OpenVINO classifier and cached under work/open_set_study/. Every rule is judged
the same way: the threshold rejects 4 % of the validation crops of known brands; then the share of
unseen-brand photos rejected, known test crops rejected, and top-1 on the known test crops (all,
street, street under 24 px) are reported. The `--heads` rows train a small ArcFace projection on
the frozen training features (needs TensorFlow; about a minute per head on one core).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stream_pipeline.core.paths import MODELS_DIR, PROJECT_ROOT, shared_dir
from stream_pipeline.core.types import UNKNOWN_BRAND

CACHE_DIR = PROJECT_ROOT / "work" / "open_set_study"
KNOWN_REJECTION = 0.04  # of validation crops of known brands
SPLITS = ("train", "val", "test", "unseen")


def _norm(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def features(model_dir: Path, shared: Path) -> tuple[dict, list[str]]:
    from stream_pipeline.brands.classifier import BrandClassifier
    from stream_pipeline.brands.gallery import model_digest
    from stream_pipeline.training.classifier import train
    from stream_pipeline.training.classifier.dataset import load_record_image

    clf = BrandClassifier.load(model_dir, num_threads=2)
    cache = CACHE_DIR / f"{model_digest(model_dir / 'brand_classifier.bin')}.npz"
    if not cache.is_file():
        records, info = train.load_dataset_info(model_dir)
        arrays = {}
        for split in SPLITS:
            recs = [r for r in records if r.split == split and (r.brand in info["classes"] or split == "unseen")]
            probs, feats = [], []
            for start in range(0, len(recs), 256):
                p, f = clf.infer([load_record_image(shared, r) for r in recs[start:start + 256]])
                probs.append(p)
                feats.append(f)
            arrays.update({f"{split}_f": np.concatenate(feats), f"{split}_p": np.concatenate(probs),
                           f"{split}_b": np.array([r.brand for r in recs]),
                           f"{split}_d": np.array([r.domain for r in recs]),
                           f"{split}_px": np.array([r.box[2] - r.box[0] if r.box else -1 for r in recs])})
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **arrays)
    with np.load(cache) as data:
        sets = {s: {k: data[f"{s}_{k}"] for k in ("f", "p", "b", "d", "px")} for s in SPLITS}
    return sets, list(clf.metadata["labels"])


def references(train: dict, per_brand: int, seed: int = 0) -> np.ndarray:
    """Road crops first (3/4 of a brand's references when it also has web photos), as build-gallery."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for brand in np.unique(train["b"]):
        idx = np.nonzero(train["b"] == brand)[0]
        road = [i for i in idx if train["d"][i] != "web"]
        web = [i for i in idx if train["d"][i] == "web"]
        rng.shuffle(road)
        rng.shuffle(web)
        n_road = min(len(road), int(per_brand * 0.75) if web else per_brand)
        take = road[:n_road] + web[:per_brand - n_road]
        out += take + road[n_road:n_road + per_brand - len(take)]
    return np.array(out)


def brand_scores(query: np.ndarray, refs: np.ndarray, ref_brands: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    names = np.unique(ref_brands)
    sims = _norm(query) @ _norm(refs).T
    out = np.zeros((len(query), len(names)))
    for j, brand in enumerate(names):
        out[:, j] = np.sort(sims[:, ref_brands == brand], axis=1)[:, ::-1][:, :k].mean(axis=1)
    return names, out


def judge(sets: dict, rule) -> dict:
    """rule(split) -> (predicted brand, confidence) per crop of that split (known brands only for
    val/test)."""
    vp, vc = rule("val")
    t = float(np.quantile(vc, KNOWN_REJECTION))
    tp, tc = rule("test")
    _, uc = rule("unseen")
    truth, dom, px = sets["test"]["b"], sets["test"]["d"], sets["test"]["px"]
    street = dom == "street"
    small = street & (px < 24)
    ub = sets["unseen"]["b"]
    return {"unknown_rejected": round(float(np.mean(uc < t)), 3),
            "known_test_rejected": round(float(np.mean(tc < t)), 3),
            "top1": round(float(np.mean(tp == truth)), 3),
            "top1_with_rejection": round(float(np.mean(np.where(tc >= t, tp, UNKNOWN_BRAND) == truth)), 3),
            "street_top1": round(float(np.mean(tp[street] == truth[street])), 3),
            "street_under_24px_top1": round(float(np.mean(tp[small] == truth[small])), 3),
            "unknown_rejected_by_brand": {str(b): round(float(np.mean(uc[ub == b] < t)), 2) for b in np.unique(ub)}}


def arcface_projection(train: dict, dim: int = 256, dropout: float = 0.7, margin: float = 0.2, scale: float = 20.0,
                       epochs: int = 30, seed: int = 0) -> np.ndarray:
    """A linear projection of the L2-normalised features trained with an additive angular margin
    (ArcFace) on the training crops, brands balanced."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    classes = sorted(set(train["b"].tolist()))
    y = np.array([classes.index(b) for b in train["b"]])
    x = _norm(train["f"]).astype("float32")
    weight = 1.0 / np.bincount(y)[y]
    weight /= weight.mean()

    def loss(y_true, cos):
        onehot = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), len(classes))
        cos = tf.clip_by_value(cos, -1 + 1e-6, 1 - 1e-6)
        logits = scale * tf.where(onehot > 0, tf.cos(tf.acos(cos) + margin), cos)
        return tf.nn.softmax_cross_entropy_with_logits(onehot, logits)

    inp = keras.Input((x.shape[1],))
    project = keras.layers.Dense(dim, use_bias=False)
    emb = keras.layers.UnitNormalization()(project(keras.layers.Dropout(dropout)(inp)))
    cos = keras.layers.Dense(len(classes), use_bias=False, kernel_constraint=keras.constraints.UnitNorm(axis=0))(emb)
    model = keras.Model(inp, cos)
    model.compile(keras.optimizers.Adam(1e-3), loss)
    model.fit(x, y, sample_weight=weight, epochs=epochs, batch_size=256, verbose=0)
    return project.get_weights()[0]


def study(model_dir: Path, shared: Path, heads: bool = False) -> dict:
    sets, labels = features(model_dir, shared)
    for s in ("val", "test"):  # known brands only
        keep = sets[s]["b"] != "other"
        sets[s] = {k: v[keep] for k, v in sets[s].items()}
    train = sets["train"]
    label_arr = np.array(labels)
    other = labels.index("other") if "other" in labels else None

    def gallery_rule(per_brand: int, k: int, project=None):
        refs = references(train, per_brand)
        embed = (lambda f: _norm(_norm(f) @ project)) if project is not None else (lambda f: f)
        ref_f, ref_b = embed(train["f"][refs]), train["b"][refs]

        def rule(split):
            names, sc = brand_scores(embed(sets[split]["f"]), ref_f, ref_b, k)
            return names[sc.argmax(axis=1)], sc.max(axis=1)
        return rule

    def prototype_rule(per_brand: int):
        refs = references(train, per_brand)
        names = np.unique(train["b"][refs])
        protos = _norm(np.stack([_norm(train["f"][refs][train["b"][refs] == b]).mean(axis=0) for b in names]))

        def rule(split):
            sc = _norm(sets[split]["f"]) @ protos.T
            return names[sc.argmax(axis=1)], sc.max(axis=1)
        return rule

    def softmax_rule(split):
        p = sets[split]["p"].copy()
        if other is not None:  # probability left to "other" counts against every brand
            p[:, other] = 0
        return label_arr[p.argmax(axis=1)], p.max(axis=1)

    rows = {"gallery, 40 refs/brand, top-3": gallery_rule(40, 3),
            "gallery, 40 refs/brand, nearest": gallery_rule(40, 1),
            "gallery, 40 refs/brand, prototype (their mean)": prototype_rule(40),
            "gallery, every training crop, prototype": prototype_rule(10 ** 6),
            "gallery, 250 refs/brand, nearest": gallery_rule(250, 1),
            "gallery, every training crop, nearest": gallery_rule(10 ** 6, 1),
            "softmax, best trained brand's probability": softmax_rule}
    if heads:
        rows["ArcFace projection 256-d, 40 refs/brand, top-3"] = gallery_rule(40, 3, arcface_projection(train))
    return {name: judge(sets, rule) for name, rule in rows.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=MODELS_DIR / "brand_classifier")
    parser.add_argument("--shared", type=Path, default=None)
    parser.add_argument("--heads", action="store_true", help="also train and judge an ArcFace projection head")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report (default: MODEL_DIR/open_set_study.json, shown in the model card)")
    args = parser.parse_args(argv)
    result = study(args.model_dir, args.shared or shared_dir(), args.heads)
    out = args.out or args.model_dir / "open_set_study.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
