#include "ddpm/mixture.h"

#include <string>

#include "ddpm/errors.h"

namespace ddpm {

void GaussianMixture::validate() const {
  const size_t K = weights.size();
  if (K == 0) throw InvalidArgument("a Gaussian mixture needs at least one component");
  if (means.size() != K || stds.size() != K)
    throw InvalidArgument("a Gaussian mixture needs as many means and stds as weights (" + std::to_string(K) + ")");
  const size_t D = means[0].size();
  if (D == 0) throw InvalidArgument("mixture means must have at least one dimension");
  double sum = 0.0;
  for (size_t k = 0; k < K; ++k) {
    if (means[k].size() != D) throw InvalidArgument("every mixture mean must have the same dimension");
    if (!(weights[k] >= 0.0)) throw InvalidArgument("mixture weights must be non-negative");
    if (!(stds[k] > 0.0)) throw InvalidArgument("mixture stds must be positive");
    sum += weights[k];
  }
  if (!(sum > 0.0)) throw InvalidArgument("mixture weights must not all be zero");
}

GaussianMixture GaussianMixture::gaussian(double mean, double std, int64_t dim) {
  if (dim < 1) throw InvalidArgument("a Gaussian needs dim ≥ 1");
  GaussianMixture g;
  g.weights = {1.0};
  g.means = {std::vector<double>(dim, mean)};
  g.stds = {std};
  g.validate();
  return g;
}

}  // namespace ddpm
