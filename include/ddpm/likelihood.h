// The full variational bound in bits/dim (SPEC §5): the prior term L_T, every L_{t-1}, and L_0.
#pragma once

#include <ATen/ATen.h>

#include <functional>

#include "ddpm/diffusion.h"
#include "ddpm/losses.h"

namespace ddpm {

struct BpdTerms {
  at::Tensor total;     ///< [B] the whole bound, bits/dim
  at::Tensor prior;     ///< [B] L_T = KL(q(x_T|x0) || N(0, I)), bits/dim
  at::Tensor terms;     ///< [B, T] the VLB term of each step (column 0 is L_0), bits/dim
  at::Tensor x0_mse;    ///< [B, T] mean squared error of x̂0 at each step
  at::Tensor eps_mse;   ///< [B, T] mean squared error of ε̂ at each step
};

/// KL(q(x_T | x0) || N(0, I)) per example, bits/dim.
at::Tensor prior_bpd(const GaussianDiffusion& diffusion, const at::Tensor& x0);

/// Evaluates every term of the bound for a batch x0 (improved-diffusion's calc_bpd_loop): for each step t,
/// x_t ~ q(x_t | x0) with noise from `gen`, then the VLB term. `timesteps_per_call` steps share one call of the
/// model (the batch repeated that many times), which keeps the model busy when the batch is small; the numbers do
/// not depend on it. `progress` is called after each call with the steps done so far.
BpdTerms calc_bpd_loop(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x0,
                       const at::Tensor& y, bool clip_denoised, Decoder decoder, at::Generator gen,
                       const ProgressFn& progress = nullptr, int64_t timesteps_per_call = 1);

}  // namespace ddpm
