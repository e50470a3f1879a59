// Inverted dropout with a counter-based mask: y = x · m / (1 − p), m ~ Bernoulli(1 − p) per element, from a hash of
// the element's index and a seed drawn from LibTorch's default CPU generator (so torch::manual_seed makes it
// reproducible). The mask is never stored: backward regenerates it from the seed. On float or bfloat16 CPU tensors it runs in
// parallel without the serial random-number generator of at::dropout (docs/PERFORMANCE.md); elsewhere it is
// at::dropout.
#pragma once

#include <ATen/core/Tensor.h>

namespace ddpm {

/// x unchanged when !train or p == 0; throws InvalidArgument unless 0 ≤ p < 1.
at::Tensor hashed_dropout(const at::Tensor& x, double p, bool train);

}  // namespace ddpm
