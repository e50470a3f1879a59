#!/usr/bin/python3
# GENERATED golden files for the importers (src/store/import.cpp): small networks built with the peers' own Python
# classes and random seeded weights, saved in the formats people have, with the peers' outputs.
#
# Needs checkouts of huggingface/diffusers and openai/improved-diffusion (the `fetch` tool, then git clone), and
# Debian's python3-torch, python3-numpy, python3-packaging, python3-filelock, python3-regex, python3-tqdm,
# python3-importlib-metadata. diffusers' hub client and safetensors packages are not in Debian: a stub module stands in
# for them (scripts/golden/peer_stubs.py; nothing of them runs here), and safetensors files are written below.
#   PYTHONPATH=scripts/golden:DIFFUSERS/src:IMPROVED /usr/bin/python3 scripts/golden/pretrained.py tests/data/pretrained
#
# Writes, per model, its folder or file and NAME_{x,t,y,out,xT,ddim}.npy: the network output on fixed (x, t, y) and
# 10 DDIM steps (eta 0) from a fixed x_T, computed by the peer's own code.
#  ddpm_tf   diffusers UNet2DModel with google/ddpm-cifar10-32's block structure (flip_sin_to_cos false, freq_shift 1,
#            downsample_padding 0, norm_eps 1e-6, one head), flat hub layout, legacy attention names, weights as a
#            torch.save .bin, DDPMScheduler config as the hub's (linear, fixed_large).
#  diff_def  UNet2DModel with diffusers' defaults (flip true, shift 0, padding 1, 8 channels per head) plus a large
#            norm_eps (0.05, so that eps matters), FiLM (resnet_time_scale_shift scale_shift, with attn_norm_num_groups
#            set: without it diffusers drops the middle attention's GroupNorm, which is refused), 4 classes and a learned
#            range variance head; pipeline layout (model_index.json, unet/, scheduler/), F32 safetensors;
#            squaredcos_cap_v2 schedule. diff_fp16: the same weights as .fp16.safetensors only (outputs of the
#            fp16-rounded weights).
#  improved  improved-diffusion UNetModel: learn_sigma, 4 heads (2 on the up path), scale-shift norm, 10 classes,
#            cosine schedule with T = 400 and rescale_timesteps (the network sees t · 2.5); a torch.save .pt.
import collections, json, os, struct, sys
import numpy as np
import torch
import peer_stubs  # noqa: F401  (stands in for huggingface_hub and safetensors)
from diffusers.models.unets.unet_2d import UNet2DModel
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from improved_diffusion.unet import UNetModel
from improved_diffusion.script_util import create_gaussian_diffusion

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)


def randomise(model, seed):
    # The peers zero-initialise their last layers; random weights everywhere make every parameter matter.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) * (0.6 / fan ** 0.5 if p.dim() > 1 else 0.1))
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
    model.eval()


def save_safetensors(path, sd, dtype=torch.float32):
    header, blobs, off = {}, [], 0
    code = {torch.float32: "F32", torch.float16: "F16"}[dtype]
    for k, v in sd.items():
        b = v.detach().to(dtype).contiguous().numpy().tobytes()
        header[k] = {"dtype": code, "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def npy(name, a):
    np.save(os.path.join(out, name + ".npy"), a.detach().cpu().numpy() if torch.is_tensor(a) else a)


def diffusers_ddim(model, sched_config, xT, y=None, channels=3):
    s = DDIMScheduler.from_config(dict(sched_config, clip_sample=False, set_alpha_to_one=True))
    s.set_timesteps(10)
    x = xT.clone()
    with torch.no_grad():
        for t in s.timesteps:
            tt = torch.full((x.shape[0],), int(t), dtype=torch.long)
            e = model(x, tt, class_labels=y).sample[:, :channels]
            x = s.step(e, t, x, eta=0.0).prev_sample
    return x


def golden_diffusers(name, model, sched, y, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, model.config.sample_size, model.config.sample_size, generator=g)
    t = torch.tensor([3, 871])
    with torch.no_grad():
        o = model(x, t, class_labels=y).sample
    xT = torch.randn(2, 3, model.config.sample_size, model.config.sample_size, generator=g)
    npy(name + "_x", x); npy(name + "_t", t); npy(name + "_out", o); npy(name + "_xT", xT)
    npy(name + "_ddim", diffusers_ddim(model, sched, xT, y))
    if y is not None:
        npy(name + "_y", y)


# --- ddpm_tf: google/ddpm-cifar10-32's structure, smaller ---------------------------------------------------------
cfg_tf = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32, 32, 32), layers_per_block=2,
              down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=None,
              norm_num_groups=8, norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0,
              act_fn="silu", center_input_sample=False, mid_block_scale_factor=1, time_embedding_type="positional")
