#!/usr/bin/python3
# GENERATED test inputs for the torch.save reader (src/io/torch_file.cpp), written with PyTorch's own torch.save.
# Run: /usr/bin/python3 scripts/golden/torch_files.py tests/data/torch
# Writes: state.pt (an OrderedDict with float32/fp16/bf16/int64 tensors, transposed and sliced views sharing one
# storage, a Parameter, a nested dict, a non-tensor entry and the state_dict _metadata attribute) with state.json
# (every tensor's dtype, shape and values as Python sees them), opt.pt (an Adam state_dict), hostile.pt (a pickle
# whose object reduces to os.system), legacy.pt (the pre-1.6 format), lfs.pt (a git-lfs pointer).
import collections, json, os, sys
import torch

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(7)
base = torch.randn(4, 6, generator=g)
sd = collections.OrderedDict()
sd["conv.weight"] = torch.randn(3, 2, 3, 3, generator=g)
sd["conv.bias"] = torch.randn(3, generator=g)
sd["half"] = torch.randn(5, generator=g).half()
sd["bf16"] = torch.randn(2, 3, generator=g).bfloat16()
sd["steps"] = torch.arange(-3, 4, dtype=torch.int64)
sd["view.t"] = base.t()              # stride (1, 6)
sd["view.slice"] = base[1:3, 2:5]    # offset 8, stride (6, 1), same storage
sd["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
sd["scalar"] = torch.tensor(2.5)
sd["empty"] = torch.zeros(0, 3)
nested = {"inner": {"w": torch.randn(2, generator=g)}, "count": 3, "name": "x"}
sd["nested"] = nested
sd._metadata = collections.OrderedDict({"": {"version": 1}})
torch.save(sd, os.path.join(out, "state.pt"))

flat = {}
def walk(prefix, v):
    if isinstance(v, torch.Tensor):
        flat[prefix] = {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape),
                        "values": v.detach().double().flatten().tolist()}
    elif isinstance(v, dict):
        for k, x in v.items(): walk(f"{prefix}.{k}" if prefix else k, x)
walk("", sd)
with open(os.path.join(out, "state.json"), "w") as f:
    json.dump({"order": list(flat.keys()), "tensors": flat}, f)

m = torch.nn.Linear(3, 2)
opt = torch.optim.Adam(m.parameters())
m(torch.ones(1, 3)).sum().backward()
opt.step()
torch.save(opt.state_dict(), os.path.join(out, "opt.pt"))

class Hostile:
    def __reduce__(self):
        return (os.system, ("echo the reader ran a pickle's code > /tmp/ddpm_pwned",))
torch.save(collections.OrderedDict({"w": torch.ones(2), "x": Hostile()}), os.path.join(out, "hostile.pt"))

torch.save(collections.OrderedDict({"w": torch.ones(2)}), os.path.join(out, "legacy.pt"),
           _use_new_zipfile_serialization=False)
with open(os.path.join(out, "lfs.pt"), "w") as f:
    f.write("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 143000000\n")
print("wrote", sorted(os.listdir(out)))
