#pragma once

#include <ATen/ATen.h>

namespace ddpm {

/// Sinusoidal timestep embedding of the DDPM U-Net (SPEC §6, Transformer positional encoding):
/// [sin(t ω_k), cos(t ω_k)], ω_k = exp(-k log(10000)/(half - 1)), k = 0..half-1. Returns [B, dim] float32.
at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim);

}  // namespace ddpm
