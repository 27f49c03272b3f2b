"""Pictures for people: heatmaps with a colour bar, overlays, mask contours, anomaly panels.

``anomaly_panel`` is the picture ``edgesentry detect isstad`` and ``Result.plot()`` draw, as
anomalib's visualiser does: image | heat map | binary mask | contours on the image, titled
"Anomalous 0.87" / "Good 0.12". The heat map is normalised to the pixel threshold, the same
for every image of a detector (0 -> 0, threshold -> middle of the colour bar, 2 x threshold and
above -> top), so a good part looks cool and a defective one hot, whatever each map's own
range. Without a pixel threshold (an uncalibrated detector) each map is stretched to its own
range and the panel says so. Pillow draws; nothing here imports the rest of edgesentry.
"""

from __future__ import annotations

import os
from typing import Any

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


def _lut(anchors: np.ndarray, n: int = 256) -> np.ndarray:
    pos = np.linspace(0.0, len(anchors) - 1, n)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(anchors) - 1)
    frac = (pos - lo)[:, None]
    return np.round(anchors[lo] * (1 - frac) + anchors[hi] * frac).astype(np.uint8)


_INFERNO_LUT = _lut(_INFERNO)  # 256 colours: a table look-up per pixel, not an interpolation


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to uint8 RGB (inferno, 256 levels); NaN becomes mid grey."""
    values = np.asarray(values)
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    rgb = _INFERNO_LUT[(v * 255.0 + 0.5).astype(np.intp)]
    nan = np.isnan(values)
    if nan.any():
        rgb[nan] = 128
    return rgb


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


# ------------------------------------------------------------------------- anomaly panels
_GOOD, _BAD, _NEUTRAL = (20, 140, 60), (200, 30, 30), (60, 60, 60)
_CONTOUR = (255, 40, 40)


def threshold_scale(amap: np.ndarray, pixel_threshold: float | None) -> tuple[np.ndarray, float, float]:
    """``amap`` on the colour scale of ``anomaly_panel``: (values in [0, 1], value at 0, value at 1).

    With a positive ``pixel_threshold`` the scale is fixed by it (0 -> 0, threshold -> 0.5,
    2 x threshold -> 1), the same for every image; otherwise the map's own min and max.
    """
    amap = np.asarray(amap, dtype=np.float64)
    if pixel_threshold is not None and np.isfinite(pixel_threshold) and pixel_threshold > 0:
        lo, hi = 0.0, 2.0 * float(pixel_threshold)
        return np.clip(amap / hi, 0.0, 1.0), lo, hi
    norm, lo, hi = _normalise(amap, None, None)
    return np.clip(norm, 0.0, 1.0), lo, hi


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
    except TypeError:
        return ImageFont.load_default()


def _fit(width: int, height: int, tile: int) -> tuple[int, int]:
    scale = tile / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def verdict(score: float | None, label: bool | None) -> tuple[str, tuple[int, int, int]]:
    """The panel title and its colour: "Anomalous 0.87" (red), "Good 0.12" (green), or "score 0.12"."""
    value = "n/a" if score is None or not np.isfinite(score) else f"{score:.2f}"
    if label is None:
        return f"score {value} (no threshold)", _NEUTRAL
    return (f"Anomalous {value}", _BAD) if label else (f"Good {value}", _GOOD)


def anomaly_panel(
    amap: np.ndarray,
    *,
    image: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    pixel_threshold: float | None = None,
    score: float | None = None,
    label: bool | None = None,
    tile: int = 256,
    alpha: float = 0.5,
):
    """A PIL image: image | heat map | binary mask | contours on the image, plus a colour bar.

    Args:
        amap: (H, W) anomaly map at the image's resolution.
        image: (H, W, 3) uint8 RGB; without it the heat map is drawn alone and the contours
            on a grey canvas.
        mask: (H, W) bool; default ``amap >= pixel_threshold`` when a threshold is given.
        pixel_threshold: the map value of the mask's boundary; fixes the colour scale.
        score, label: the image verdict for the title ("Anomalous 0.87" / "Good 0.12").
        tile: the longer side of each of the four pictures, in pixels.
        alpha: weight of the heat map over the image.
    """
    from PIL import Image, ImageDraw

    amap = np.asarray(amap, dtype=np.float64)
    h, w = amap.shape
    if mask is None and pixel_threshold is not None:
        mask = amap >= pixel_threshold
    tw, th = _fit(w, h, tile)
    norm, lo, hi = threshold_scale(amap, pixel_threshold)
    # resample the values, then colour the tile (colouring first would cost the full resolution)
    small = np.asarray(Image.fromarray(norm.astype(np.float32), mode="F").resize((tw, th), Image.BILINEAR))
    heat = Image.fromarray(colormap(small))
    if image is not None:
        base = Image.fromarray(np.asarray(image, np.uint8)).resize((tw, th), Image.BILINEAR)
    else:
        base = Image.new("RGB", (tw, th), (128, 128, 128))
    small_mask = np.zeros((th, tw), bool)
    if mask is not None:
        small_mask = np.asarray(Image.fromarray(np.asarray(mask, np.uint8) * 255).resize((tw, th), Image.NEAREST)) > 0
    blended = Image.blend(base, heat, alpha) if image is not None else heat
    contour = np.asarray(base).copy()
    edge = mask_contour(small_mask)
    edge[1:, :] |= edge[:-1, :].copy()  # two pixels wide, so it shows at any zoom
    edge[:, 1:] |= edge[:, :-1].copy()
    contour[edge] = _CONTOUR
    tiles = [base, blended, Image.fromarray(small_mask.astype(np.uint8) * 255).convert("RGB"),
             Image.fromarray(contour)]
    names = ["image", "heat map", "mask", "contours"]
    if image is None:
        tiles, names = tiles[1:], names[1:]

    pad, head, foot, bar_w, text_w = 6, 34, 18, 14, 64
    width = pad + len(tiles) * (tw + pad) + bar_w + text_w
    canvas = Image.new("RGB", (width, head + th + foot), "white")
    draw = ImageDraw.Draw(canvas)
    title, colour = verdict(score, label)
    draw.text((pad, 4), title, fill=colour, font=_font(22))
    small = _font(12)
    for i, (picture, name) in enumerate(zip(tiles, names)):
        x = pad + i * (tw + pad)
        canvas.paste(picture, (x, head))
        draw.text((x, head + th + 3), name, fill="black", font=small)
    bar_x = pad + len(tiles) * (tw + pad)
    ramp = np.linspace(1.0, 0.0, th)[:, None].repeat(bar_w, axis=1)
    canvas.paste(Image.fromarray(colormap(ramp)), (bar_x, head))
    ticks = [(0.0, f"{lo:.3g}"), (0.5, f"{(lo + hi) / 2:.3g}"), (1.0, f"{hi:.3g}")]
    if pixel_threshold is not None and hi == 2.0 * float(pixel_threshold):
        ticks[1] = (0.5, f"thr {pixel_threshold:.3g}")
    for frac, text in ticks:
        y = head + int((1 - frac) * (th - 1))
        draw.line([(bar_x + bar_w, y), (bar_x + bar_w + 4, y)], fill="black")
        draw.text((bar_x + bar_w + 6, max(head, min(y - 6, head + th - 12))), text, fill="black", font=small)
    if pixel_threshold is None:
        draw.text((pad + (len(tiles) - 1) * (tw + pad), 4), "per-image colour scale (uncalibrated)",
                  fill=_NEUTRAL, font=small)
    return canvas


def score_chart(values: np.ndarray, *, threshold: float | None = None, title: str = "", labels: list[str] | None = None,
                width: int = 640, height: int = 200):
    """A PIL bar chart of scores (MAVD snippet scores, MDMF class probabilities) with the threshold."""
    from PIL import Image, ImageDraw

    v = np.asarray(values, dtype=np.float64).ravel()
    top = max(1.0, float(np.nanmax(v)) if v.size else 1.0, threshold or 0.0)
    head, foot, pad = 28, 18 if labels else 6, 6
    canvas = Image.new("RGB", (width, head + height + foot), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 4), title, fill="black", font=_font(18))
    n = max(1, v.size)
    step = (width - 2 * pad) / n
    for i, value in enumerate(v):
        bar = 0 if not np.isfinite(value) else int(height * max(value, 0.0) / top)
        colour = _BAD if threshold is not None and value >= threshold else (70, 110, 190)
        x0 = pad + int(i * step)
        draw.rectangle([x0, head + height - bar, max(x0, pad + int((i + 1) * step) - 1), head + height], fill=colour)
        if labels:
            draw.text((x0, head + height + 3), str(labels[i])[: max(1, int(step // 7))], fill="black", font=_font(11))
    if threshold is not None:
        y = head + height - int(height * threshold / top)
        draw.line([(pad, y), (width - pad, y)], fill=_BAD, width=1)
    return canvas
