#!/usr/bin/env python3
"""The PyTorch baseline of bench_unet: the DDPM U-Net and its training and sampling steps, written the way a PyTorch
user would write them (eager mode, nn.Module, torch.optim.Adam, an EMA loop). Same architecture and parameter names
as ddpm's C++ U-Net, so a checkpoint's weights load into it unchanged (--check compares outputs).

Prints one JSON object: parameters, train_img_per_s, sample_img_steps_per_s.
"""
import argparse
import json
import math
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    # name: (in_channels, side, base, mult, res_blocks, attention, dropout, classes)
    "fashion-mnist": (1, 32, 32, (1, 2, 2), 2, (16,), 0.1, 10),
    "cifar10-ddpm": (3, 32, 128, (1, 2, 2, 2), 2, (16,), 0.1, 0),
}


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm that also runs under CPU autocast on torch 1.13, whose autocast leaves group_norm out and whose
    kernel refuses a bfloat16 input with float parameters: the parameters follow the input's type (torch 2.x runs this
    mixed case natively)."""

    def forward(self, x):
        if x.dtype == self.weight.dtype:
            return super().forward(x)
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb, dropout, groups):
        super().__init__()
        self.norm1 = GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb, cout)
        self.norm2 = GroupNorm(groups, cout, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(temb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = GroupNorm(groups, c, eps=1e-6)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        q = self.q(n).reshape(b, c, h * w)
        k = self.k(n).reshape(b, c, h * w)
        v = self.v(n).reshape(b, c, h * w)
        a = torch.softmax(torch.bmm(q.transpose(1, 2), k) / math.sqrt(c), dim=-1)
        out = torch.bmm(v, a.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Level(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class Middle(nn.Module):
    def __init__(self, c, temb, dropout, groups):
        super().__init__()
        self.block1 = ResBlock(c, c, temb, dropout, groups)
        self.attn1 = AttnBlock(c, groups)
        self.block2 = ResBlock(c, c, temb, dropout, groups)


class UNet(nn.Module):
    def __init__(self, in_ch, side, ch, mult, nres, attn_res, dropout, classes, groups=32):
        super().__init__()
        self.ch, self.classes = ch, classes
        temb = 4 * ch
        self.temb_dense0 = nn.Linear(ch, temb)
        self.temb_dense1 = nn.Linear(temb, temb)
        self.class_emb = nn.Embedding(classes + 1, temb) if classes > 0 else None
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        skips, cur = [ch], ch
        self.down = nn.ModuleList()
        for i, m in enumerate(mult):
            lv = Level()
            for _ in range(nres):
                lv.block.append(ResBlock(cur, ch * m, temb, dropout, groups))
                cur = ch * m
                if side >> i in attn_res:
                    lv.attn.append(AttnBlock(cur, groups))
                skips.append(cur)
            if i != len(mult) - 1:
                lv.downsample = nn.Conv2d(cur, cur, 3, stride=2, padding=1)
                skips.append(cur)
            self.down.append(lv)
        self.mid = Middle(cur, temb, dropout, groups)
        ups = [None] * len(mult)
        for i in reversed(range(len(mult))):
            lv = Level()
            for _ in range(nres + 1):
                lv.block.append(ResBlock(cur + skips.pop(), ch * mult[i], temb, dropout, groups))
                cur = ch * mult[i]
                if side >> i in attn_res:
                    lv.attn.append(AttnBlock(cur, groups))
            if i != 0:
                lv.upsample = nn.Conv2d(cur, cur, 3, padding=1)
            ups[i] = lv
        self.up = nn.ModuleList(ups)
        self.norm_out = GroupNorm(groups, cur, eps=1e-6)
        self.conv_out = nn.Conv2d(cur, in_ch, 3, padding=1)

    def forward(self, x, t, y=None):
        temb = self.temb_dense1(F.silu(self.temb_dense0(timestep_embedding(t, self.ch))))
        if self.class_emb is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.classes, dtype=torch.long)
            temb = temb + self.class_emb(y)
        act = F.silu(temb)
        hs = [self.conv_in(x)]
        for lv in self.down:
            for j, blk in enumerate(lv.block):
                h = blk(hs[-1], act)
                if len(lv.attn):
                    h = lv.attn[j](h)
                hs.append(h)
            if hasattr(lv, "downsample"):
                hs.append(lv.downsample(hs[-1]))
        h = self.mid.block2(self.mid.attn1(self.mid.block1(hs[-1], act)), act)
        for i in reversed(range(len(self.up))):
            lv = self.up[i]
            for j, blk in enumerate(lv.block):
                h = blk(torch.cat([h, hs.pop()], dim=1), act)
                if len(lv.attn):
                    h = lv.attn[j](h)
            if hasattr(lv, "upsample"):
                h = lv.upsample(F.interpolate(h, size=hs[-1].shape[2:], mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dtype = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}[info["dtype"]]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=dtype).reshape(info["shape"])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", choices=sorted(CONFIGS), default="fashion-mnist")
    p.add_argument("--batch-train", type=int, default=64)
    p.add_argument("--batch-sample", type=int, default=64)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--check", help="a ddpm model file (EMA weights, 'ema.' or bare names): evaluate it on a fixed input")
    p.add_argument("--dump", help="with --check: write the input, t, y and output there as .npy")
    p.add_argument("--autocast", action="store_true",
                   help='run forward passes and the loss under torch.autocast("cpu", dtype=torch.bfloat16)')
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    in_ch, side, ch, mult, nres, attn, dropout, classes = CONFIGS[a.config]
    net = UNet(in_ch, side, ch, mult, nres, attn, dropout, classes)
    params = sum(q.numel() for q in net.parameters())
    result = {"config": a.config, "parameters": params, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "autocast": a.autocast}

    if a.check:
        w = read_safetensors(a.check)
        w = {k[4:]: v for k, v in w.items() if k.startswith("ema.")} or w
        net.load_state_dict(w)
        net.eval()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, in_ch, side, side, generator=g)
        with torch.no_grad():
            out = net(x, torch.tensor([10, 500]), torch.tensor([1, 3]) if classes else None)
        result["check_abs_sum"] = float(out.double().abs().sum())
        if a.dump:
            import numpy as np
            np.save(a.dump + "/x.npy", x.numpy())
            np.save(a.dump + "/out.npy", out.numpy())
        print(json.dumps(result))
        return

    # The diffusion of the paper: linear β from 1e-4 to 0.02 over 1000 steps.
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0).float()

    # Training step: noise, loss, backward, clip, Adam, EMA.
    B = a.batch_train
    x0 = torch.rand(B, in_ch, side, side) * 2 - 1
    y = torch.randint(0, max(classes, 1), (B,)) if classes else None
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)
    ema = [q.detach().clone() for q in net.parameters()]
    net.train()

    def train_step():
        t = torch.randint(0, 1000, (B,))
        noise = torch.randn_like(x0)
        s = ab[t].view(B, 1, 1, 1)
        xt = s.sqrt() * x0 + (1 - s).sqrt() * noise
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast):
            loss = F.mse_loss(net(xt, t, y).float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for e, q in zip(ema, net.parameters()):
                e.mul_(0.9999).add_(q, alpha=1 - 0.9999)

    train_step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(a.iters):
        train_step()
    result["train_img_per_s"] = a.iters * B / (time.perf_counter() - t0)

    # Sampling step: one network evaluation and the DDIM (η = 0) update.
    Bs = a.batch_sample
    net.eval()
    x = torch.randn(Bs, in_ch, side, side)
    ys = torch.randint(0, max(classes, 1), (Bs,)) if classes else None
    steps = list(range(999, -1, -1000 // max(a.iters, 1)))[: a.iters + 1]
    with torch.inference_mode():
        def sample_step(x, i, j):
            t = torch.full((Bs,), i, dtype=torch.long)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast):
                eps = net(x, t, ys).float()
            a_t, a_s = ab[i], ab[j] if j >= 0 else torch.tensor(1.0)
            x0_hat = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            return a_s.sqrt() * x0_hat + (1 - a_s).sqrt() * eps

        x = sample_step(x, steps[0], steps[1])  # warm-up
        t0 = time.perf_counter()
        for k in range(a.iters):
            x = sample_step(x, steps[k], steps[k + 1] if k + 1 < len(steps) else -1)
        result["sample_img_steps_per_s"] = a.iters * Bs / (time.perf_counter() - t0)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
