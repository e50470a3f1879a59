// GroupNorm followed by SiLU in one pass over the activations (the U-Net applies SiLU after all but one of its
// GroupNorms). Same result as at::silu(at::group_norm(x, groups, weight, bias, eps)) to float rounding, with gradients;
// on the CPU for float tensors (NCHW or channels_last, kept as given) and bfloat16 ones (channels_last; statistics and
// arithmetic in float, output rounded to bfloat16) it runs fused kernels that read the input
// once for the statistics and once for the output, and saves only the input for backward.
#pragma once

#include <ATen/core/Tensor.h>

namespace ddpm {

/// x: [N, C, *]; weight, bias: [C] (or undefined: 1 and 0). `silu` false gives plain GroupNorm. `shift` ([N, C], or
/// undefined) is added to x at every position before normalising — GroupNorm(x + shift[:, :, None, None]) — without
/// materialising the sum (the U-Net's timestep-embedding add); gradients flow to it too.
at::Tensor group_norm_silu(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                           double eps, bool silu = true, const at::Tensor& shift = {});

}  // namespace ddpm
