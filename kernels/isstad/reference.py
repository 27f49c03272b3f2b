"""ISSTAD anomaly-score fusion: the numpy/scipy reference (the seed's own post-processing).

Specification of every tier. From the graph outputs (the 12 pixel-head logits or their mean
probability, the reconstruction) and the normalised input image it computes, per image:

    P   = mean_k softmax(logits_k over the 2 classes)[1]              (B, H, W)
    R   = mean_c (recon - image)^2                                     (B, H, W)
    G   = scipy.ndimage.gaussian_filter(sigma=4, truncate=4, mode='reflect')
          (33 taps; scipy's 'reflect' is half-sample symmetric: d c b a | a b c d)
    Pb  = G(P), Rb = G(R), Rn = (R - min R) / (max R - min R), Rnb = G(Rn)

and one of the fusions (``scoring``; ``SCORINGS`` maps it to a pixel and an image formula):

| scoring    | pixel map                    | image score                                  | source |
|------------|------------------------------|----------------------------------------------|--------|
| original   | G(255 * P * Rn)              | mean(G(Pb * Rb))                             | O step2 :160-192 |
| ham        | G(P * Rn)                    | mean(Pb * Rb)                                | E step2 :183-216 |
| alpha      | 0.5 Pb + 0.5 Rnb             | mean(0.5 Pb + 0.5 Rnb)                       | E |
| max        | max(Pb, Rnb)                 | mean(Pb * Rb) (E has no "max" image score)   | E |
| weighted   | G(P * Rn)                    | (1 + top_p(Pb))^w_m * (1 + top_p(Rb))^w_r    | E mean_of_top |

``top_p(x)`` is the mean of the ``ceil(p * H * W)`` largest values. Everything runs like the
seed: float32 arrays, scipy's float64 accumulation per 1-D pass, one image at a time.

Deviation from the seed: when R is constant (max R == min R) the seed divides by zero;
here Rn is 0 there (so the O/E-Ham maps are 0 and Rnb is 0).
"""

from __future__ import annotations

import math

import numpy as np

SIGMA = 4.0
TRUNCATE = 4.0
RADIUS = int(TRUNCATE * SIGMA + 0.5)  # 16 -> 33 taps, as scipy

#: scoring -> (pixel formula, image formula)
SCORINGS: dict[str, tuple[str, str]] = {
    "original": ("original", "mean"),
    "ham": ("ham", "mean"),
    "alpha": ("alpha", "alpha"),
    "max": ("max", "mean"),
    "weighted": ("ham", "weighted"),
}
PIXEL_MODES = ("original", "ham", "alpha", "max")
IMAGE_MODES = ("mean", "alpha", "weighted")


def gaussian_weights(sigma: float = SIGMA, radius: int = RADIUS) -> np.ndarray:
    """scipy's normalised 1-D Gaussian taps (float64, length 2 * radius + 1)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (sigma * sigma) * x * x)
    return phi / phi.sum()


def blur(x: np.ndarray) -> np.ndarray:
    """The seed's G: ``scipy.ndimage.gaussian_filter(x, sigma=4)`` of one (H, W) map."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=SIGMA)


def probability(heads: np.ndarray) -> np.ndarray:
    """P from (B, K, 2, H, W) logits (mean softmax, float32) or pass (B, H, W) through."""
    heads = np.asarray(heads, dtype=np.float32)
    if heads.ndim == 3:
        return heads
    acc = np.zeros((heads.shape[0], *heads.shape[-2:]), dtype=np.float32)
    for k in range(heads.shape[1]):  # the seed loops over the head list and sums
        logit = heads[:, k]
        e = np.exp(logit - logit.max(axis=1, keepdims=True))
        acc += e[:, 1] / e.sum(axis=1)
    return acc / np.float32(heads.shape[1])


def recon_error(recon: np.ndarray, image: np.ndarray) -> np.ndarray:
    """R = channel-mean squared error, (B, C, H, W) x 2 -> (B, H, W) float32."""
    diff = np.asarray(recon, np.float32) - np.asarray(image, np.float32)
    return np.mean(diff * diff, axis=1, dtype=np.float32)


def top_mean(x: np.ndarray, p: float) -> float:
    """E's ``mean_of_top``: mean of the ``ceil(p * x.size)`` largest values (float32 mean)."""
    k = int(math.ceil(p * x.size))
    values = np.sort(x.ravel())[::-1][:k]
    return float(np.mean(values))


def minmax(r: np.ndarray) -> np.ndarray:
    lo, hi = float(r.min()), float(r.max())
    if hi <= lo:
        return np.zeros_like(r)
    return ((r - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)


def isstad_fusion(heads: np.ndarray, recon: np.ndarray, image: np.ndarray, *, scoring: str = "original",
                  top_p: float = 0.1, w_m: float = 1.0, w_r: float = 1.0) -> dict[str, np.ndarray]:
    """The seed's post-processing, image by image.

    Args:
        heads: (B, K, 2, H, W) head logits or (B, H, W) probability P (float32).
        recon: (B, C, H, W) reconstruction in the normalised input space.
        image: (B, C, H, W) the normalised input image.
        scoring: a key of ``SCORINGS``.
        top_p, w_m, w_r: parameters of the ``weighted`` image score (E's per-class p, w_m, w_r).

    Returns:
        ``probability`` P, ``recon_error`` R and ``pixel_map`` (B, H, W) float32, ``score``
        (B,) float64.
    """
    pixel_mode, image_mode = SCORINGS[scoring]
    P = probability(heads)
    R = recon_error(recon, image)
    maps, scores = [], []
    for p, r in zip(P, R):
        pb, rb = blur(p), blur(r)
        rn = minmax(r)
        if pixel_mode == "original":
            pixel = blur(np.float32(255) * p * rn)
        elif pixel_mode == "ham":
            pixel = blur(p * rn)
        elif pixel_mode == "alpha":
            pixel = np.float32(0.5) * pb + np.float32(0.5) * blur(rn)
        else:
            pixel = np.maximum(pb, blur(rn))
        if image_mode == "mean":
            # O: mean(G(Pb * Rb)); E-Ham: mean(Pb * Rb). Equal: G preserves sums here.
            score = float(np.mean(blur(pb * rb))) if pixel_mode == "original" else float(np.mean(pb * rb))
        elif image_mode == "alpha":
            score = float(np.mean(np.float32(0.5) * pb + np.float32(0.5) * blur(rn)))
        else:
            score = (1.0 + top_mean(pb, top_p)) ** w_m * (1.0 + top_mean(rb, top_p)) ** w_r
        maps.append(pixel.astype(np.float32))
        scores.append(score)
    return {"probability": P, "recon_error": R, "pixel_map": np.stack(maps), "score": np.asarray(scores, np.float64)}
