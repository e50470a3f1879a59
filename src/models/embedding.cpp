#include "ddpm/models/embedding.h"

#include <cmath>

#include "ddpm/errors.h"

namespace ddpm {

at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim) {
  if (dim < 4 || dim % 2 != 0) throw InvalidArgument("timestep embedding size must be even and ≥ 4");
  const int64_t half = dim / 2;
  const double scale = std::log(10000.0) / static_cast<double>(half - 1);
  auto opts = at::TensorOptions().dtype(at::kFloat).device(t.device());
  auto freqs = at::exp(at::arange(half, opts) * -scale);
  auto args = t.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  return at::cat({args.sin(), args.cos()}, 1);
}

}  // namespace ddpm
