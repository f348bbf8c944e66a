"""A minimal ICC v2 RGB matrix/TRC display profile, written byte by byte (Pillow can only
create sRGB, so tests that need another colour space make their own)."""

from __future__ import annotations

import struct

D50 = (0.9642, 1.0, 0.8249)
# Adobe RGB (1998): primaries adapted to the D50 connection space, gamma 563/256.
ADOBE_RGB = {"r": (0.60974, 0.31111, 0.01947), "g": (0.20528, 0.62567, 0.06087),
             "b": (0.14919, 0.06322, 0.74457), "gamma": 563 / 256}


def _s15f16(values) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def _xyz(values) -> bytes:
    return b"XYZ " + bytes(4) + _s15f16(values)


def _curve(gamma: float) -> bytes:
    return b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)


def _desc(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    return (b"desc" + bytes(4) + struct.pack(">I", len(ascii_text)) + ascii_text
            + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + bytes(67))


def rgb_profile(description: str = "Adobe RGB (1998)", primaries: dict = ADOBE_RGB) -> bytes:
    """ICC profile bytes of an RGB display space with the given D50 primaries and gamma."""
    tags = [(b"desc", _desc(description)), (b"wtpt", _xyz(D50)),
            (b"rXYZ", _xyz(primaries["r"])), (b"gXYZ", _xyz(primaries["g"])),
            (b"bXYZ", _xyz(primaries["b"])), (b"rTRC", _curve(primaries["gamma"])),
            (b"gTRC", _curve(primaries["gamma"])), (b"bTRC", _curve(primaries["gamma"])),
            (b"cprt", b"text" + bytes(4) + b"test\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntr"
              + b"RGB " + b"XYZ " + bytes(12) + b"acsp" + bytes(4) + bytes(4) + bytes(8)
              + bytes(8) + struct.pack(">I", 0) + _s15f16(D50) + bytes(4) + bytes(16)
              + bytes(28))
    assert len(header) == 128
    return header + table + data
