"""Embeddings as little-endian float32 bytes, and the binary ingest frame (``application/vnd.protoprune.embeddings``)."""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

FRAME_MEDIA_TYPE = "application/vnd.protoprune.embeddings"

# A float32 vector or matrix: ``array('f')``, bytes of little-endian float32, a memoryview, any other
# object with the buffer protocol (a numpy float32 or float64 array), or a sequence of floats.
FloatBuffer: TypeAlias = "bytes | bytearray | memoryview | array[float]"
Vector: TypeAlias = "FloatBuffer | Sequence[float]"

_NATIVE_BIG = sys.byteorder == "big"
_RAW_FORMATS = frozenset({"B", "b", "c"})
_ITEM_SIZES = {"f": 4, "d": 8}


class _Floats:
    """A buffer's bytes, flat, with the array typecode of its values ('f' or 'd') and their byte order."""

    def __init__(self, value: Any) -> None:
        view = memoryview(value)
        if view.format in _RAW_FORMATS:
            self.code, self.big = "f", False  # plain bytes: little-endian float32
        else:
            order, code = (view.format[0], view.format[1:]) if view.format[0] in "@=<>!" else ("@", view.format)
            if code not in _ITEM_SIZES:
                raise TypeError(f"embeddings must hold float32 (or float64) values, got a buffer of format {view.format!r}")
            self.code, self.big = code, (_NATIVE_BIG if order in "@=" else order in ">!")
        self.bytes = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        self.values, rest = divmod(len(self.bytes), _ITEM_SIZES[self.code])
        if rest:
            raise ValueError(f"a buffer of {len(self.bytes)} bytes does not hold whole {'float32' if self.code == 'f' else 'float64'} values")

    def little_endian(self, start: int, count: int) -> bytes:
        """Values ``start`` to ``start + count`` as little-endian float32."""
        size = _ITEM_SIZES[self.code]
        chunk = self.bytes[start * size : (start + count) * size]
        if self.code == "f" and not self.big:
            return bytes(chunk)
        values = array("f") if self.code == "f" else array("d")
        values.frombytes(chunk)
        if self.big != _NATIVE_BIG:
            values.byteswap()
        return _little_endian(values if self.code == "f" else array("f", values))


def _little_endian(values: array[float]) -> bytes:
    if _NATIVE_BIG:
        values.byteswap()
    return values.tobytes()


def _has_buffer(value: Any) -> bool:
    try:
        memoryview(value).release()
    except TypeError:
        return False
    return True


def vector_bytes(vector: Vector, dim: int | None = None) -> bytes:
    """One vector as little-endian float32 bytes, checked to hold ``dim`` values when given."""
    if _has_buffer(vector):
        floats = _Floats(vector)
        data = floats.little_endian(0, floats.values)
    else:
        data = _little_endian(array("f", vector))
    if dim is not None and len(data) != 4 * dim:
        raise ValueError(f"a vector of {len(data) // 4} values for a dataset of dimension {dim}")
    return data


def vector_rows(vectors: Vector | Sequence[Vector], count: int, dim: int) -> Iterator[bytes]:
    """``count`` vectors of ``dim`` values, each as little-endian float32 bytes.

    ``vectors`` is one buffer of ``count × dim`` values (``array('f')``, bytes, a 2-D numpy array), or
    a sequence of ``count`` vectors, each a buffer or a sequence of floats.
    """
    if _has_buffer(vectors):
        floats = _Floats(vectors)
        if floats.values != count * dim:
            raise ValueError(f"{count} ids need {count * dim} values of dimension {dim}, the buffer holds {floats.values}")
        return (floats.little_endian(row * dim, dim) for row in range(count))
    items: Sequence[Vector] = vectors  # type: ignore[assignment]
    if len(items) != count:
        raise ValueError(f"{count} ids but {len(items)} vectors")
    return (vector_bytes(vector, dim) for vector in items)


def frame(dim: int, items: Sequence[tuple[bytes, bytes, bytes]]) -> bytes:
    """A binary ingest body: the 16-byte header, then per item its UTF-8 id, float32 vector and UTF-8 JSON metadata."""
    parts = [b"PPEB", struct.pack("<HHII", 1, 0, len(items), dim)]
    for external_id, vector, metadata in items:
        if len(external_id) > 0xFFFF:
            raise ValueError(f"an external id of {len(external_id)} UTF-8 bytes (the frame holds at most 65,535)")
        parts += [struct.pack("<H", len(external_id)), external_id, vector, struct.pack("<I", len(metadata)), metadata]
    return b"".join(parts)
