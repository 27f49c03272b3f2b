"""Reduced-precision rows: each graph on each backend x precision, against FP32 ONNX Runtime.

For every graph: the FP32 ONNX, its INT8 QDQ graph (``edgesentry.export.quantize.quantize_onnx``,
calibrated on a few inputs), run by ONNX Runtime and OpenVINO (plus OpenVINO BF16 / FP16 where the
CPU has them, and ONNX Runtime's dynamic weights-only INT8 for comparison, ``dynamic_int8``),
timed at batch 1 in alternating blocks (``measure_interleaved``), speedups against
``onnxruntime fp32`` in the same run; accuracy columns beside the times on held-aside inputs:
``out_r`` (lowest Pearson r over the graph's outputs), ``max_abs`` (largest absolute error), and
for ISSTAD the pixel-map r and image-score Spearman rho after the fusion kernel.

Graphs: the tiny ISSTAD (reference weights, hazelnut photos), FERS spectral (official ABU 200-band
weights, ABU scenes), MAVD features (official weights, the oracle's features); full runs add the
MDMF RN50 visual tower (random weights, one 8-frame clip). ``EDGESENTRY_BENCH_VITL=1`` adds the
ISSTAD ViT-L/16 graph (random weights; exported straight with ``torch.onnx.export`` in a child
process to keep memory low; 8 photos calibrate, 35 are compared): it takes several minutes.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from _harness import Row, measure_interleaved

NOTES = [
    "precision: graph only, batch 1; speedup vs 'onnxruntime fp32' in the same run (alternating blocks); "
    "out_r = lowest Pearson r over outputs vs FP32 on held-aside inputs, max_abs = largest abs error; "
    "isstad: map_r / score_rho after the fusion kernel.",
]


def dynamic_int8(fp32: Path, dst: Path) -> Path:
    """ONNX Runtime's dynamic (weights-only) INT8 of ``fp32``: MatMul / Gemm weights per output
    channel in the reduced 7-bit range (AVX2 without VNNI), activations quantised at run time,
    heads and stems kept float as in ``quantize_onnx``. Benchmark-only: measured against the
    static QDQ variant that ``edgesentry quantize`` ships (on this AVX2 CPU it is faster on the
    ViT-L matmuls but still fails the map-r gate, see ``docs/precision.md``)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgesentry.export.quantize import EXTERNAL_DATA_BYTES, _name_nodes, float_heads, float_stems

    model = onnx.load(str(fp32))
    _name_nodes(model)
    dims = {i.name: len(i.dims) for i in model.graph.initializer}
    # per-channel dynamic MatMul takes 2-D weights only (ORT rejects MAVD's 3-D per-head ones)
    not_2d = {n.name for n in model.graph.node if n.op_type == "MatMul" and dims.get(n.input[1], 2) != 2}
    keep = sorted(set(float_heads(model)) | set(float_stems(model)) | not_2d)
    big = fp32.stat().st_size > EXTERNAL_DATA_BYTES
    with tempfile.TemporaryDirectory(prefix="edgesentry-dyn-", dir=dst.parent) as tmp:  # the named copy goes
        named = Path(tmp) / "named.onnx"
        onnx.save_model(model, str(named), save_as_external_data=big)
        del model
        quantize_dynamic(str(named), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=keep, use_external_data_format=big)
    return dst


