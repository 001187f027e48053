"""Read `.safetensors` files with numpy only (memory-mapped, bfloat16 via ml_dtypes).

Format: 8-byte little-endian header length N, N bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the data.
"""

from __future__ import annotations

import json
import math
import os
import struct

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


class SafetensorsFile:
    """The tensors of one `.safetensors` file; `read(name)` returns a read-only numpy view.

    Raises ValueError naming the file when the header is unreadable or the data is truncated.
    """

    def __init__(self, path: str):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > size - 8:
                raise ValueError(f"{path}: corrupt or truncated safetensors file (header of "
                                 f"{header_len} bytes in a {size}-byte file)")
            try:
                header = json.loads(f.read(header_len))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"{path}: corrupt safetensors header ({err})") from err
        if not isinstance(header, dict):
            raise ValueError(f"{path}: corrupt safetensors header (not a JSON object)")
        header.pop("__metadata__", None)
        self._data_start = 8 + header_len
        self._entries = header
        for name, entry in header.items():
            try:
                begin, end = entry["data_offsets"]
                itemsize = np.dtype(DTYPES[entry["dtype"]]).itemsize
                shape = entry["shape"]
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}: corrupt safetensors entry for tensor {name!r}") from err
            if end - begin != itemsize * math.prod(shape):
                raise ValueError(f"{path}: tensor {name!r} has {end - begin} bytes for shape "
                                 f"{shape} of {entry['dtype']}")
            if self._data_start + end > size:
                raise ValueError(f"{path}: truncated safetensors file: tensor {name!r} ends at "
                                 f"byte {self._data_start + end}, the file has {size}")
        self._map = np.memmap(path, dtype=np.uint8, mode="r") if size else None

    def names(self) -> list[str]:
        """Tensor names in the file."""
        return list(self._entries)

    def read(self, name: str) -> np.ndarray:
        """The tensor `name` as a numpy array of its stored dtype and shape."""
        entry = self._entries[name]
        begin, end = entry["data_offsets"]
        raw = self._map[self._data_start + begin:self._data_start + end]
        return raw.view(DTYPES[entry["dtype"]]).reshape(entry["shape"])


def write_safetensors(path: str, tensors: dict[str, np.ndarray],
                      metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (numpy, any dtype of `DTYPES`) as one `.safetensors` file."""
    codes = {np.dtype(t): code for code, t in DTYPES.items()}
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        blob = array.tobytes()
        header[name] = {"dtype": codes[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    if metadata:
        header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)
