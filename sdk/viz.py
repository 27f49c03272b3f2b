"""Pictures for people: heatmaps with a colour bar, overlays and mask contours (PNG via Pillow)."""

from __future__ import annotations

import os

import numpy as np

# Anchors of matplotlib's "inferno" map (public-domain colour data), interpolated to 256.
_INFERNO = np.array(
    [
        [0, 0, 4],
        [31, 12, 72],
        [85, 15, 109],
        [136, 34, 106],
        [186, 54, 85],
        [227, 89, 51],
        [249, 140, 10],
        [249, 201, 50],
        [252, 255, 164],
    ],
    dtype=np.float64,
)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to uint8 RGB (inferno); NaN becomes mid grey."""
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    pos = v * (len(_INFERNO) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(_INFERNO) - 1)
    frac = (pos - lo)[..., None]
    rgb = _INFERNO[lo] * (1 - frac) + _INFERNO[hi] * frac
    rgb[np.isnan(values)] = 128
    return rgb.astype(np.uint8)


def _normalise(amap: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[np.ndarray, float, float]:
    finite = amap[np.isfinite(amap)]
    lo = float(finite.min()) if vmin is None and finite.size else float(vmin or 0.0)
    hi = float(finite.max()) if vmax is None and finite.size else float(vmax or 1.0)
    span = hi - lo if hi > lo else 1.0
    return (amap - lo) / span, lo, hi


def heatmap_image(
    amap: np.ndarray,
    *,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    scale: int | None = None,
):
    """A PIL image of ``amap`` (H, W) with a labelled colour bar on the right."""
    from PIL import Image, ImageDraw, ImageFont

    amap = np.asarray(amap, dtype=np.float64)
    norm, lo, hi = _normalise(amap, vmin, vmax)
    scale = scale or max(1, 384 // max(amap.shape))
    body = Image.fromarray(colormap(norm)).resize((amap.shape[1] * scale, amap.shape[0] * scale), Image.NEAREST)
    bar_w, pad, text_w, top = 16, 8, 70, 18 if title else 6
    canvas = Image.new("RGB", (body.width + pad + bar_w + text_w, body.height + top + 6), "white")
    canvas.paste(body, (0, top))
    ramp = np.linspace(1.0, 0.0, body.height)[:, None].repeat(bar_w, axis=1)
    canvas.paste(Image.fromarray(colormap(ramp)), (body.width + pad, top))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + int((1 - frac) * (body.height - 1))
        draw.line([(body.width + pad + bar_w, y), (body.width + pad + bar_w + 4, y)], fill="black")
        draw.text(
            (body.width + pad + bar_w + 6, max(0, y - 5)), f"{lo + frac * (hi - lo):.4g}", fill="black", font=font
        )
    if title:
        draw.text((2, 2), title, fill="black", font=font)
    return canvas


def save_heatmap(amap: np.ndarray, path: str | os.PathLike, **kwargs) -> None:
    """Write ``heatmap_image(amap, **kwargs)`` as PNG."""
    heatmap_image(amap, **kwargs).save(path)


def mask_contour(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask (4-neighbour erosion difference)."""
    m = np.asarray(mask, dtype=bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def overlay(
    image_rgb: np.ndarray,
    amap: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    alpha: float = 0.45,
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Blend a heatmap over an (H, W, 3) uint8 RGB image and draw the mask contour in green."""
    norm, _, _ = _normalise(np.asarray(amap, np.float64), vmin, vmax)
    heat = colormap(norm).astype(np.float64)
    out = (1 - alpha) * np.asarray(image_rgb, np.float64) + alpha * heat
    if mask is not None:
        out[mask_contour(mask)] = (0, 255, 0)
    return out.clip(0, 255).astype(np.uint8)
