// Gaussian mixtures: the data of known density behind the exact denoisers (SPEC §9) and the toy sets.
#pragma once

#include <cstdint>
#include <vector>

namespace ddpm {

/// Σ_k π_k N(μ_k, s_k² I) in D dimensions.
struct GaussianMixture {
  std::vector<double> weights;             ///< [K], normalised on use
  std::vector<std::vector<double>> means;  ///< [K][D]
  std::vector<double> stds;                ///< [K]
  int64_t num_components() const { return static_cast<int64_t>(weights.size()); }
  int64_t dim() const { return means.empty() ? 0 : static_cast<int64_t>(means[0].size()); }
  /// Throws InvalidArgument if sizes disagree, a weight is negative or a std is not positive.
  void validate() const;
  /// N(mean·1, std² I) in `dim` dimensions.
  static GaussianMixture gaussian(double mean, double std, int64_t dim);
};

}  // namespace ddpm
