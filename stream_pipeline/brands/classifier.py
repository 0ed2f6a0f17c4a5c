"""Runtime brand classifier: OpenVINO IR of the trained Keras MobileNetV2, batched.

Does not import TensorFlow. Model folder (default `models/brand_classifier/`):
`brand_classifier.xml/.bin` (OpenVINO IR), `metadata.json` (labels, input size,
preprocessing, rejection threshold).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from stream_pipeline.core.errors import ModelError
from stream_pipeline.core.paths import MODELS_DIR
from stream_pipeline.core.types import UNKNOWN_BRAND, BrandPrediction, BrandScore

DEFAULT_MODEL_DIR = MODELS_DIR / "brand_classifier"
IR_NAME = "brand_classifier.xml"
METADATA_NAME = "metadata.json"
OTHER_CLASS = "other"  # the trained "not one of the classes" label; reported as UNKNOWN_BRAND
TOP_K = 3
# Context cut around a badge box for the classifier, per side, as a fraction of the box. Small
# badges read better with more of the grille around them: validation street crops under 24 px
# 78.6 % top-1 at 0.15, 81.4 % at 0.25 (0.2-0.3 alike); wider ones are best at 0.15. Training
# views draw margins of 0-40 %, so both are in the model's range.
BADGE_MARGIN = 0.15
SMALL_BADGE_PX = 24
SMALL_BADGE_MARGIN = 0.25


def badge_margin(badge_px: float, base: float = BADGE_MARGIN) -> float:
    """Margin for a badge box `badge_px` wide: SMALL_BADGE_MARGIN under SMALL_BADGE_PX, else `base`."""
    return SMALL_BADGE_MARGIN if badge_px < SMALL_BADGE_PX else base


def preprocess_crops(crops: Sequence[np.ndarray], size: int) -> np.ndarray:
    """BGR uint8 crops of any size -> (N, size, size, 3) float32 RGB in 0-255 (the model rescales)."""
    batch = np.empty((len(crops), size, size, 3), np.float32)
    for i, crop in enumerate(crops):
        crop = np.asarray(crop)
        if crop.ndim == 2:
            crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
        elif crop.shape[2] == 4:
            crop = cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR)
        if crop.dtype != np.uint8:
            crop = np.clip(crop, 0, 255).astype(np.uint8)
        h, w = crop.shape[:2]
        if h == 0 or w == 0:
            batch[i] = 0.0
            continue
        interp = cv2.INTER_AREA if h * w > size * size else cv2.INTER_LINEAR
        resized = cv2.resize(crop, (size, size), interpolation=interp)
        batch[i] = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    return batch


def rejected(probs: np.ndarray, other_idx: int, threshold: float, other_threshold: float = 1.0) -> np.ndarray:
    """Per row: True when the answer is unknown (see `decide`). `other_idx` -1: no `other` output."""
    probs = np.asarray(probs, np.float64)
    if other_idx < 0:
        return probs.max(axis=1) < threshold
    brand_probs = probs.copy()
    brand_probs[:, other_idx] = -1
    return ((probs.argmax(axis=1) == other_idx) | (probs[:, other_idx] >= other_threshold)
            | (brand_probs.max(axis=1) < threshold))


def decide(probs: np.ndarray, labels: Sequence[str], threshold: float, top_k: int = TOP_K,
           other_threshold: float = 1.0) -> list[BrandPrediction]:
    """Softmax rows -> predictions. The answer is unknown when `other` wins, when `other` gets at
    least `other_threshold` (a badge of an unseen brand often splits its vote between `other`
    and a look-alike class, with neither winning clearly), or when the top brand probability is
    below `threshold`.

    `confidence` is the probability of the top brand class (excluding `other`); `top` lists
    the best brand classes.
    """
    out = []
    labels = list(labels)
    other_idx = labels.index(OTHER_CLASS) if OTHER_CLASS in labels else -1
    unknown = rejected(probs, other_idx, threshold, other_threshold) if len(probs) else []
    for row, is_unknown in zip(probs, unknown):
        row = np.asarray(row, np.float64)
        order = [int(i) for i in np.argsort(-row) if int(i) != other_idx]
        best = order[0]
        conf = float(np.clip(row[best], 0.0, 1.0))
        top = tuple(BrandScore(labels[i], float(row[i])) for i in order[:top_k])
        brand = UNKNOWN_BRAND if is_unknown else labels[best]
        out.append(BrandPrediction(brand, conf, top))
    return out


def _add_embedding_output(model) -> None:
    """Make the badge embedding the gallery compares the second output, for models without one of
    their own (a metric-trained model exports it, and its metadata says so): the pooled features
    that feed the softmax layer, found by structure, so IRs exported before the gallery work too:
    the network's only MatMul is the dense head, and its input is the pooled vector."""
    matmuls = [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    if len(matmuls) != 1:
        raise ModelError(f"brand classifier: expected one dense head, found {len(matmuls)} MatMul ops")
    model.add_outputs([matmuls[0].input_value(0)])


class BrandClassifier:
    """Batched OpenVINO brand classifier for badge crops: softmax and embedding in one pass.

    With a gallery (`gallery.Gallery`), the brand is decided by verification against it (see
    gallery.py); the softmax still gives `top` candidates for diagnosis. Without one, by the
    calibrated softmax rejection rule (`decide`)."""

    def __init__(self, model_dir: Path, metadata: dict, compiled, threshold: float, batch_size: int):
        self.model_dir = model_dir
        self.metadata = metadata
        self._compiled = compiled
        self._labels = list(metadata["labels"])
        self.input_size = int(metadata["input_size"])
        self.threshold = float(threshold)
        # calibrated with `threshold`; models without it reject only when `other` wins
        self.other_threshold = float(metadata.get("other_threshold", 1.0))
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self.gallery = None

    def badge_margin(self, badge_px: float) -> float:
        """Margin to cut a badge this wide with: `badge_margin` from the margin the model was
        trained and calibrated with (metadata `crop_margin`)."""
        return badge_margin(badge_px, float(self.metadata.get("crop_margin", BADGE_MARGIN)))

    def use_gallery(self, gallery) -> None:
        """Decide brands by `gallery` from now on; it must have been embedded by this model."""
        digest = self.digest
        if gallery.model_digest != digest:
            raise ModelError(f"brand gallery was built with another classifier (model {gallery.model_digest}, "
                             f"this one {digest}): rebuild it with `stream-pipeline build-gallery` or enrol again")
        self.gallery = gallery

    @property
    def digest(self) -> str:
        from stream_pipeline.brands.gallery import model_digest

        if not hasattr(self, "_digest"):
            self._digest = model_digest((self.model_dir / IR_NAME).with_suffix(".bin"))
        return self._digest

    @classmethod
    def load(cls, model_dir: Path | None = None, threshold: float | None = None,
             num_threads: int | None = None, batch_size: int = 32) -> "BrandClassifier":
        model_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        xml, meta_file = model_dir / IR_NAME, model_dir / METADATA_NAME
        for path in (meta_file, xml, xml.with_suffix(".bin")):
            if not path.is_file():
                raise ModelError(f"brand classifier file missing: {path} (run `stream-pipeline train-classifier`)")
        try:
            metadata = json.loads(meta_file.read_text())
            metadata["labels"], metadata["input_size"]
        except (ValueError, KeyError) as exc:
            raise ModelError(f"brand classifier metadata unreadable: {meta_file}: {exc}") from exc
        try:
            import openvino as ov

            core = ov.Core()
            # One synchronous request per batch: LATENCY lets it use all threads. f32 compute: on
            # CPUs with bf16 units OpenVINO would default to bf16, which moved probabilities by up
            # to 0.3 and so the calibrated rejection thresholds (measured in f32) with them.
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
            if num_threads:
                config["INFERENCE_NUM_THREADS"] = int(num_threads)
            model = core.read_model(str(xml))
            size = int(metadata["input_size"])
            model.reshape([-1, size, size, 3])
            if "embedding_output" not in metadata:
                _add_embedding_output(model)
            elif metadata["embedding_output"] != 1 or len(model.outputs) != 2:
                raise ModelError(f"brand classifier {xml}: metadata names embedding output "
                                 f"{metadata['embedding_output']}, the model has {len(model.outputs)} outputs")
            compiled = core.compile_model(model, "CPU", config)
        except (RuntimeError, ValueError, OSError) as exc:  # OpenVINO reports load failures as RuntimeError
            raise ModelError(f"cannot load brand classifier {xml}: {exc}") from exc
        n_out = compiled.outputs[0].get_partial_shape()[1]
        if not n_out.is_static or n_out.get_length() != len(metadata["labels"]):
            raise ModelError(f"brand classifier {xml}: first output has {n_out} scores, metadata names "
                             f"{len(metadata['labels'])} labels")
        if threshold is None:
            threshold = float(metadata.get("threshold", 0.5))
        return cls(model_dir, metadata, compiled, threshold, batch_size)

    @property
    def labels(self) -> list[str]:
        """The brand classes (catalogue slugs), without the internal `other` class."""
        return [label for label in self._labels if label != OTHER_CLASS]

    def predict_proba(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Softmax over all model outputs (including `other`), shape (N, len(metadata labels))."""
        return self.infer(crops)[0]

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised badge embeddings (N, D): the model's embedding output, or else the pooled
        features under the softmax layer."""
        from stream_pipeline.brands.gallery import normalise

        return normalise(self.infer(crops)[1])

    def infer(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(softmax (N, labels), raw embedding (N, D)) in one pass."""
        if len(crops) == 0:
            dim = self._compiled.outputs[1].get_partial_shape()[1].get_length()
            return np.zeros((0, len(self._labels)), np.float32), np.zeros((0, dim), np.float32)
        batch = preprocess_crops(crops, self.input_size)
        probs, feats = [], []
        with self._lock:
            for start in range(0, len(batch), self.batch_size):
                result = self._compiled(batch[start:start + self.batch_size])
                probs.append(np.asarray(result[self._compiled.outputs[0]], np.float32))
                feats.append(np.asarray(result[self._compiled.outputs[1]], np.float32))
        return np.concatenate(probs, axis=0), np.concatenate(feats, axis=0)

    def classify(self, crops: Sequence[np.ndarray], widths: Sequence[int | None] | None = None) -> list[BrandPrediction]:
        """widths: per crop, the width the gallery's threshold bands judge it by (None: a whole
        photo, judged by the gallery's whole-photo threshold). By default each crop's own width: badge crops cut
        from a frame, as the pipeline sends them."""
        if len(crops) == 0:
            return []
        probs, feats = self.infer(crops)
        softmax = decide(probs, self._labels, self.threshold, other_threshold=self.other_threshold)
        if self.gallery is None:
            return softmax
        # The gallery decides whether the badge is known at all (its threshold is calibrated on
        # real photos of brands never trained on) and names enrolled brands; between trained
        # brands, whichever of softmax and gallery named validation crops better (build-gallery
        # chose it: `names_trained_by`).
        trained = set(self.labels)
        by_gallery = self.gallery.names_trained_by == "gallery"
        out = []
        if widths is None:
            widths = [c.shape[1] for c in crops]
        for soft, near in zip(softmax, self.gallery.match(feats, widths=widths)):
            if near.brand == UNKNOWN_BRAND or near.brand not in trained or by_gallery:
                out.append(near)
            else:
                out.append(BrandPrediction(soft.top[0].brand, near.confidence, soft.top))
        return out
