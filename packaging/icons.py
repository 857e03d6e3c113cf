#!/usr/bin/env python3
"""Draw xapsd's package icon as PNG (Python standard library only).

  icons.py SIZE OUT.png

The design: a blue rounded square, a white envelope, and an orange dot at
the top right, the badge a phone shows for new mail. Drawn from shapes at
any size, so the Synology package's 64x64 and 256x256 icons are made at
build time instead of being committed as binaries. Edges are smoothed by
sampling each pixel on a grid: 4x4 for the small icon, 2x2 for the large
one, whose edges span more pixels anyway (and which costs 16 times more).
"""

from __future__ import annotations

import struct
import sys
import zlib

BACKGROUND = (0x1F, 0x5F, 0xBF)
ENVELOPE = (0xFF, 0xFF, 0xFF)
FOLD = (0xB8, 0xCC, 0xEA)
BADGE = (0xFF, 0x8C, 0x1A)


def _in_rounded_square(x: float, y: float) -> bool:
    r = 0.2
    cx = min(max(x, r), 1 - r)
    cy = min(max(y, r), 1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def _on_fold(x: float, y: float) -> bool:
    # The flap's two edges, from the top corners to the envelope's middle.
    left, right, top, mid_y = 0.2, 0.8, 0.32, 0.56
    width = 0.035
    for x0 in (left, right):
        dx, dy = 0.5 - x0, mid_y - top
        t = ((x - x0) * dx + (y - top) * dy) / (dx * dx + dy * dy)
        if 0 <= t <= 1:
            px, py = x0 + t * dx, top + t * dy
            if (x - px) ** 2 + (y - py) ** 2 <= width * width:
                return True
    return False


def color_at(x: float, y: float) -> tuple[int, int, int, int]:
    """The colour of the point (x, y) of the unit square, with alpha."""
    badge = (x - 0.76) ** 2 + (y - 0.26) ** 2
    if badge <= 0.12 ** 2:
        return (*BADGE, 255)
    if badge <= 0.155 ** 2:  # a ring of background sets the badge apart
        return (*BACKGROUND, 255)
    if not _in_rounded_square(x, y):
        return (0, 0, 0, 0)
    if 0.2 <= x <= 0.8 and 0.32 <= y <= 0.72:
        return (*(FOLD if _on_fold(x, y) else ENVELOPE), 255)
    return (*BACKGROUND, 255)


def pixels(size: int) -> bytes:
    """RGBA rows, each prefixed with PNG's filter byte 0."""
    rows = bytearray()
    n = 4 if size <= 64 else 2
    for py in range(size):
        rows.append(0)
        for px in range(size):
            acc = [0, 0, 0, 0]
            for sy in range(n):
                for sx in range(n):
                    r, g, b, a = color_at((px + (sx + 0.5) / n) / size, (py + (sy + 0.5) / n) / size)
                    acc[0] += r * a
                    acc[1] += g * a
                    acc[2] += b * a
                    acc[3] += a
            alpha = acc[3]
            if alpha:
                rows += bytes((acc[0] // alpha, acc[1] // alpha, acc[2] // alpha, alpha // (n * n)))
            else:
                rows += b"\0\0\0\0"
    return bytes(rows)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(size: int) -> bytes:
    """A size x size RGBA PNG of the icon."""
    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(pixels(size), 9)) + _chunk(b"IEND", b""))


def png_size(blob: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR (for the checks)."""
    if blob[:8] != b"\x89PNG\r\n\x1a\n" or blob[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", blob[16:24])


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    with open(sys.argv[2], "wb") as f:
        f.write(png(int(sys.argv[1])))
