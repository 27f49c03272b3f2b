"""Hostile files crafted byte by byte, shared by the hardening tests (tests/core, tests/stream,
tests/reliability): PNG headers that declare more pixels than they hold, and real
decompression bombs."""

from __future__ import annotations

import struct
import zlib


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, *, complete: bool = False, color_type: int = 0) -> bytes:
    """An 8-bit PNG of ``width`` x ``height`` (grey; ``color_type`` 2 = RGB, 6 = RGBA).

    ``complete`` writes every (zero) row, compressed: a real decompression bomb, tiny on disk.
    Otherwise the image data holds one row only: the header alone is the attack.
    """
    head = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    row = b"\x00" + bytes(width * channels)
    comp = zlib.compressobj(9)
    data = comp.compress(row * (height if complete else 1)) + comp.flush()
    return head + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
