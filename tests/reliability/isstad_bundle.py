"""The tiny ISSTAD bundle (seeded reference weights, ViT 64-d, 12 pixel heads, 224 x 224)."""

from __future__ import annotations

from pathlib import Path

import pytest


def convert_tiny(shared: Path, out: Path) -> Path:
    """Convert ``reference/isstad/tiny_stage2_seed0.pt`` with its config through the public API."""
    pytest.importorskip("torch")
    import edgesentry

    ref = shared / "reference" / "isstad"
    ckpt, config = ref / "tiny_stage2_seed0.pt", ref / "tiny_stage2_config.json"
    if not ckpt.is_file() or not config.is_file():
        pytest.skip(f"ISSTAD tiny reference weights not found under {ref}")
    return edgesentry.convert("isstad", ckpt, output=out, config=config).path