def _runners(fp32: Path, int8: Path) -> dict[str, Any]:
    import onnx

    from edgesentry.backends import InputSpec, OpenVINORunner, OrtRunner
    from edgesentry.backends.openvino import native_precisions

    model = onnx.load(str(fp32), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = {i.name: InputSpec({1: "float32", 7: "int64"}.get(i.type.tensor_type.elem_type, "float32"),
                                tuple(d.dim_value or None for d in i.type.tensor_type.shape.dim))
              for i in model.graph.input if i.name not in inits}
    outputs = [o.name for o in model.graph.output]
    out = {"onnxruntime fp32": OrtRunner(fp32, inputs, outputs),
           "onnxruntime int8": OrtRunner(int8, inputs, outputs),
           "onnxruntime int8 dynamic": OrtRunner(dynamic_int8(fp32, int8.with_name(f"{fp32.stem}.dyn.onnx")),
                                                 inputs, outputs),
           "openvino fp32": OpenVINORunner(fp32, inputs, outputs),
           "openvino int8": OpenVINORunner(int8, inputs, outputs)}
    for hint, name in (("bf16", "bf16"), ("f16", "fp16")):
        if hint in native_precisions():
            out[f"openvino {name}"] = OpenVINORunner(fp32, inputs, outputs, precision=hint)
    return out


def _accuracy(runners: Mapping[str, Any], feeds: Sequence[dict[str, np.ndarray]],
              post: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], tuple[np.ndarray, float]] | None
              ) -> dict[str, dict[str, Any]]:
    from edgesentry.export.tune import pearson, spearman

    outs = {name: [r.infer(f) for f in feeds] for name, r in runners.items()}
    ref = outs["onnxruntime fp32"]
    acc: dict[str, dict[str, Any]] = {}
    for name, got in outs.items():
        row: dict[str, Any] = {"out_r": min(pearson(np.concatenate([g[k].ravel() for g in got]),
                                                    np.concatenate([e[k].ravel() for e in ref])) for k in ref[0]),
                               "max_abs": max(float(np.abs(g[k].astype(np.float64) - e[k]).max())
                                              for g, e in zip(got, ref) for k in e)}
        if post is not None:
            mine = [post(g, f) for g, f in zip(got, feeds)]
            theirs = [post(e, f) for e, f in zip(ref, feeds)]
            row["map_r"] = pearson(np.concatenate([m.ravel() for m, _ in mine]),
                                   np.concatenate([m.ravel() for m, _ in theirs]))
            row["score_rho"] = spearman([s for _, s in mine], [s for _, s in theirs])
        row["n_inputs"] = len(feeds)
        acc[name] = row
    return acc


def precision_rows(family: str, case: str, fp32: Path, calib: Sequence[dict[str, np.ndarray]],
                   held: Sequence[dict[str, np.ndarray]], *, rounds: int, post: Any = None, size: str = "batch 1",
                   work: Path) -> list[Row]:
    """Quantise ``fp32``, run every variant, time and compare them (see the module docstring)."""
    from edgesentry.export.quantize import quantize_onnx

    int8 = work / f"{fp32.stem}.int8.onnx"
    quantize_onnx(fp32, int8, list(calib))
    runners = _runners(fp32, int8)
    acc = _accuracy(runners, held, post)
    feed = held[0]
    timings = measure_interleaved({k: (lambda r=r: r.infer(feed)) for k, r in runners.items()}, rounds=rounds,
                                  block=2, track_memory=False)
    base = timings["onnxruntime fp32"].p50
    rows = [Row(family, case, name, size, t, extra={k: (round(v, 6) if isinstance(v, float) else v)
                                                     for k, v in acc[name].items()},
                speedup={"vs ORT fp32": base / t.p50}) for name, t in timings.items()]
    for r in runners.values():
        r.deactivate()
    return rows


