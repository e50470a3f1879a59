#!/usr/bin/env python3
"""An independent safetensors reader, written from the format's published specification (huggingface/safetensors
README: 8-byte little-endian header size N, N bytes of UTF-8 JSON, then the byte buffer; each tensor has dtype,
shape and data_offsets [begin, end) relative to the buffer; "__metadata__" maps strings to strings; offsets must
cover the buffer without holes or overlaps). Standard library only.

usage: safetensors_conformance.py FILE EXPECTED.json
EXPECTED maps tensor names to {"dtype", "shape", "sum"} and may hold "__metadata_keys__". Exits 0 when the file
conforms and every expectation holds; prints one line per violation otherwise.
"""
import json
import math
import struct
import sys

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
FORMATS = {"F64": "d", "F32": "f", "I64": "q", "I32": "i", "I16": "h", "I8": "b", "U8": "B", "BOOL": "?"}


def main(path, expected_path):
    errors = []
    data = open(path, "rb").read()
    expected = json.load(open(expected_path))
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        return ["header size exceeds the file"]
    header = json.loads(data[8:8 + n].decode("utf-8"))
    if n % 8 != 0:
        errors.append("header not padded to a multiple of 8 bytes (recommended alignment)")
    buffer = data[8 + n:]
    meta = header.pop("__metadata__", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        errors.append("__metadata__ must map strings to strings")
    ranges = []
    for name, e in header.items():
        dtype, shape, (b, end) = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in SIZES:
            errors.append(f"{name}: unknown dtype {dtype}")
            continue
        count = math.prod(shape) if shape else 1
        if end - b != count * SIZES[dtype]:
            errors.append(f"{name}: {end - b} bytes for shape {shape} of {dtype}")
            continue
        if not 0 <= b <= end <= len(buffer):
            errors.append(f"{name}: data_offsets [{b}, {end}) outside the {len(buffer)}-byte buffer")
            continue
        ranges.append((b, end))
        want = expected.get(name)
        if want is not None:
            if want["dtype"] != dtype or want["shape"] != shape:
                errors.append(f"{name}: {dtype}{shape}, expected {want['dtype']}{want['shape']}")
            values = struct.unpack("<" + FORMATS[dtype] * count, buffer[b:end])
            total = float(sum(values))
            if abs(total - want["sum"]) > 1e-4 * max(1.0, abs(want["sum"])):
                errors.append(f"{name}: sum {total}, expected {want['sum']}")
    for name in expected:
        if name != "__metadata_keys__" and name not in header:
            errors.append(f"{name}: missing")
    for key in expected.get("__metadata_keys__", []):
        if key not in meta:
            errors.append(f"__metadata__ lacks {key}")
    cursor = 0
    for b, end in sorted(ranges):
        if b != cursor:
            errors.append("byte ranges leave a hole or overlap")
        cursor = end
    if cursor != len(buffer):
        errors.append("the buffer has bytes no tensor covers")
    return errors


if __name__ == "__main__":
    problems = main(sys.argv[1], sys.argv[2])
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)