m = UNet2DModel(**cfg_tf)
randomise(m, 1)
d = os.path.join(out, "ddpm_tf")
os.makedirs(d, exist_ok=True)
legacy = collections.OrderedDict()
for k, v in m.state_dict().items():
    for new, old in ((".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."), (".to_out.0.", ".proj_attn.")):
        k = k.replace(new, old)
    legacy[k] = v
torch.save(legacy, os.path.join(d, "diffusion_pytorch_model.bin"))
conf = dict(cfg_tf, _class_name="UNet2DModel", _diffusers_version="0.1.2", block_out_channels=list(cfg_tf["block_out_channels"]),
            down_block_types=list(cfg_tf["down_block_types"]), up_block_types=list(cfg_tf["up_block_types"]))
json.dump(conf, open(os.path.join(d, "config.json"), "w"), indent=2)
sched_tf = {"_class_name": "DDPMScheduler", "_diffusers_version": "0.1.1", "beta_end": 0.02, "beta_schedule": "linear",
            "beta_start": 0.0001, "clip_sample": True, "num_train_timesteps": 1000, "trained_betas": None,
            "variance_type": "fixed_large"}
json.dump(sched_tf, open(os.path.join(d, "scheduler_config.json"), "w"), indent=2)
json.dump({"_class_name": "DDPMPipeline", "_diffusers_version": "0.1.1", "scheduler": ["diffusers", "DDPMScheduler"],
           "unet": ["diffusers", "UNet2DModel"]}, open(os.path.join(d, "model_index.json"), "w"), indent=2)
golden_diffusers("ddpm_tf", m, sched_tf, None, 11)
print("ddpm_tf", sum(p.numel() for p in m.parameters()), "parameters")

# --- diff_def: diffusers' defaults, pipeline layout ----------------------------------------------------------------
cfg_def = dict(sample_size=16, out_channels=6, block_out_channels=(16, 16, 32), layers_per_block=1,
               down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
               up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
               norm_num_groups=8, attn_norm_num_groups=8, norm_eps=0.05, resnet_time_scale_shift="scale_shift",
               num_class_embeds=4)
m = UNet2DModel(**cfg_def)
randomise(m, 2)
d = os.path.join(out, "diff_def")
os.makedirs(os.path.join(d, "unet"), exist_ok=True)
os.makedirs(os.path.join(d, "scheduler"), exist_ok=True)
save_safetensors(os.path.join(d, "unet", "diffusion_pytorch_model.safetensors"), m.state_dict())
conf = {"_class_name": "UNet2DModel", "_diffusers_version": "0.31.0"}
conf.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(m.config).items() if not k.startswith("_")})
json.dump(conf, open(os.path.join(d, "unet", "config.json"), "w"), indent=2)
sched_def = {"_class_name": "DDPMScheduler", "_diffusers_version": "0.31.0", "beta_schedule": "squaredcos_cap_v2",
             "num_train_timesteps": 1000, "variance_type": "learned_range", "prediction_type": "epsilon",
             "clip_sample": True}
