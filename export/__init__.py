"""Export machinery: ONNX graphs with metadata, parity checks, TensorRT engines, serving repos.

A family's exporter lives in ``export/<family>.py`` and defines
``graph_specs(bundle) -> list[GraphSpec]``; ``edgesentry.export.onnx.export_bundle`` turns
them into ONNX files inside the bundle.
"""
