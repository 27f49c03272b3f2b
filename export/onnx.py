"""ONNX export of a bundle: every graph of its family, checked, compared, recorded in ``meta.json``.

The family exporters (``export/<family>.py``, registered below) describe their graphs with
``GraphSpec``; ``export_bundle`` exports each with ``edgesentry.export.graph.export_graph``
into the bundle and records it under ``graphs``.
"""

from __future__ import annotations

import logging
from types import ModuleType

from edgesentry.bundle import MIRRORED_KEYS, Bundle
from edgesentry.errors import ConfigError
from edgesentry.export import fers, isstad, mavd, mdmf
from edgesentry.export.graph import DEFAULT_MEMORY_BUDGET, DEFAULT_OPSET, export_graph, output_spec
from edgesentry.export.parity import ParityReport

log = logging.getLogger("edgesentry.export")

#: family -> its exporter (``graph_specs(bundle) -> list[GraphSpec]``); torch is imported only
#: when a graph is built
EXPORTERS: dict[str, ModuleType] = {"fers": fers, "isstad": isstad, "mavd": mavd, "mdmf": mdmf}


def family_exporter(family: str) -> ModuleType:
    if family not in EXPORTERS:
        raise ConfigError(f"family {family!r} has no exportable graph")
    return EXPORTERS[family]


def export_bundle(
    bundle: Bundle, *, opset: int = DEFAULT_OPSET, check_parity: bool = True, simplify: bool = False,
    memory_budget: float | None = DEFAULT_MEMORY_BUDGET,
) -> dict[str, ParityReport | None]:
    """Export every graph of ``bundle`` into it and record them under ``meta["graphs"]``.

    Each graph's entry holds its file, input spec (dynamic dims by name), the example shapes
    (used by ``validate`` for synthetic inputs), outputs, dynamic axes, profile hints, opset
    and the parity tolerances. ``memory_budget`` (bytes, ``None`` = no limit) bounds the optional
    work of the export (onnxslim); see ``edgesentry.export.graph.export_graph``.
    """
    exporter = family_exporter(bundle.family)
    reports: dict[str, ParityReport | None] = {}
    graphs = dict(bundle.meta.get("graphs", {}))
    base_meta = {k: bundle.meta.get(k) for k in MIRRORED_KEYS}  # metadata_props mirror meta.json
    for spec in exporter.graph_specs(bundle):
        path = bundle.path / spec.file
        reports[spec.name] = export_graph(
            spec, path, opset=opset, metadata=base_meta, check_parity=check_parity, simplify=simplify,
            memory_budget=memory_budget,
        )
        graphs[spec.name] = {
            "file": spec.file,
            "inputs": spec.input_spec(),
            "outputs": spec.outputs,
            "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in spec.dynamic_axes.items()},
            "example_shapes": {k: list(v.shape) for k, v in spec.inputs.items()},
            "input_names": list(spec.inputs),  # positional order (meta.json sorts keys)
            "profile_hints": {k: list(v) for k, v in spec.profile_hints.items()},
            "output_spec": output_spec(path),
            "atol": spec.atol,
            "rtol": spec.rtol,
            "opset": opset,
        }
        bundle.add_file(spec.file)
        log.info("exported %s -> %s", spec.name, path)
    bundle.update_meta(graphs=graphs)
    return reports
