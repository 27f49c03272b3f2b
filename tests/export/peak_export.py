"""Child process of ``test_memory.py``: peak resident memory of one ``export_graph`` call.

``python -m tests.export.peak_export OUT_DIR [--simplify]`` exports a stack of linear layers
(``LAYERS`` x ``WIDTH``^2 float32 weights, about 128 MB) with parity on, after a warm-up
export of a small graph so that the libraries' own memory (torch, ONNX, ONNX Runtime) is in the
baseline. It prints one JSON line: the weights' bytes, the high-water mark of the resident set
before and after the export (``ru_maxrss``, exact, not sampled) and their difference over the
weights. Run with another checkout's interpreter to compare exporters.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import numpy as np

WIDTH, LAYERS = 2048, 8


def _spec(width: int, layers: int, name: str):
    import torch
    from torch import nn

    from edgesentry.export.graph import GraphSpec

    def build() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)]).eval()

    tokens = np.random.default_rng(0).standard_normal((2, 4, width)).astype(np.float32)  # 3-D: MatMul, not Gemm
    return GraphSpec(name, build, {"x": tokens}, ["y"], dynamic_axes={"x": {0: "batch"}}, atol=1e-3, rtol=1e-3)


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def main(out: Path, simplify: bool) -> dict[str, float]:
    from edgesentry.export.graph import export_graph

    export_graph(_spec(64, 2, "warmup"), out / "warmup.onnx", simplify=simplify)
    before = _peak()
    export_graph(_spec(WIDTH, LAYERS, "model"), out / "model.onnx", simplify=simplify)
    after = _peak()
    weights = LAYERS * (WIDTH * WIDTH + WIDTH) * 4
    return {"weights": weights, "before": before, "after": after, "ratio": (after - before) / weights}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), "--simplify" in sys.argv[2:])))
