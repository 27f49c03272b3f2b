"""Signed bundles: what verifying a signature costs when a bundle is opened, tiny and large.

Three ways to open the same signed bundle, timed in alternating blocks in this process:

- ``open (sha256 of meta.json)``: ``Bundle.open`` as without signatures (every listed file hashed
  against ``meta.json``): the baseline;
- ``verify_bundle``: the signature alone (OpenSSF model signing: the DSSE signature, then every
  file of the directory hashed and compared with the signed statement);
- ``open (trust=)``: ``Bundle.open(path, trust=policy)``, what ``edgesentry.load(...,
  trusted_keys=...)`` does: the signature first, then ``meta.json``, whose sha256s are compared
  with the signed ones instead of hashing the files again.

Bundles: the tiny ISSTAD bundle (``tiny_stage2_seed0.pt`` of ../shared, converted; an RX bundle
when ../shared is absent) and a synthetic bundle of ``EDGESENTRY_BENCH_SIGN_MB`` MB (default 1400
in a full run, the size of the ViT-L bundle; 32 with ``--quick``): a valid safetensors file of
random float32 plus a small ``meta.json``. Hashing cost does not depend on what the bytes are, so
the synthetic bundle stands in for the ViT-L one without converting its checkpoint. Files are in
the page cache (written just before): cold reads from disk add the disk's read time.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from _harness import Row, add_speedups, measure_interleaved

NOTES = [
    "signing: 'speedup' = p50 of `open (sha256 of meta.json)` / p50 of the row; `open (trust=)` is what "
    "`edgesentry.load(bundle, trusted_keys=...)` adds up to (signature first, then meta.json's sha256s taken from "
    "the signed statement, so files are hashed once). Synthetic bundle: random float32 safetensors of the stated size.",
]


def _keys(folder: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / "bench.pem", folder / "bench.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _tiny_bundle(ctx: Any, out: Path) -> tuple[Path, str]:
    import edgesentry

    ref = ctx.shared / "reference" / "isstad"
    if (ref / "tiny_stage2_seed0.pt").exists():
        try:
            edgesentry.convert("isstad", ref / "tiny_stage2_seed0.pt", output=out,
                               config=ref / "tiny_stage2_config.json", object_class="synthetic")
            return out, "isstad tiny"
        except ImportError:  # no torch to read the checkpoint
            pass
    edgesentry.convert("rx", output=out)
    return out, "rx (no ../shared)"


def _synthetic_bundle(out: Path, megabytes: int) -> Path:
    """A bundle whose weights file is a valid safetensors of ``megabytes`` MB, written in 16 MiB pieces."""
    from edgesentry.bundle import write_bundle

    bundle = write_bundle(out, "isstad", config={"synthetic": True})
    n = megabytes * (1 << 20) // 4
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    header += b" " * (-len(header) % 8)
    rng = np.random.default_rng(0)
    with open(out / "weights.safetensors", "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        left = n
        while left:
            k = min(left, 4 << 20)
            fh.write(rng.standard_normal(k, dtype=np.float32).tobytes())
            left -= k
    bundle.add_file("weights.safetensors")
    return out


def _rows(path: Path, label: str, private: Path, public: Path, ctx: Any) -> list[Row]:
    from edgesentry.bundle import Bundle
    from edgesentry.signing import TrustPolicy, sign_bundle, verify_bundle

    sign_bundle(path, private)
    policy = TrustPolicy.from_keys([public])
    size_mb = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    size = f"{label} {size_mb:.1f} MB"
    fns = {
        "open (sha256 of meta.json)": lambda: Bundle.open(path),
        "verify_bundle": lambda: verify_bundle(path, policy),
        "open (trust=)": lambda: Bundle.open(path, trust=policy),
    }
    big = size_mb > 100
    timings = measure_interleaved(fns, rounds=ctx.scale(3 if big else 10, 2), block=1 if big else 3,
                                  track_memory=False)
    rows = [Row("signing", "open bundle", impl, size, t, extra={"MB/s": size_mb / t.p50})
            for impl, t in timings.items()]
    add_speedups(rows, "open (sha256 of meta.json)", "vs unsigned open")
    return rows


def latency_rows(ctx: Any) -> list[Row]:
    import importlib.util

    if importlib.util.find_spec("model_signing") is None:
        print("signing: model-signing is not installed (pip install 'edgesentry[signing]'); no rows")
        return []
    megabytes = int(os.environ.get("EDGESENTRY_BENCH_SIGN_MB", ctx.scale(1400, 32)))
    root = Path(tempfile.mkdtemp(prefix="es-bench-sign-"))
    try:
        private, public = _keys(root)
        tiny, label = _tiny_bundle(ctx, root / "tiny")
        rows = _rows(tiny, label, private, public, ctx)
        rows += _rows(_synthetic_bundle(root / "large", megabytes), "synthetic", private, public, ctx)
        return rows
    finally:
        shutil.rmtree(root, ignore_errors=True)
