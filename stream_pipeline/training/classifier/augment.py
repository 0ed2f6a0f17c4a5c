"""Road-footage augmentation (numpy/OpenCV): scale, crop, rotation, perspective, low resolution,
blur, brightness/contrast, noise, JPEG; and synthetic badges from catalogue logos."""

from __future__ import annotations

import cv2
import numpy as np

from stream_pipeline.training.classifier.dataset import expand_box

# Share of web-photo views that skip the road-footage degradation: with every view degraded the
# network never sees a sharp web photo, which is what the seed test split is. Kept small: the
# road, not the web, decides what a brand looks like. Street crops and renders are always degraded.
CLEAN_WEB_VIEWS = 0.15


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    interp = cv2.INTER_AREA if w * h < img.shape[0] * img.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(img, (max(1, w), max(1, h)), interpolation=interp)


def jitter_box_crop(img: np.ndarray, box, rng: np.random.Generator) -> np.ndarray:
    """Crop a badge box with a random margin (0-40 % per side) and a small shift."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    m = rng.uniform(0.0, 0.4, size=4)
    shift = rng.uniform(-0.1, 0.1, size=2)
    bx = (x1 - m[0] * w + shift[0] * w, y1 - m[1] * h + shift[1] * h,
          x2 + m[2] * w + shift[0] * w, y2 + m[3] * h + shift[1] * h)
    H, W = img.shape[:2]
    X1, Y1 = int(max(0, round(bx[0]))), int(max(0, round(bx[1])))
    X2, Y2 = int(min(W, round(bx[2]))), int(min(H, round(bx[3]))),
    if X2 - X1 < 2 or Y2 - Y1 < 2:
        X1, Y1, X2, Y2 = expand_box(box, W, H, 0.15)
    return img[Y1:Y2, X1:X2]


def random_crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random crop keeping 80-100 % of each side (or pad a little: zoom out). Web photos often show
    the badge small and off-centre, so a tighter crop would cut it out."""
    h, w = img.shape[:2]
    if rng.random() < 0.25:  # zoom out: pad with replicated border
        p = int(rng.uniform(0.0, 0.2) * max(h, w))
        return cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REPLICATE)
    fw, fh = rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0)
    cw, ch = max(2, int(w * fw)), max(2, int(h * fh))
    x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    return img[y:y + ch, x:x + cw]


def degrade(img: np.ndarray, rng: np.random.Generator, size: int, low_res: tuple[float, int, int] = (0.6, 12, 64)
            ) -> np.ndarray:
    """Geometric and photometric distortions, returns size x size BGR uint8. `low_res` is
    (probability, smallest side, largest side) of the down-sampling step."""
    img = _resize(img, size, size)
    # rotation + perspective
    if rng.random() < 0.8:
        s = size
        src = np.float32([[0, 0], [s, 0], [s, s], [0, s]])
        d = rng.uniform(-0.12, 0.12, size=(4, 2)) * s
        dst = src + d.astype(np.float32)
        ang = np.deg2rad(rng.uniform(-15, 15))
        c, sn = np.cos(ang), np.sin(ang)
        centre = np.float32([s / 2, s / 2])
        dst = (dst - centre) @ np.float32([[c, -sn], [sn, c]]).T + centre
        M = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
        img = cv2.warpPerspective(img, M, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # low resolution: badges in road footage are often 12-40 px wide
    if rng.random() < low_res[0]:
        low = int(rng.uniform(low_res[1], low_res[2]))
        img = _resize(_resize(img, low, low), size, size)
    if rng.random() < 0.3:
        k = int(rng.choice([3, 5]))
        img = cv2.GaussianBlur(img, (k, k), 0)
    elif rng.random() < 0.15:  # motion blur
        k = int(rng.choice([3, 5, 7]))
        kern = np.zeros((k, k), np.float32)
        kern[k // 2, :] = 1.0 / k
        M = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kern = cv2.warpAffine(kern, M, (k, k))
        img = cv2.filter2D(img, -1, kern / max(kern.sum(), 1e-6))
    f = img.astype(np.float32)
    # brightness / contrast / gamma / colour cast
    f = (f - 128.0) * rng.uniform(0.6, 1.4) + 128.0 + rng.uniform(-40, 40)
    f *= rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    f = np.clip(f, 0, 255)
    if rng.random() < 0.3:
        f = 255.0 * (f / 255.0) ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.1:
        f[:] = f.mean(axis=2, keepdims=True)
    if rng.random() < 0.5:
        f += rng.normal(0, rng.uniform(2, 12), size=f.shape).astype(np.float32)
    img = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(20, 90))])
        if ok:
            img = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    return img


