"""Flag groups shared by verbs, defined once so they mean the same everywhere."""

from __future__ import annotations

import argparse

from edgesentry.errors import ConfigError


def add_kernel_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kernels",
        default="auto",
        choices=["auto", "reference", "cpu", "triton", "cuda"],
        help="post-processing kernel tier (default: auto = fastest that runs here)",
    )


def add_backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnxruntime", "openvino", "tensorrt"],
        help="graph backend (default: auto = onnxruntime if the bundle has ONNX, else torch)",
    )


def add_threshold_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=float, default=None, help="score threshold (default: bundle's, if any)")


def parse_pair(text: str, name: str) -> tuple[int, int]:
    """``"3,9"`` -> ``(3, 9)``."""
    try:
        a, b = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be two integers 'A,B'; got {text!r}") from None
    return a, b


def parse_bands(text: str | None) -> int | list[int] | None:
    """``"100"`` -> first 100 bands; ``"0,5,9"`` or ``"10:50"`` -> explicit indices."""
    if text is None:
        return None
    try:
        if ":" in text:
            start, stop = (int(v) for v in text.split(":"))
            return list(range(start, stop))
        if "," in text:
            return [int(v) for v in text.split(",")]
        return int(text)
    except ValueError:
        raise ConfigError(f"--bands must be N, 'i,j,k' or 'start:stop'; got {text!r}") from None