json.dump(sched_def, open(os.path.join(d, "scheduler", "scheduler_config.json"), "w"), indent=2)
json.dump({"_class_name": "DDPMPipeline", "_diffusers_version": "0.31.0", "scheduler": ["diffusers", "DDPMScheduler"],
           "unet": ["diffusers", "UNet2DModel"]}, open(os.path.join(d, "model_index.json"), "w"), indent=2)
y = torch.tensor([1, 3])
golden_diffusers("diff_def", m, sched_def, y, 12)
print("diff_def", sum(p.numel() for p in m.parameters()), "parameters")
# The same weights as fp16 only, in a bare unet/ folder (its scheduler beside it, as in a pipeline).
d16 = os.path.join(out, "diff_fp16")
os.makedirs(os.path.join(d16, "unet"), exist_ok=True)
os.makedirs(os.path.join(d16, "scheduler"), exist_ok=True)
save_safetensors(os.path.join(d16, "unet", "diffusion_pytorch_model.fp16.safetensors"), m.state_dict(), torch.float16)
json.dump(conf, open(os.path.join(d16, "unet", "config.json"), "w"), indent=2)
json.dump(sched_def, open(os.path.join(d16, "scheduler", "scheduler_config.json"), "w"), indent=2)
with torch.no_grad():
    for p in m.parameters():
        p.copy_(p.half().float())
g = torch.Generator().manual_seed(12)
x = torch.randn(2, 3, 16, 16, generator=g)
with torch.no_grad():
    npy("diff_fp16_out", m(x, torch.tensor([3, 871]), class_labels=y).sample)

# --- improved: improved-diffusion's UNetModel ---------------------------------------------------------------------
m = UNetModel(in_channels=3, model_channels=32, out_channels=6, num_res_blocks=2, attention_resolutions=(2,),
              dropout=0.0, channel_mult=(1, 1, 2), num_classes=10, num_heads=4, num_heads_upsample=2,
              use_scale_shift_norm=True)
randomise(m, 3)
torch.save(m.state_dict(), os.path.join(out, "improved.pt"))
flags = ("--image_size 16 --num_channels 32 --num_res_blocks 2 --learn_sigma True --class_cond True --num_heads 4 "
         "--num_heads_upsample 2 --attention_resolutions 8 --diffusion_steps 400 --noise_schedule cosine --dropout 0.0")
open(os.path.join(out, "improved.flags"), "w").write(flags + "\n")
diffusion = create_gaussian_diffusion(steps=400, learn_sigma=True, sigma_small=False, noise_schedule="cosine",
                                      use_kl=False, predict_xstart=False, rescale_timesteps=True,
                                      rescale_learned_sigmas=True, timestep_respacing="")
g = torch.Generator().manual_seed(13)
x = torch.randn(2, 3, 16, 16, generator=g)
t = torch.tensor([3, 311])
y = torch.tensor([2, 9])
with torch.no_grad():
    # What improved-diffusion's samplers call: _WrappedModel maps and rescales t (SpacedDiffusion._scale_timesteps is
    # the identity).
    o = diffusion._wrap_model(m)(x, t, y=y)
xT = torch.randn(2, 3, 16, 16, generator=g)
spaced = create_gaussian_diffusion(steps=400, learn_sigma=True, sigma_small=False, noise_schedule="cosine",
                                   use_kl=False, predict_xstart=False, rescale_timesteps=True,
                                   rescale_learned_sigmas=True, timestep_respacing="ddim10")
with torch.no_grad():
    ddim = spaced.ddim_sample_loop(m, (2, 3, 16, 16), noise=xT.clone(), clip_denoised=True, model_kwargs={"y": y},
                                   eta=0.0)
npy("improved_x", x); npy("improved_t", t); npy("improved_y", y); npy("improved_out", o); npy("improved_xT", xT)
npy("improved_ddim", ddim)
print("improved", sum(p.numel() for p in m.parameters()), "parameters")
