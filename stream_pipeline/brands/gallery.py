"""Brand gallery: reference embeddings per brand, and verification against them.

The original study framed brand identification as verification: compare a badge's features with
reference models, then decide. A badge crop's embedding (the classifier's embedding output, or
its pooled features for models without one; L2-normalised) is compared with every brand's
references; the brand's score is the mean cosine similarity of its `TOP_K_REFS` closest
references (or, `scoring="prototype"`, the similarity to the mean of its references: a brand
enrolled from 10 photos then competes on equal terms with brands that have hundreds), the nearest
brand wins, and a badge whose best score is below the gallery's
threshold is `unknown`. The thresholds are calibrated on real photos (known brands' validation
crops; brands kept out of training for the fallback), so "unknown" means "like nothing in the
gallery", not "like the catalogue renders the softmax was taught to reject".

The threshold may depend on the crop's width (`size_thresholds`): a small, blurry badge of a
known brand scores lower than a sharp one, so one threshold low enough for small crops lets large
unknown badges through. Each width band's threshold rejects a fixed share of known validation
crops of that width; no unknown photo tunes it. `threshold` judges crops of no badge width
(whole photos, e.g. close-ups given to `classify`), calibrated the same way on whole photos.

A gallery is tied to the classifier that embedded it (`model_digest`): embeddings of another
model are meaningless, so loading a mismatched pair fails with one line. Brands are added with
`stream-pipeline enroll` without retraining. Pure numpy: no TensorFlow at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stream_pipeline.core.errors import ModelError, UserError
from stream_pipeline.core.types import UNKNOWN_BRAND, BrandPrediction, BrandScore

GALLERY_NAME = "gallery.npz"
TOP_K_REFS = 3  # a brand's score averages its 3 closest references: one odd reference can't win alone
NEGATIVE_TOP_K = 3  # the non-badge score averages the 3 closest negatives, as TOP_K_REFS
SCORINGS = ("nearest", "prototype")
NAMERS = ("softmax", "gallery")
KEY_RE = re.compile(r"^[0-9a-f]{1,16}$")  # an image's 64-bit perceptual hash in hex (`gallery_cli.image_key`)
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
# labels that already mean "no brand" in every output: a brand under one of them would read as a rejection
RESERVED_SLUGS = (UNKNOWN_BRAND, "other")


def model_digest(weights_file: Path) -> str:
    """Identity of the network that embeds: sha256 of its weights file (first 16 hex digits)."""
    h = hashlib.sha256()
    with open(weights_file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def normalise(embeddings: np.ndarray) -> np.ndarray:
    e = np.asarray(embeddings, np.float32)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def check_slug(brand: str) -> str:
    slug = brand.strip().lower()
    if not SLUG_RE.match(slug):
        raise UserError(f"brand name {brand!r} is not a slug: use lower-case letters, digits and '-' "
                        "(e.g. alfa-romeo)")
    if slug in RESERVED_SLUGS:
        raise UserError(f"brand name {slug!r} is reserved: it means 'no brand' in every output")
    return slug


@dataclass
class Gallery:
    """Reference embeddings (N, D), their brand and origin (`train`, `enrolled`), and the
    similarity threshold below which a badge is unknown."""

    embeddings: np.ndarray
    brands: np.ndarray
    origins: np.ndarray
    threshold: float
    model_digest: str
    info: dict = field(default_factory=dict)  # calibration figures, how it was built
    keys: np.ndarray | None = None  # per reference: perceptual hash of its image ("" if unknown)
    top_k: int = TOP_K_REFS
    # [(smallest crop width in px, threshold), ...] ascending; empty: `threshold` for every crop
    size_thresholds: list = field(default_factory=list)
    scoring: str = "nearest"  # or "prototype": similarity to the mean of a brand's references
    # who names a badge the gallery finds to be a trained brand: the classifier's "softmax" or the
    # "gallery" itself (build-gallery picks the one more accurate on validation)
    names_trained_by: str = "softmax"
    # Non-badges the logo detector fires on (lettering, lamps, bodywork; training/classifier/
    # negatives.py): a badge the gallery would give to an enrolled brand, but whose mean similarity
    # to its NEGATIVE_TOP_K closest negatives exceeds the brand's score by more than
    # `negative_margin`, is unknown. None: no such check (galleries built before it).
    negatives: np.ndarray | None = None
    negative_margin: float | None = None

    def __post_init__(self):
        if self.scoring not in SCORINGS:
            raise ValueError(f"gallery scoring {self.scoring!r}: expected one of {', '.join(SCORINGS)}")
        if self.names_trained_by not in NAMERS:
            raise ValueError(f"gallery names_trained_by {self.names_trained_by!r}: expected one of {', '.join(NAMERS)}")
        self.size_thresholds = sorted((int(w), float(t)) for w, t in self.size_thresholds)
        if self.keys is None:
            self.keys = np.asarray([""] * len(self.brands), dtype=object)
        self.keys = np.asarray(self.keys, dtype=object)
        self.embeddings = normalise(self.embeddings).reshape(len(self.brands), -1) if len(self.brands) else \
            np.zeros((0, self.embeddings.shape[-1] if np.ndim(self.embeddings) == 2 else 0), np.float32)
        self.brands = np.asarray(self.brands, dtype=object)
        self.origins = np.asarray(self.origins, dtype=object)
        if not (len(self.embeddings) == len(self.brands) == len(self.origins) == len(self.keys)):
            raise ValueError("gallery arrays differ in length")
        if self.negatives is not None:
            self.negatives = normalise(np.asarray(self.negatives, np.float32))
            if len(self.embeddings) and self.negatives.shape[1] != self.embeddings.shape[1]:
                raise ValueError("gallery negatives differ in size from its references")
        self._index()

    def _index(self) -> None:
        """Per-brand reference indices padded into one matrix, so scoring is one gather."""
        self.brand_names = sorted(set(self.brands.tolist()))
        groups = [np.nonzero(self.brands == b)[0] for b in self.brand_names]
        width = max((len(g) for g in groups), default=0)
        self._ref_index = np.zeros((len(groups), width), np.int64)
        self._ref_valid = np.zeros((len(groups), width), bool)
        for i, g in enumerate(groups):
            self._ref_index[i, :len(g)] = g
            self._ref_valid[i, :len(g)] = True
        dim = self.embeddings.shape[1] if self.embeddings.ndim == 2 else 0
        self._prototypes = normalise(np.stack([self.embeddings[g].mean(axis=0) for g in groups])) if groups \
            else np.zeros((0, dim), np.float32)
        # brands known only from enrolled photos: the softmax cannot vouch for them
        self._enrolled_only = np.array([bool(len(g)) and bool(np.all(self.origins[g] == "enrolled")) for g in groups],
                                       bool)

    # ------------------------------------------------------------------ files

    @classmethod
    def load(cls, path: Path) -> "Gallery":
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"brand gallery not found: {path}")
        not_gallery = "not a gallery file (a .npz written by build-gallery or enroll)"
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):  # a single .npy array
                raise ModelError(f"brand gallery unreadable: {path}: {not_gallery}")
            with data:
                meta = json.loads(str(data["meta"]))
                keys = np.asarray(data["keys"]).astype(object)
                if not all(k == "" or KEY_RE.match(k) for k in keys):
                    raise ModelError(f"brand gallery unreadable: {path}: its image keys are not 64-bit hex")
                return cls(data["embeddings"].astype(np.float32), np.asarray(data["brands"]).astype(object),
                           np.asarray(data["origins"]).astype(object), float(meta["threshold"]),
                           str(meta["model_digest"]), meta.get("info", {}), keys, int(meta.get("top_k", TOP_K_REFS)),
                           [(int(w), float(t)) for w, t in meta.get("size_thresholds", [])],
                           str(meta.get("scoring", "nearest")), str(meta.get("names_trained_by", "softmax")),
                           data["negatives"].astype(np.float32) if "negatives" in data.files else None,
                           None if meta.get("negative_margin") is None else float(meta["negative_margin"]))
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:  # truncated or damaged
            raise ModelError(f"brand gallery unreadable: {path}: damaged or incomplete file ({exc})") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # numpy reads a file that is not .npz as a pickle, and refuses it with advice to unpickle it
            reason = not_gallery if "pickled" in str(exc) or isinstance(exc, KeyError) else exc
            raise ModelError(f"brand gallery unreadable: {path}: {reason}") from None

    @staticmethod
    def check_writable(path: Path) -> None:
        """Refuse, in one line, a gallery file the user may not change: one without write
        permission (also for root, who could: a read-only file says "keep it"), or a folder."""
        path = Path(path)
        if path.is_dir():
            raise UserError(f"--gallery {path} is a folder: name a file in it, e.g. {path / 'gallery.npz'}")
        if path.exists() and not (os.access(path, os.W_OK) and path.stat().st_mode & 0o222):
            raise UserError(f"gallery {path} is read-only: not changed (make it writable, or pass another --gallery)")

    def save(self, path: Path) -> None:
        """Atomic: a crash mid-write leaves the old gallery, never half a file. A replaced file
        keeps its mode; a read-only one is refused (`check_writable`)."""
        path = Path(path)
        self.check_writable(path)
        # mkstemp's 0600 would hide a new gallery from other users
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
        meta = json.dumps({"threshold": self.threshold, "model_digest": self.model_digest, "top_k": self.top_k,
                           "size_thresholds": [list(band) for band in self.size_thresholds],
                           "scoring": self.scoring, "names_trained_by": self.names_trained_by,
                           "negative_margin": self.negative_margin, "info": self.info})
        negatives = {} if self.negatives is None else {"negatives": self.negatives.astype(np.float16)}
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".gallery-", suffix=".npz", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, embeddings=self.embeddings.astype(np.float16),
                                    brands=self.brands.astype(str), origins=self.origins.astype(str),
                                    keys=self.keys.astype(str), meta=np.asarray(meta), **negatives)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except OSError as exc:  # a read-only folder, a full disk
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            raise UserError(f"cannot write gallery {path}: {exc.strerror or exc}") from None
        except BaseException:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------------ contents

    def summary(self) -> list[dict]:
        """One row per brand: references by origin."""
        rows = []
        for b in self.brand_names:
            mask = self.brands == b
            origins = self.origins[mask].tolist()
            rows.append({"brand": b, "references": int(mask.sum()),
                         "enrolled": origins.count("enrolled"), "trained": origins.count("train")})
        return rows

    def add(self, brand: str, embeddings: np.ndarray, origin: str = "enrolled", keys: list[str] | None = None) -> None:
        e = normalise(embeddings)
        if len(self.embeddings) and e.shape[1] != self.embeddings.shape[1]:
            raise ModelError(f"embedding size {e.shape[1]} does not match the gallery's {self.embeddings.shape[1]}")
        keys = list(keys) if keys is not None else [""] * len(e)
        self.embeddings = np.concatenate([self.embeddings.reshape(-1, e.shape[1]), e])
        self.brands = np.concatenate([self.brands, np.asarray([brand] * len(e), dtype=object)])
        self.origins = np.concatenate([self.origins, np.asarray([origin] * len(e), dtype=object)])
        self.keys = np.concatenate([self.keys, np.asarray(keys, dtype=object)])
        self._index()

    def remove(self, brand: str) -> int:
        keep = self.brands != brand
        removed = int((~keep).sum())
        self.embeddings, self.brands = self.embeddings[keep], self.brands[keep]
        self.origins, self.keys = self.origins[keep], self.keys[keep]
        self._index()
        return removed

    def copy(self) -> "Gallery":
        return Gallery(self.embeddings.copy(), self.brands.copy(), self.origins.copy(), self.threshold,
                       self.model_digest, dict(self.info), self.keys.copy(), self.top_k, list(self.size_thresholds),
                       self.scoring, self.names_trained_by,
                       None if self.negatives is None else self.negatives.copy(), self.negative_margin)

    def thresholds_for(self, widths) -> np.ndarray:
        """Threshold per crop width in px (`threshold` for a width of None or below 0: a whole
        photo, no badge width)."""
        w = np.array([-1 if x is None else x for x in widths], np.int64)
        out = np.full(len(w), self.threshold, np.float32)
        for smallest, t in self.size_thresholds:  # ascending: the widest band that fits wins
            out[(w >= 0) & (w >= smallest)] = t
        return out

    # ------------------------------------------------------------------ matching

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(M, brands) score: mean cosine similarity of each brand's `top_k` closest references,
        or the cosine similarity to each brand's prototype."""
        q = normalise(embeddings)
        if not len(self.brand_names) or not len(q):
            return np.zeros((len(q), len(self.brand_names)), np.float32)
        if self.scoring == "prototype":
            return (q @ self._prototypes.T).astype(np.float32)
        sims = q @ self.embeddings.T  # (M, N)
        per_brand = np.where(self._ref_valid[None], sims[:, self._ref_index], -np.inf)  # (M, B, R)
        k = min(self.top_k, per_brand.shape[2])
        if k == 1:
            return per_brand.max(axis=2).astype(np.float32)
        top = -np.partition(-per_brand, k - 1, axis=2)[:, :, :k]
        counts = np.minimum(self._ref_valid.sum(axis=1), k)[None, :]
        top = np.where(np.isfinite(top), top, 0.0)
        return (top.sum(axis=2) / counts).astype(np.float32)

    def match(self, embeddings: np.ndarray, top_k: int = 3, threshold: float | None = None,
              widths=None) -> list[BrandPrediction]:
        """Nearest brand per embedding; `unknown` when its score is below the threshold (the one
        for its crop width when `widths` are given). `confidence` is the winning brand's score
        (cosine similarity)."""
        s = self.scores(embeddings)
        if not len(self.brand_names):  # every brand removed: nothing can match
            return [BrandPrediction(UNKNOWN_BRAND, 0.0, ()) for _ in range(len(s))]
        if threshold is not None:
            limits = np.full(len(s), threshold, np.float32)
        else:
            limits = self.thresholds_for(widths if widths is not None else [None] * len(s))
        not_badge = self.looks_like_no_badge(embeddings, s.max(axis=1), s.argmax(axis=1))
        out = []
        for row, t, rejected in zip(s, limits, not_badge):
            order = np.argsort(-row)[:top_k]
            top = tuple(BrandScore(self.brand_names[i], float(row[i])) for i in order)
            best = int(order[0])
            conf = float(np.clip(row[best], 0.0, 1.0))
            named = row[best] >= t and not rejected
            out.append(BrandPrediction(self.brand_names[best] if named else UNKNOWN_BRAND, conf, top))
        return out

    def negative_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Per embedding: mean cosine similarity of its NEGATIVE_TOP_K closest negatives."""
        q = normalise(embeddings)
        if self.negatives is None or not len(self.negatives) or not len(q):
            return np.full(len(q), -np.inf, np.float32)
        sims = q @ self.negatives.T
        k = min(NEGATIVE_TOP_K, sims.shape[1])
        return (-np.partition(-sims, k - 1, axis=1)[:, :k]).mean(axis=1).astype(np.float32)

    def looks_like_no_badge(self, embeddings: np.ndarray, best: np.ndarray, winner: np.ndarray,
                            margin: float | None = None) -> np.ndarray:
        """Per embedding: would an enrolled brand win (`winner`, scoring `best`) although the crop
        is closer to the non-badges? Trained brands are vouched for by the softmax, which was
        taught what a badge is not (its `other` class); enrolled ones have only their few photos."""
        margin = self.negative_margin if margin is None else margin
        if self.negatives is None or margin is None or not len(best):
            return np.zeros(len(best), bool)
        enrolled = self._enrolled_only[winner]
        out = np.zeros(len(best), bool)
        if enrolled.any():
            idx = np.nonzero(enrolled)[0]
            out[idx] = self.negative_scores(np.asarray(embeddings)[idx]) - best[idx] > margin
        return out
