#!/usr/bin/env python3
"""Writes the TorchScript test models of tests/test_torchscript.cpp (needs Debian's python3-torch and python3-numpy).

  python3 scripts/golden/make_torchscript.py tests/data

- ts_gaussian.pt: torch.jit.script of the exact ε-denoiser of N(0.1, 0.4² I) in 2-D under DDPM's linear schedule
  (T = 1000), written here from SPEC §9; forward(x, t). Its sidecar ts_gaussian.json gives the diffusion settings.
- ts_conv.pt: torch.jit.trace of a small class-conditional conv net, forward(x, t, y), with reference inputs and
  outputs computed by PyTorch (ts_conv_{x,t,y,out}.npy) and its sidecar ts_conv.json.
- ts_bad.pt: a scripted module whose forward takes one argument (ddpm must refuse it).
"""
import json
import os
import sys

import numpy as np
import torch


class ExactGaussian(torch.nn.Module):
    def __init__(self, mean: float, std: float, timesteps: int):
        super().__init__()
        betas = np.linspace(1e-4 * 1000 / timesteps, 0.02 * 1000 / timesteps, timesteps, dtype=np.float64)
        self.register_buffer("abar", torch.from_numpy(np.cumprod(1.0 - betas)))
        self.mean = mean
        self.std = std

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].to(x.dtype).unsqueeze(1)
        v = a * self.std ** 2 + 1 - a
        e_x0 = self.mean + torch.sqrt(a) * self.std ** 2 * (x - torch.sqrt(a) * self.mean) / v
        return (x - torch.sqrt(a) * e_x0) / torch.sqrt(1 - a)


class TinyConditional(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.out = torch.nn.Conv2d(4, 1, 3, padding=1)
        self.emb = torch.nn.Embedding(4, 4)  # 3 classes + the null label

    def forward(self, x, t, y):
        h = torch.nn.functional.silu(self.conv(x) + self.emb(y)[:, :, None, None])
        return self.out(h) * (t.to(x.dtype) / 1000.0)[:, None, None, None]


class Bad(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def main(out: str) -> None:
    torch.manual_seed(0)
    os.makedirs(out, exist_ok=True)
    torch.jit.save(torch.jit.script(ExactGaussian(0.1, 0.4, 1000)), os.path.join(out, "ts_gaussian.pt"))
    with open(os.path.join(out, "ts_gaussian.json"), "w") as f:
        json.dump({"schedule": "linear", "timesteps": 1000, "mean_type": "eps", "var_type": "fixed_large",
                   "item_shape": [2], "num_classes": 0}, f)
    net = TinyConditional().eval()
    x = torch.randn(5, 1, 8, 8)
    t = torch.tensor([0, 10, 500, 999, 250])
    y = torch.tensor([0, 1, 2, 3, 1])
    traced = torch.jit.trace(net, (x, t, y))
    torch.jit.save(traced, os.path.join(out, "ts_conv.pt"))
    with torch.no_grad():
        ref = net(x, t, y)
    for name, value in (("x", x), ("t", t), ("y", y), ("out", ref)):
        np.save(os.path.join(out, f"ts_conv_{name}.npy"), value.numpy())
    with open(os.path.join(out, "ts_conv.json"), "w") as f:
        json.dump({"schedule": "linear", "timesteps": 1000, "mean_type": "eps", "var_type": "fixed_large",
                   "item_shape": [1, 8, 8], "num_classes": 3}, f)
    torch.jit.save(torch.jit.script(Bad()), os.path.join(out, "ts_bad.pt"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data")
