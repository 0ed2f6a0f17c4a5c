"""Training plumbing shared by the model builders: near-duplicate grouping and the batch-stream
training loop (tiny model and toy data: this checks the loop, it trains nothing shipped)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from stream_pipeline.training.grouping import UnionFind


def test_union_find_names_groups_by_smallest_member_in_any_order():
    pairs = [(4, 2), (2, 7), (9, 8), (7, 0)]
    for order in (pairs, pairs[::-1]):
        sets = UnionFind(10)
        for a, b in order:
            sets.union(a, b)
        groups = sets.groups()
        assert [groups[i] for i in (0, 2, 4, 7)] == [0, 0, 0, 0]  # transitive: 4-2-7-0
        assert groups[8] == groups[9] == 8
        assert [groups[i] for i in (1, 3, 5, 6)] == [1, 3, 5, 6]


def test_fit_from_batches_trains_and_drives_keras_callbacks(tmp_path: Path):
    from stream_pipeline.training.classifier.train import configure_tf, fit_from_batches

    configure_tf(1)
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, size=(3, 8)).astype(np.float32)

    def toy(n):
        y = rng.integers(0, 3, n)
        return (centres[y] + rng.normal(0, 0.5, (n, 8))).astype(np.float32), y

    def batches():
        while True:
            x, y = toy(16)
            yield x, y, np.ones(len(y), np.float32)

    xv, yv = toy(90)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy", metrics=["accuracy"])
    best, log_csv = tmp_path / "best.weights.h5", tmp_path / "log.csv"
    callbacks = [keras.callbacks.ModelCheckpoint(str(best), monitor="val_loss", save_best_only=True,
                                                 save_weights_only=True),
                 keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=1),
                 keras.callbacks.CSVLogger(str(log_csv)),
                 keras.callbacks.EarlyStopping(monitor="val_accuracy", baseline=0.99, patience=0)]

    hist = fit_from_batches(model, batches, 3, epochs=10, steps_per_epoch=20,
                            validation=(xv, keras.utils.to_categorical(yv, 3)), callbacks=callbacks)

    assert set(hist) >= {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert hist["val_accuracy"][-1] > 0.9  # separable toy data: the loop really trains
    # Early stopping (baseline 0.99 reached -> no "improvement" beyond it) ends the run before 10 epochs
    assert len(hist["loss"]) < 10
    with open(log_csv, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(hist["loss"])
    assert best.is_file()


def test_init_from_copies_a_saved_classifier_and_maps_other_labels(tmp_path: Path):
    """`train-classifier --init-from` starts fine-tuning from a saved model at another input size
    (the network is fully convolutional); with other labels, the backbone and the softmax columns
    of the labels both share are copied, and a new label starts least likely."""
    import json

    import pytest

    from stream_pipeline.core.errors import UserError
    from stream_pipeline.training.classifier.train import _load_saved_classifier, build_mobilenet, configure_tf

    configure_tf(1)
    import keras

    keras.utils.set_random_seed(0)
    labels = ["audi", "bmw", "other"]
    saved, *_ = build_mobilenet(len(labels), None, size=64)
    saved.save(tmp_path / "brand_classifier.keras")
    (tmp_path / "metadata.json").write_text(json.dumps({"labels": labels}))

    fresh, *_ = build_mobilenet(len(labels), None, size=96)
    _load_saved_classifier(fresh, tmp_path / "brand_classifier.keras", labels)
    for a, b in zip(saved.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)

    other = ["kia", "audi", "other", "tesla"]
    grown, *_ = build_mobilenet(len(other), None, size=96)
    _load_saved_classifier(grown, tmp_path / "brand_classifier.keras", other)
    old, new = saved.get_weights(), grown.get_weights()
    for a, b in zip(old[:-2], new[:-2]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(new[-2][:, 1], old[-2][:, 0])  # audi's column, moved
    np.testing.assert_array_equal(new[-2][:, 2], old[-2][:, 2])  # other
    assert new[-1][0] == new[-1][3] == old[-1].min()  # kia, tesla: new, start unlikely
    cnn_like, *_ = build_mobilenet(len(labels), None, size=96)
    import keras as _k

    tiny = _k.Sequential([_k.Input((8,)), _k.layers.Dense(3)])
    tiny.save(tmp_path / "other_arch.keras")
    with pytest.raises(UserError, match="not a brand classifier"):
        _load_saved_classifier(cnn_like, tmp_path / "other_arch.keras", other)
    with pytest.raises(UserError, match="no such model file"):
        _load_saved_classifier(fresh, tmp_path / "missing.keras", labels)


_ORPHAN_SCRIPT = """
import sys, time
from pathlib import Path
from stream_pipeline.training.classifier.train import BackgroundBatches
if __name__ == "__main__":
    batches = BackgroundBatches(Path(sys.argv[1]), Path(sys.argv[2]), 64, 1, batch=8, prefetch=2)
    batches.__enter__()  # worker started and sent its class weights
    print(batches.process.pid, flush=True)
    time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited orphan may wait for a PID 1 that never reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_augmentation_worker_exits_when_training_is_killed(tmp_path: Path, shared: Path):
    """A SIGTERM skips multiprocessing's clean-up of daemon children; the worker must notice."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from stream_pipeline.core.paths import PROJECT_ROOT

    script = tmp_path / "train_stub.py"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(shared), str(PROJECT_ROOT / "models" / "brand_classifier")],
                              stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        worker = int(parent.stdout.readline())
        os.kill(worker, 0)  # alive while training runs
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=120)
        # Bounded polling on the process table; the worker checks on its parent every 5 s, and
        # the bound is only a hang guard, generous for a busy 2-core machine.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not _running(worker):
                return
            time.sleep(0.5)
        os.kill(worker, signal.SIGKILL)
        raise AssertionError("augmentation worker outlived the killed training process")
    finally:
        parent.kill()


def test_sampler_gives_render_identities_of_their_own_only_when_asked(shared: Path):
    """Metric stage with --metric-render-ids: each `other` catalogue brand is an identity after the
    brands; the softmax label stays `other`, and non-logo patches have no identity."""
    from stream_pipeline.training.classifier.dataset import load_catalogue, read_manifest
    from stream_pipeline.training.classifier.train import TrainSampler

    from stream_pipeline.core.paths import PROJECT_ROOT

    records = read_manifest(PROJECT_ROOT / "models" / "brand_classifier" / "split_manifest.csv")
    train = [r for r in records if r.split == "train"]
    pick = ([r for r in train if r.brand == "bmw" and r.source == "logo-boxes"][:3]
            + [r for r in train if r.brand == "audi"][:2] + [r for r in train if r.brand == "other"][:2])
    catalogue = load_catalogue(shared)
    others = [s for s in ("abarth", "alpina", "amc") if s in catalogue]
    assert len(others) == 3
    info = {"classes": ["audi", "bmw"], "catalogue": {"other_train": others}}
    labels = ["audi", "bmw", "other"]

    def draw(render_identities):
        sampler = TrainSampler(shared, pick, info, labels, 64, seed=3, render_identities=render_identities)
        views = sampler()
        return [next(views)[1:] for _ in range(400)]  # (label, class weight, identity)

    with_ids = draw(30)
    pairs = {(y, i) for y, _w, i in with_ids}
    assert {(0, 0), (1, 1)} <= pairs  # a brand's identity is its label
    assert {(2, 3), (2, 4)} <= pairs  # renders: label `other`, identity 2 + k
    assert (2, -1) in pairs  # the non-logo patches
    assert all(i == -1 or (y < 2 and i == y) or (y == 2 and 2 <= i < 5) for y, _w, i in with_ids)
    without = draw(0)
    assert {i for y, _w, i in without if y == 2} == {-1}


def test_cosface_loss_with_render_identities():
    """A render identity's row is scored against its own centre; a row of no identity adds nothing,
    and the open-set target spreads an `other` patch over the brands only."""
    from stream_pipeline.training.classifier.metric import cosface_loss
    from stream_pipeline.training.classifier.train import configure_tf

    configure_tf(1)
    import keras

    n_brands, n_centres = 2, 4
    cos = np.array([[0.9, 0.1, 0.0, 0.0],   # brand 0, near its centre
                    [0.0, 0.0, 0.1, 0.9],   # render identity 3, near its centre
                    [0.0, 0.0, 0.9, 0.1],   # render identity 3, near the wrong one
                    [0.3, 0.3, 0.9, 0.9]],  # non-logo patch (no identity)
                   np.float32)
    y = np.zeros((4, n_centres + 1), np.float32)
    y[0, 0] = y[1, 3] = y[2, 3] = 1.0
    y[1, 4] = y[2, 4] = y[3, 4] = 1.0  # the `other` bit of the softmax label
    loss = keras.ops.convert_to_numpy(cosface_loss(n_brands, 30.0, 0.35, n_centres=n_centres)(y, cos))
    assert loss[1] < 1.0 < loss[2]
    assert loss[3] == 0.0
    open_set = keras.ops.convert_to_numpy(cosface_loss(n_brands, 30.0, 0.35, True, n_centres)(y, cos))
    assert np.allclose(open_set[:3], loss[:3])  # identity rows are not `other` patches
    assert open_set[3] > 10  # uniform over the 2 brands, but the cosines favour the render centres


def test_centres_start_at_the_mean_embedding_of_their_views():
    from stream_pipeline.training.classifier.metric import init_centres_from_views
    from stream_pipeline.training.classifier.train import configure_tf

    configure_tf(1)
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    inputs = keras.Input((6,))
    emb = keras.layers.UnitNormalization()(keras.layers.Dense(4, use_bias=False)(inputs))
    cos = keras.layers.Dense(5, use_bias=False, kernel_constraint=keras.constraints.UnitNorm(axis=0), name="cos")(emb)
    model, export = keras.Model(inputs, cos), keras.Model(inputs, [inputs, emb])
    points = rng.normal(size=(3, 6)).astype(np.float32)  # identities 0-2; 3 and 4 never drawn

    def batches():
        while True:
            ids = rng.integers(-1, 3, 16)
            x = points[np.maximum(ids, 0)] + rng.normal(0, 0.01, (16, 6)).astype(np.float32)
            yield x, ids, np.ones(16, np.float32), ids

    before = model.get_layer("cos").get_weights()[0].copy()
    assert init_centres_from_views(model, export, batches, 5, steps=10) == 3
    after = model.get_layer("cos").get_weights()[0]
    want = np.asarray(export.predict(points, verbose=0)[1])
    assert np.allclose(after[:, :3].T, want, atol=0.02)
    assert np.array_equal(after[:, 3:], before[:, 3:])


def test_a_metric_checkpoint_knows_its_centre_count():
    """finalize and resume rebuild the cosine head with the checkpoint's own number of centres;
    settings written before the count was stored fall back to the dataset."""
    from stream_pipeline.training.classifier.metric import centre_count

    info = {"classes": ["audi", "bmw"], "catalogue": {"other_train": ["abarth", "alpina", "amc"]}}
    assert centre_count({"render_identities": 30.0}, info) == 5
    assert centre_count({"render_identities": 0.0}, info) == 2
    assert centre_count({}, info) == 2
    assert centre_count({"render_identities": 30.0, "centres": 4}, info) == 4


def test_render_identities_need_the_metric_stage_and_a_weight():
    from tests.conftest import run_cli

    for argv, says in ((["--metric-render-ids", "30"], "--metric-dim"),
                       (["--metric-dim", "256", "--metric-render-ids", "-1"], "0 (off) or more")):
        out = run_cli("train-classifier", *argv)
        assert out.returncode == 2 and says in out.stderr and out.stderr.count("\n") == 1, out.stderr
