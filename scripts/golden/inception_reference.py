#!/usr/bin/env python3
"""Reference outputs for ddpm's FID Inception (tests/test_inception.cpp), computed by Debian's python3-torchvision.

  python3 scripts/golden/inception_reference.py OUTDIR

Builds torchvision's Inception-v3 with 1008 logits and no auxiliary head, makes the changes FID implementations
make to TensorFlow's graph (average pools that do not count padding in blocks A, C and E_1; a max pool in the pool
branch of the last block E), gives every weight and batch-norm statistic random values, and writes:
  inception.safetensors   the weights under torchvision's names (scripts/convert_inception.py's writer)
  x.npy                   images [2, 3, 64, 64] in [-1, 1]
  features.npy, logits.npy  2048-d pool features and 1008 logits after a bilinear resize to 299×299
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models import inception as tv

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from convert_inception import write_safetensors  # noqa: E402  (ddpm's own writer, shared)


class PoolA(tv.InceptionA):
    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        p = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b5, d, p], 1)


class PoolC(tv.InceptionC):
    def forward(self, x):
        b1 = self.branch1x1(x)
        s = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        p = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, s, d, p], 1)


class PoolE(tv.InceptionE):
    def __init__(self, in_channels, use_max):
        super().__init__(in_channels)
        self.use_max = use_max

    def forward(self, x):
        b1 = self.branch1x1(x)
        t = self.branch3x3_1(x)
        t = torch.cat([self.branch3x3_2a(t), self.branch3x3_2b(t)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        if self.use_max:
            p = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            p = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([b1, t, d, self.branch_pool(p)], 1)


def main(out):
    torch.manual_seed(0)
    net = tv.Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=True)
    net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = PoolA(192, 32), PoolA(256, 64), PoolA(288, 64)
    net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e = PoolC(768, 128), PoolC(768, 160), PoolC(768, 160), PoolC(768, 192)
    net.Mixed_7b, net.Mixed_7c = PoolE(1280, False), PoolE(2048, True)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() > 1:  # unit gain: std 1/√fan_in keeps the activations of order one through 90 layers
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
            else:
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("bn.weight") else 0.0))
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    net.eval()
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "inception.safetensors"),
                      {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")})
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        h = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                     "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            h = getattr(net, name)(h)
        features = h.mean(dim=(2, 3))
        logits = net.fc(features)
    np.save(os.path.join(out, "x.npy"), x.numpy())
    np.save(os.path.join(out, "features.npy"), features.numpy())
    np.save(os.path.join(out, "logits.npy"), logits.numpy())


if __name__ == "__main__":
    main(sys.argv[1])
