#pragma once

#include <ATen/ATen.h>

namespace ddpm {

/// Sinusoidal timestep embedding of the DDPM U-Net (SPEC §6, Transformer positional encoding):
/// [sin(t ω_k), cos(t ω_k)], ω_k = exp(-k log(10000)/(half - freq_shift)), k = 0..half-1, t·scale in place of t.
/// flip_sin_to_cos puts the cosines first. The defaults are DDPM's; (true, 0) is improved-diffusion's and
/// diffusers' default. Returns [B, dim] float32.
at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim, bool flip_sin_to_cos = false, int64_t freq_shift = 1,
                              double scale = 1.0);

}  // namespace ddpm
