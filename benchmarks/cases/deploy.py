"""GPU check for deployment: the ISSTAD ViT-L/16 graph on ONNX Runtime's CUDA EP vs torch CUDA.

Both run the same graph (random weights, batch 1 and 8, 224 x 224) exported with
``edgesentry.export.graph.export_graph``; ONNX Runtime runs through IOBinding with the input
already on the device (only ``prob`` is copied back, 0.2-1.6 MB), torch on CUDA tensors. The
reference is torch on the CPU. Cases appear only on a GPU machine whose ONNX Runtime has the
CUDA execution provider (``onnxruntime-gpu``); TensorRT is not installed there, so the TensorRT
EP and engines are not part of this check.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ESTIMATE_S = 45.0  # export of ViT-L (~20 s), session build, torch CPU reference, repeats


def gpu_cases(ctx: Any) -> list[Any]:
    if not ctx.gpu:
        return []  # nothing to compile: the graph check needs a GPU
    from gpu_check import GpuCase

    if ctx.plan_only:  # the export and the sessions are the expensive part: plan without building them
        return [GpuCase(kernel="isstad_graph_vitl", tier=tier, size=f"batch {batch} 224x224", run=_planned,
                        reference=_planned, estimate_s=ESTIMATE_S / 4)
                for batch in (1, 8) for tier in ("torch-cuda", "ort-cuda-ep")]
    import onnxruntime as ort
    import torch

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"deploy: ONNX Runtime has no CUDA EP ({ort.get_available_providers()}); install onnxruntime-gpu")
        return []
    from edgesentry.export.graph import GraphSpec, export_graph
    from edgesentry.models.isstad import ISSTADGraph, isstad_vit_large_patch16

    torch.manual_seed(0)
    graph = ISSTADGraph(isstad_vit_large_patch16()).eval()
    example = np.random.default_rng(0).uniform(-1, 1, size=(2, 3, 224, 224)).astype(np.float32)
    spec = GraphSpec("model", lambda: graph, {"image": example}, ["recon", "prob"],
                     dynamic_axes={"image": {0: "batch"}, "recon": {0: "batch"}, "prob": {0: "batch"}})
    path = Path(tempfile.mkdtemp(prefix="es-deploy-")) / "isstad_vitl.onnx"
    export_graph(spec, path, check_parity=False)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), sess_options=opts,
                                   providers=[("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        print(f"deploy: CUDA EP not active ({session.get_providers()})")
        return []
    gpu_graph = ISSTADGraph(isstad_vit_large_patch16()).eval()
    gpu_graph.load_state_dict(graph.state_dict())
    gpu_graph = gpu_graph.cuda()
    cases = []
    for batch in (1, 8):
        x = np.random.default_rng(batch).uniform(-1, 1, size=(batch, 3, 224, 224)).astype(np.float32)
        x_cuda = torch.from_numpy(x).cuda()
        x_ort = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)

        @functools.cache
        def reference(x=x) -> np.ndarray:
            with torch.inference_mode():
                return graph(torch.from_numpy(x))[1].numpy()

        def run_torch(x_cuda=x_cuda) -> Any:
            with torch.inference_mode():
                return gpu_graph(x_cuda)[1]

        def run_ort(x_ort=x_ort) -> np.ndarray:
            binding = session.io_binding()
            binding.bind_ortvalue_input("image", x_ort)
            binding.bind_output("recon", "cuda", 0)
            binding.bind_output("prob", "cpu")
            session.run_with_iobinding(binding)
            return binding.get_outputs()[1].numpy()

        flops = 2 * 304e6 * 197 * batch * 1.5  # ~ViT-L forward + decoder, order of magnitude only
        for tier, fn in (("torch-cuda", run_torch), ("ort-cuda-ep", run_ort)):
            cases.append(GpuCase(kernel="isstad_graph_vitl", tier=tier, size=f"batch {batch} 224x224", run=fn,
                                 reference=reference, flops=flops, atol=2e-3, rtol=2e-3,
                                 notes={"onnx": path.name}, estimate_s=ESTIMATE_S / 4))
    return cases


def _planned() -> Any:
    raise RuntimeError("plan-only case: not built")