def augment_sample(img: np.ndarray, box, rng: np.random.Generator, size: int, domain: str = "web") -> np.ndarray:
    """One augmented view: `img` is the full photo when `box` is given, else the image itself.

    Badge boxes are cropped the way the pipeline crops them and degraded down to 12 px, as road
    footage is. A web photo shows the whole badge or car at 150 px, often with the badge only
    10-20 % of it: shrinking the whole photo to 12 px would erase the badge and teach noise, so
    web photos are down-sampled less far. Close-up photos are tight badge crops: degraded as street
    crops are."""
    if box is not None:
        return degrade(jitter_box_crop(img, box, rng), rng, size)
    if domain == "closeup":
        return degrade(random_crop(img, rng), rng, size)
    if rng.random() < CLEAN_WEB_VIEWS:
        return light_jitter(random_crop(img, rng), rng, size)
    return degrade(random_crop(img, rng), rng, size, low_res=(0.5, max(16, size // 5), size))


def light_jitter(img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A mild view: small rotation, brightness/contrast jitter, no blur, noise or JPEG."""
    img = _resize(img, size, size)
    if rng.random() < 0.5:
        M = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-8, 8), 1.0)
        img = cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    f = (img.astype(np.float32) - 128.0) * rng.uniform(0.85, 1.15) + 128.0 + rng.uniform(-20, 20)
    return np.clip(f, 0, 255).astype(np.uint8)


def render_logo(rgba: np.ndarray, background: np.ndarray | None, rng: np.random.Generator,
                size: int) -> np.ndarray:
    """A synthetic badge: a catalogue logo (BGRA) pasted on a background patch or plain paint."""
    h, w = rgba.shape[:2]
    canvas_side = int(max(h, w) * rng.uniform(1.05, 1.6))
    if background is not None and rng.random() < 0.7:
        canvas = _resize(background, canvas_side, canvas_side).astype(np.float32)
    else:
        colour = rng.uniform(0, 255, size=3)
        canvas = np.empty((canvas_side, canvas_side, 3), np.float32)
        canvas[:] = colour
        grad = np.linspace(rng.uniform(-40, 0), rng.uniform(0, 40), canvas_side, dtype=np.float32)
        canvas += grad[:, None, None]
    logo = rgba[:, :, :3].astype(np.float32)
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0 if rgba.shape[2] == 4 else np.ones((h, w, 1), np.float32)
    if rng.random() < 0.3:  # chrome / monochrome badge
        grey = logo.mean(axis=2, keepdims=True)
        logo = np.repeat(grey * rng.uniform(0.6, 1.2) + rng.uniform(0, 60), 3, axis=2)
    x = rng.integers(0, canvas_side - w + 1)
    y = rng.integers(0, canvas_side - h + 1)
    region = canvas[y:y + h, x:x + w]
    canvas[y:y + h, x:x + w] = logo * alpha + region * (1 - alpha)
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    return degrade(canvas, rng, size)


def read_rgba(path) -> np.ndarray:
    """A catalogue PNG as BGRA uint8 (alpha added if missing), trimmed to its opaque area."""
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read {path}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    ys, xs = np.nonzero(img[:, :, 3] > 10)
    if len(xs):
        img = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    return img
