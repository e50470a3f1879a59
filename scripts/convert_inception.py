#!/usr/bin/env python3
"""Converts Inception-v3 weights saved by PyTorch (a state dict, e.g. pytorch-fid's FID Inception weights
pt_inception-2015-12-05-*.pth, which use torchvision's parameter names) to the safetensors file that
`ddpm fid --inception FILE` reads. Needs python3-torch (Debian); ddpm ships no weights.

  python3 scripts/convert_inception.py pt_inception-2015-12-05-6726825d.pth inception.safetensors
"""
import json
import struct
import sys

import torch


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} as float32 safetensors (the format's specification: 8-byte little-endian header size,
    JSON header, raw little-endian data), header padded to 8 bytes."""
    header, blobs, offset = ({"__metadata__": metadata} if metadata else {}), [], 0
    for name, t in tensors.items():
        data = t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main(src, dst):
    state = torch.load(src, map_location="cpu")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    kept = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked") and not k.startswith("AuxLogits")}
    write_safetensors(dst, kept, {"source": src, "format": "torchvision Inception-v3 names"})
    print(f"wrote {dst}: {len(kept)} tensors")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
