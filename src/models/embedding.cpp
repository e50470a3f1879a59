#include "ddpm/models/embedding.h"

#include <cmath>

#include "ddpm/errors.h"

namespace ddpm {

at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim, bool flip_sin_to_cos, int64_t freq_shift,
                              double scale) {
  if (dim < 4 || dim % 2 != 0) throw InvalidArgument("timestep embedding size must be even and ≥ 4");
  const int64_t half = dim / 2;
  if (freq_shift < 0 || freq_shift >= half) throw InvalidArgument("freq_shift must be 0 or 1", "freq_shift");
  const double w = std::log(10000.0) / static_cast<double>(half - freq_shift);
  auto opts = at::TensorOptions().dtype(at::kFloat).device(t.device());
  auto freqs = at::exp(at::arange(half, opts) * -w);
  auto tf = t.to(at::kFloat);
  if (scale != 1.0) tf = tf * scale;
  auto args = tf.unsqueeze(1) * freqs.unsqueeze(0);
  return flip_sin_to_cos ? at::cat({args.cos(), args.sin()}, 1) : at::cat({args.sin(), args.cos()}, 1);
}

}  // namespace ddpm
