// Negative log-likelihood (bits/dim) of a data set under a model: the full variational bound per example,
// averaged, with its standard error and the mean of every term.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "ddpm/likelihood.h"

namespace ddpm {

struct NllOptions {
  int64_t batch = 1000;  ///< rows per call of the model: images, or images × timesteps when fewer images remain
  bool clip_denoised = false;
  Decoder decoder = Decoder::discrete;
  uint64_t seed = 0;
  ProgressFn progress;  ///< (done, total) in units of one timestep of one batch
};

struct NllSummary {
  double bits_per_dim = 0;      ///< mean over examples of the whole bound
  double stderr_ = 0;           ///< standard error of that mean
  int64_t count = 0;
  double prior_bpd = 0;         ///< mean L_T
  std::vector<double> terms;    ///< mean VLB term of each step (index 0 is L_0), bits/dim
  std::vector<double> x0_mse;   ///< mean x̂0 error per step
  at::Tensor per_example;       ///< [N] totals
};

/// Evaluates the bound over x [N, ...] (labels [N] or undefined), in batches.
NllSummary evaluate_nll(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x,
                        const at::Tensor& labels, const NllOptions& options);

/// Progressive lossy compression (DDPM §4.3, Algorithms 3–4) read off the bound: after x_T … x_t have been sent,
/// the rate is L_T + Σ_{s > t} L_{s-1} bits/dim and the distortion is the RMSE, on the 0–255 scale, between x0 and
/// x̂0(x_t). Entries run t = T, T-1, …, 1 (paper timesteps); the last is the end point.
struct RateDistortion {
  std::vector<int64_t> t;
  std::vector<double> rate_bpd, distortion_rmse;
};
RateDistortion rate_distortion(const NllSummary& s);

}  // namespace ddpm
