"""ONNX files written with their weights streamed: one tensor in memory at a time, not three models.

``torch.onnx.export`` (TorchScript exporter) builds the whole ``ModelProto`` with every weight
copied into it, serialises it to a string and hands Python a bytes copy of that; ``onnx.load``
of the bytes and ``SerializeToString`` add two more. For the ViT-L ISSTAD graph (1.37 GB of
weights) that was most of a 16 GB peak. Here the exporter still traces, constant-folds and
de-duplicates the initializers exactly as before, but ``exported_without_weights`` takes the
finished initializers out of its hands just before it would serialise them: the graph comes
back with them as typed inputs (kilobytes), and ``write_model`` writes the file itself, the
graph and then each initializer as a ``TensorProto`` with ``raw_data``, straight from the
tensor's memory.

The file is the same ONNX as before, node for node and value for value (the initializers keep
the exporter's names and order), so parity tables and TensorRT lint do not change; the tests
compare it with the in-memory export. If a future torch stops calling the hook, the export falls
back to the in-memory path (same file, more memory) and says so in the log.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from edgesentry.bundle import _encode_varint

log = logging.getLogger("edgesentry.export")

#: protobuf field numbers (onnx.proto): ModelProto.graph, GraphProto.initializer, TensorProto.raw_data
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9
#: what one protobuf message can hold; ONNX files past it need external data
PROTOBUF_LIMIT = (1 << 31) - 1

_HOOK_LOCK = threading.Lock()


def _tag(field: int) -> bytes:
    """Key of a length-delimited field (wire type 2)."""
    return _encode_varint(field << 3 | 2)


@contextlib.contextmanager
def exported_without_weights() -> Iterator[dict[str, Any]]:
    """While active, ``torch.onnx.export(..., dynamo=False)`` writes initializers as graph inputs
    and the yielded dict receives them (name -> tensor, the exporter's order).

    The TorchScript exporter passes its final initializers through
    ``torch._C._jit_pass_onnx_deduplicate_initializers`` right before serialising; the hook runs
    that pass unchanged, keeps its result and gives the serialiser an empty dict. The dict stays
    empty when the exporter never called the pass (another torch): callers then use the proto
    as it came, weights embedded.
    """
    import torch

    captured: dict[str, Any] = {}
    original = torch._C._jit_pass_onnx_deduplicate_initializers

    def keep(graph: Any, params: Any, training: bool) -> dict[str, Any]:
        captured.update(original(graph, params, training))
        return {}

    with _HOOK_LOCK:
        torch._C._jit_pass_onnx_deduplicate_initializers = keep
        try:
            yield captured
        finally:
            torch._C._jit_pass_onnx_deduplicate_initializers = original


def _describe(tensor: Any) -> tuple[int, list[int], int]:
    """(ONNX data type, dims, byte size) of a torch tensor or numpy array, without touching its data."""
    import numpy as np
    import onnx
    import torch

    if isinstance(tensor, torch.Tensor):
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
            return onnx.TensorProto.BFLOAT16, list(tensor.shape), tensor.numel() * 2
        dtype = torch.empty(0, dtype=tensor.dtype).numpy().dtype
        return onnx.helper.np_dtype_to_tensor_dtype(dtype), list(tensor.shape), tensor.numel() * dtype.itemsize
    array = np.asarray(tensor)
    return onnx.helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape), array.nbytes


def _raw(tensor: Any) -> memoryview:
    """The little-endian bytes of a torch tensor or numpy array (a copy only when it is not
    contiguous, e.g. a transposed weight the exporter folded as a view)."""
    import numpy as np
    import torch

    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        if tensor.dtype == torch.bfloat16:  # its bits as int16
            tensor = tensor.view(torch.int16)
        array = tensor.numpy()
    else:
        array = np.ascontiguousarray(tensor).reshape(-1)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return memoryview(array).cast("B")


def _initializer(name: str, tensor: Any) -> tuple[bytes, int]:
    """(the ``initializer`` field up to the raw bytes, the raw bytes' size) of one tensor."""
    import onnx

    data_type, dims, nbytes = _describe(tensor)
    proto = onnx.TensorProto(name=name, data_type=data_type)  # fields 1, 2, 8; raw_data (9) follows
    proto.dims.extend(dims)
    head = proto.SerializeToString() + _tag(_TENSOR_RAW_DATA) + _encode_varint(nbytes)
    return _tag(_GRAPH_INITIALIZER) + _encode_varint(len(head) + nbytes) + head, nbytes


def graph_inputs_to_initializers(model: Any, weights: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the graph inputs that ``weights`` will fill (the hook made them inputs); return
    ``weights`` in the order of those inputs, the order torch writes initializers in.

    Raises:
        ValueError: a weight is not a graph input of ``model`` (the hook captured something
            this graph does not use).
    """
    inputs = [i.name for i in model.graph.input]
    stray = sorted(set(weights) - set(inputs))
    if stray:
        raise ValueError(f"captured initializers {stray[:5]} are not inputs of the exported graph")
    kept = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return {name: weights[name] for name in inputs if name in weights}


def write_model(path: str | Path, model: Any, weights: Mapping[str, Any]) -> int:
    """Write ``model`` (a ModelProto without initializer data) plus ``weights`` as its
    initializers to ``path``, one tensor at a time; return the file size.

    The bytes parse as the ``ModelProto`` whose graph holds ``weights`` as initializers (field
    order inside the graph: the graph's own fields, then the initializers in ``weights`` order).

    Raises:
        ValueError: the file would pass protobuf's 2 GiB limit.
    """
    graph_bytes = model.graph.SerializeToString()
    heads = {name: _initializer(name, tensor) for name, tensor in weights.items()}
    graph_size = len(graph_bytes) + sum(len(head) + nbytes for head, nbytes in heads.values())
    rest = type(model)()
    rest.CopyFrom(model)
    rest.ClearField("graph")
    model_head = rest.SerializeToString() + _tag(_MODEL_GRAPH) + _encode_varint(graph_size)
    total = len(model_head) + graph_size
    if total > PROTOBUF_LIMIT:
        raise ValueError(f"the graph with its weights is {total / 2**30:.2f} GiB; one ONNX file holds at most 2 GiB "
                         "(protobuf's limit)")
    with open(path, "wb") as fh:
        fh.write(model_head)
        fh.write(graph_bytes)
        for name, tensor in weights.items():
            head, nbytes = heads[name]
            raw = _raw(tensor)  # only this tensor's contiguous copy (if any) is alive
            if raw.nbytes != nbytes:
                raise ValueError(f"initializer {name!r} has {raw.nbytes} bytes, expected {nbytes}")
            fh.write(head)
            fh.write(raw)
    size = Path(path).stat().st_size
    if size != total:  # our arithmetic and the bytes written must agree, or the file is garbage
        raise ValueError(f"wrote {size} bytes to {path}, expected {total}")
    return size


# ------------------------------------------------------------------------------ reading
#: TensorProto fields that hold data (float_data, int32_data, string_data, int64_data, raw_data,
#: double_data, uint64_data); a skeleton keeps the rest (dims, data_type, name, ...)
_TENSOR_DATA_FIELDS = frozenset({4, 5, 6, 7, 9, 10, 11})
#: initializers up to this size keep their data in a skeleton (shape constants, small tables)
SKELETON_KEEP_BYTES = 1 << 16


def _fields(fh: Any, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, key offset, value offset, end offset) of each field of the protobuf message
    stored in bytes ``[start, end)`` of ``fh``; values are skipped, never read."""
    import os

    from edgesentry.bundle import _varint
    from edgesentry.errors import BundleError

    position = start
    while position < end:
        fh.seek(position)  # the caller may have read elsewhere since the last field
        key_at = position
        key = _varint(fh)
        if key is None:
            break
        wire = key & 7
        if wire == 0:
            value_at = fh.tell()
            _varint(fh)
        elif wire == 2:
            length = _varint(fh) or 0
            value_at = fh.tell()
            fh.seek(length, os.SEEK_CUR)
        elif wire in (1, 5):
            value_at = fh.tell()
            fh.seek(8 if wire == 1 else 4, os.SEEK_CUR)
        else:
            raise BundleError(f"{getattr(fh, 'name', 'file')} is not an ONNX model (protobuf wire type {wire} "
                              f"at byte {key_at})")
        if fh.tell() > end:
            raise BundleError(f"{getattr(fh, 'name', 'file')} is truncated (a protobuf field runs past its message)")
        position = fh.tell()
        yield key >> 3, key_at, value_at, position


def _copy(fh: Any, start: int, end: int) -> bytes:
    fh.seek(start)
    return fh.read(end - start)


def _tensor_header_only(fh: Any, start: int, end: int) -> bytes:
    """A serialized TensorProto read from ``[start, end)`` without its data fields."""
    kept = [(a, b) for number, a, _, b in _fields(fh, start, end) if number not in _TENSOR_DATA_FIELDS]
    return b"".join(_copy(fh, a, b) for a, b in kept)


def load_skeleton(path: str | Path, *, keep_bytes: int = SKELETON_KEEP_BYTES) -> Any:
    """The ``ModelProto`` of an ONNX file with the data of its large initializers left on disk.

    Every node, input, output, value_info and metadata entry is read; initializers keep name,
    data type and dims (shape inference and linting need no more), and their data when they are
    at most ``keep_bytes``. Memory: the graph's structure, not its weights.

    Raises:
        BundleError: the file is not a well-formed ONNX model (truncated, not protobuf).
    """
    import onnx
    from google.protobuf.message import DecodeError

    from edgesentry.bundle import _top_level_fields
    from edgesentry.errors import BundleError

    path = Path(path)
    out = bytearray()
    with open(path, "rb") as fh:
        for number, start, end in _top_level_fields(path):
            if number != _MODEL_GRAPH:
                out += _copy(fh, start, end)
                continue
            value_at = _value_offset(fh, start)
            graph = bytearray()
            for field, key_at, body_at, field_end in _fields(fh, value_at, end):
                if field == _GRAPH_INITIALIZER and field_end - body_at > keep_bytes:
                    tensor = _tensor_header_only(fh, body_at, field_end)
                    graph += _tag(_GRAPH_INITIALIZER) + _encode_varint(len(tensor)) + tensor
                else:
                    graph += _copy(fh, key_at, field_end)
            out += _tag(_MODEL_GRAPH) + _encode_varint(len(graph)) + graph
    model = onnx.ModelProto()
    try:
        model.ParseFromString(bytes(out))
    except DecodeError as exc:
        raise BundleError(f"{path} is not an ONNX model: {exc}") from None
    return model


def _value_offset(fh: Any, key_at: int) -> int:
    """Offset of the value of the length-delimited field whose key starts at ``key_at``."""
    from edgesentry.bundle import _varint

    fh.seek(key_at)
    _varint(fh)
    _varint(fh)
    return fh.tell()
