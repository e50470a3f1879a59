#!/usr/bin/python3
# Full-size check of the importers (not run by CI: 350 MB of random weights). Step 1 builds google/ddpm-cifar10-32's
# UNet2DModel from its hub config.json and improved-diffusion's CIFAR-10 UNetModel from its README flags with the
# peers' own classes and random weights, writes them as the files people download, and the peers' outputs on a fixed
# (x, t). Step 2 (after `ddpm import` and `ddpm export`, which tests/test_import shows equal to the network) runs the
# exported TorchScript on the same (x, t) and prints the relative L2 difference from the peers' outputs.
#   PYTHONPATH=scripts/golden:DIFFUSERS/src:IMPROVED /usr/bin/python3 scripts/golden/fullsize_import_check.py OUT
#   ddpm import diffusers OUT/ddpm-cifar10-32 -o OUT/a.safetensors && ddpm export OUT/a.safetensors -o OUT/a.pt
#   ddpm import improved OUT/cifar10_uncond.pt --flags "$(cat OUT/cifar10_uncond.flags)" -o OUT/b.safetensors
#   ddpm export OUT/b.safetensors -o OUT/b.pt
#   /usr/bin/python3 scripts/golden/fullsize_import_check.py OUT compare
import collections, json, os, sys
import numpy as np
import torch

out = sys.argv[1]
if len(sys.argv) > 2 and sys.argv[2] == "compare":
    x = torch.from_numpy(np.load(os.path.join(out, "x.npy")))
    t = torch.from_numpy(np.load(os.path.join(out, "t.npy")))
    for pt, ref in (("a.pt", "diffusers_out.npy"), ("b.pt", "improved_out.npy")):
        with torch.no_grad():
            o = torch.jit.load(os.path.join(out, pt))(x, t).double()
        r = torch.from_numpy(np.load(os.path.join(out, ref))).double()
        print(pt, "relative L2 vs the peer:", float((o - r).norm() / r.norm()))
    sys.exit(0)
os.makedirs(out, exist_ok=True)
import peer_stubs  # noqa: F401,E402
from diffusers.models.unets.unet_2d import UNet2DModel  # noqa: E402
from improved_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults  # noqa: E402

torch.manual_seed(0)
cfg = {"_class_name": "UNet2DModel", "_diffusers_version": "0.1.2", "act_fn": "silu", "attention_head_dim": None,
       "block_out_channels": [128, 256, 256, 256], "center_input_sample": False,
       "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"], "downsample_padding": 0,
       "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3, "layers_per_block": 2, "mid_block_scale_factor": 1,
       "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32, "time_embedding_type": "positional",
       "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}
m = UNet2DModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
with torch.no_grad():
    for p in m.parameters():
        p.add_(torch.randn_like(p) * 0.02)
m.eval()
d = os.path.join(out, "ddpm-cifar10-32")
os.makedirs(d, exist_ok=True)
sd = collections.OrderedDict()
for k, v in m.state_dict().items():
    for new, old in ((".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."), (".to_out.0.", ".proj_attn.")):
        k = k.replace(new, old)
    sd[k] = v
torch.save(sd, os.path.join(d, "diffusion_pytorch_model.bin"))
json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
json.dump({"_class_name": "DDPMScheduler", "_diffusers_version": "0.1.1", "beta_end": 0.02, "beta_schedule": "linear",
           "beta_start": 0.0001, "clip_sample": True, "num_train_timesteps": 1000, "trained_betas": None,
           "variance_type": "fixed_large"}, open(os.path.join(d, "scheduler_config.json"), "w"))
g = torch.Generator().manual_seed(5)
x = torch.randn(2, 3, 32, 32, generator=g)
t = torch.tensor([10, 600])
with torch.no_grad():
    np.save(os.path.join(out, "diffusers_out.npy"), m(x, t).sample.numpy())
np.save(os.path.join(out, "x.npy"), x.numpy())
np.save(os.path.join(out, "t.npy"), t.numpy())
print("google/ddpm-cifar10-32 structure:", sum(p.numel() for p in m.parameters()), "parameters")

flags = "--image_size 32 --num_channels 128 --num_res_blocks 3 --learn_sigma True --dropout 0.3 --diffusion_steps 4000 --noise_schedule cosine"
args = model_and_diffusion_defaults()
args.update(image_size=32, num_channels=128, num_res_blocks=3, learn_sigma=True, dropout=0.3, diffusion_steps=4000,
            noise_schedule="cosine")
model, diffusion = create_model_and_diffusion(**args)
with torch.no_grad():
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.02)
model.eval()
torch.save(model.state_dict(), os.path.join(out, "cifar10_uncond.pt"))
open(os.path.join(out, "cifar10_uncond.flags"), "w").write(flags + "\n")
with torch.no_grad():
    np.save(os.path.join(out, "improved_out.npy"), diffusion._wrap_model(model)(x, t).numpy())
print("improved-diffusion CIFAR-10 flags:", sum(p.numel() for p in model.parameters()), "parameters")
