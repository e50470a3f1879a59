# Stand-ins for packages that diffusers imports but that Debian does not ship (huggingface_hub, safetensors) and
# for torch attributes newer than Debian's torch 1.13; used only by scripts/golden/pretrained.py. Nothing here runs a
# peer's code path that matters to the outputs: model classes and schedulers are the peers' own.
import sys, types, importlib.abc, importlib.machinery
STUB = ("huggingface_hub", "safetensors")
class _Any:
    def __init__(self, *a, **k): pass
    def __call__(self, *a, **k):
        if len(a) == 1 and not k and callable(a[0]): return a[0]
        return _Any()
    def __getattr__(self, n): return _Any()
    def __mro_entries__(self, bases): return (object,)
    def __iter__(self): return iter(())
    def __bool__(self): return False
    def __or__(self, o): return self
    def __ror__(self, o): return self
    def __getitem__(self, k): return self
class _Mod(types.ModuleType):
    def __getattr__(self, n):
        if n.startswith("__"): raise AttributeError(n)
        if n.isupper():
            return "/tmp/hf_stub"
        if n[0].isupper():
            c = type(n, (Exception,), {})
            setattr(self, n, c); return c
        return _Any()
class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in STUB:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
    def create_module(self, spec):
        m = _Mod(spec.name); m.__path__ = []; m.__version__ = "0.99.0"; return m
    def exec_module(self, m): pass
sys.meta_path.insert(0, _Finder())
import torch as _t
for _n in ("xpu", "mps", "mtia", "npu", "compiler", "_dynamo", "_inductor", "export"):
    if not hasattr(_t, _n): setattr(_t, _n, _Any())
for _n in ("float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64", "float8_e8m0fnu", "float4_e2m1fn_x2"):
    if not hasattr(_t, _n): setattr(_t, _n, _t.float32)

import torch.distributed as _d
if not hasattr(_d, "device_mesh"): _d.device_mesh = _Any()
class _TorchFallback(_Finder):
    def find_spec(self, name, path, target=None):
        if name.startswith("torch.") or name.split(".")[0] in ("peft", "transformers", "accelerate"):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
sys.meta_path.append(_TorchFallback())