# ------------------------------------------------------------------------------- cases
def _isstad_post() -> Any:
    from edgesentry.kernels import isstad as isstad_kernels

    def post(out: dict[str, np.ndarray], feed: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        fused, _ = isstad_kernels.isstad_fusion(out["prob"], out["recon"], feed["image"], tier="cpu")
        return np.asarray(fused["pixel_map"]), float(fused["score"][0])

    return post


def _photos(ctx: Any) -> list[dict[str, np.ndarray]]:
    from edgesentry.detectors.isstad import preprocess_rgb
    from edgesentry.io.image import as_image

    root = ctx.shared / "data" / "hazelnut_toy"
    paths = sorted(glob.glob(str(root / "train" / "good" / "*")))
    paths += sorted(glob.glob(str(root / "test" / "*" / "*.jpg")))
    return [{"image": preprocess_rgb(as_image(p)[0])[None]} for p in paths]


def _exported(family: str, source: Path, out: Path, **kwargs: Any) -> Any:
    import edgesentry
    from edgesentry.export.onnx import export_bundle

    bundle = edgesentry.convert(family, source, output=out, **kwargs)
    export_bundle(bundle)
    return bundle


def _isstad_rows(ctx: Any, work: Path) -> list[Row]:
    ref = ctx.shared / "reference" / "isstad"
    bundle = _exported("isstad", ref / "tiny_stage2_seed0.pt", work / "isstad", config=ref / "tiny_stage2_config.json")
    photos = _photos(ctx)
    return precision_rows("isstad", "tiny graph", bundle.path / "model.onnx", photos[:4],
                          photos[8:8 + ctx.scale(16, 4)], rounds=ctx.scale(5, 2), post=_isstad_post(), work=work)


def _fers_rows(ctx: Any, work: Path) -> list[Row]:
    from edgesentry.detectors.fers import prepare_cube
    from edgesentry.io.hsi import read_cube

    weights = ctx.shared / "reference/fers/weights/FERS_ABU/saved_models/aviris/200bands"
    bundle = _exported("fers", weights, work / "fers")
    scenes = ["abu-airport-2", "abu-urban-1", "abu-airport-3", "abu-urban-4", "los-angeles-1"]
    feeds = [{"x": prepare_cube(read_cube(ctx.shared / "data/abu" / f"{s}.mat")[..., :200], 200)} for s in scenes]
    return precision_rows("fers", "spectral graph (ABU 200)", bundle.path / "spectral.onnx", feeds[:2],
                          feeds[2:], rounds=ctx.scale(5, 2), size="1x200x100x100", work=work)


def _mavd_rows(ctx: Any, work: Path) -> list[Row]:
    bundle = _exported("mavd", ctx.shared / "reference/mavd/weights/saved_models/ap86.07", work / "mavd")
    oracle = np.load(ctx.shared / "reference/mavd/oracle.npz")
    cases = ["case_B5_T1", "case_B1_T33", "case_B5_T300", "case_B5_T64", "case_B5_T7"]
    feeds = [{k: oracle[f"{c}/{k}"] if k != "audio" else oracle[f"{c}/{k}"][:1] for k in ("rgb", "flow", "audio")}
             for c in cases]
    return precision_rows("mavd", "features graph", bundle.path / "features.onnx", feeds[:2], feeds[2:],
                          rounds=ctx.scale(5, 2), size="5 crops x T=300 (timed)", work=work)


_EXPORT_CHILD = """
import sys, numpy as np, torch
which, path = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
if which == "vitl":
    from edgesentry.models.isstad import ISSTADGraph, isstad_vit_large_patch16
    net = ISSTADGraph(isstad_vit_large_patch16()).eval()
    x, names, outs = torch.zeros(1, 3, 224, 224), ["image"], ["recon", "prob"]
else:
    from edgesentry.models import mdmf as M
    net = M.MDMFVisual(M.MDMF(M.MDMFConfig(text=None))).eval()
    x, names, outs = torch.zeros(1, 8, 3, 224, 224), ["frames"], ["features"]
with torch.inference_mode():
    torch.onnx.export(net, (x,), path, input_names=names, output_names=outs, opset_version=17, dynamo=False,
                      dynamic_axes={names[0]: {0: "batch"}})
"""


def _export_child(which: str, path: Path) -> Path:
    """Random-weight graphs straight through ``torch.onnx.export`` in a child process (no parity
    run, no simplifier): the smallest-memory route, and the parent never holds torch's copy."""
    if not path.exists():
        subprocess.run([sys.executable, "-c", _EXPORT_CHILD, which, str(path)], check=True)
    return path


def _mdmf_rows(ctx: Any, work: Path) -> list[Row]:
    onnx_path = _export_child("rn50", work / "rn50_visual.onnx")
    rng = np.random.default_rng(0)
    feeds = [{"frames": rng.uniform(0, 1, (1, 8, 3, 224, 224)).astype(np.float32)} for _ in range(4)]
    return precision_rows("mdmf", "RN50 visual (random weights)", onnx_path, feeds[:2], feeds[2:], rounds=2,
                          size="1 clip 8x3x224x224", work=work)


def _vit_large_rows(ctx: Any, work: Path) -> list[Row]:
    onnx_path = _export_child("vitl", Path(os.environ.get("EDGESENTRY_BENCH_VITL_DIR", work)) / "isstad_vitl.onnx")
    photos = _photos(ctx)
    return precision_rows("isstad", "ViT-L/16 graph (random weights)", onnx_path, photos[:8], photos[8:],
                          rounds=3, post=_isstad_post(), work=onnx_path.parent)


def latency_rows(ctx: Any) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edgesentry-precision-") as tmp:
        work = Path(tmp)
        rows += _isstad_rows(ctx, work)
        rows += _fers_rows(ctx, work)
        rows += _mavd_rows(ctx, work)
        if not ctx.quick:
            rows += _mdmf_rows(ctx, work)
        if os.environ.get("EDGESENTRY_BENCH_VITL") == "1":
            rows += _vit_large_rows(ctx, work)
    return rows
