"""Per-image booleans (which images a record got right) stored compactly: base64 text of their bits.

The storage format of `Record.acc1_per_image`, below both the schema that validates it and the
paired tests that read it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence


def pack_bits(bits: Sequence[bool]) -> str:
    """Per-image booleans as base64 text of their bits, most significant bit first (numpy.packbits order)."""
    data = bytearray((len(bits) + 7) // 8)
    for index, bit in enumerate(bits):
        if bit:
            data[index // 8] |= 0x80 >> (index % 8)
    return base64.b64encode(bytes(data)).decode("ascii")


def unpack_bits(text: str, count: int) -> list[bool]:
    """The `count` booleans `pack_bits` encoded; ValueError when the text does not hold exactly them."""
    data = base64.b64decode(text.encode("ascii"), validate=True)
    if len(data) != (count + 7) // 8:
        raise ValueError(f"holds {len(data)} bytes, not the {(count + 7) // 8} of {count} images")
    bits = [bool(data[i // 8] & (0x80 >> (i % 8))) for i in range(count)]
    if any(data[i // 8] & (0x80 >> (i % 8)) for i in range(count, len(data) * 8)):
        raise ValueError("has bits set beyond its images")
    return bits
