// Sample-quality metrics (SPEC §5): Fréchet distance between feature statistics (FID) and the Inception Score.
// Everything is computed in double; the feature network is someone else's business (see eval/features.h, later).
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace ddpm {

/// Mean and covariance of a set of feature vectors (what FID compares), in double.
struct FeatureStats {
  at::Tensor mean;  ///< [D] float64
  at::Tensor cov;   ///< [D, D] float64, the unbiased (N-1) sample covariance
  int64_t count = 0;
  std::string description;  ///< what the features are of (data split, feature network), kept in cache files
};

/// Statistics of features [N, D] (N ≥ 2). Throws InvalidArgument otherwise.
FeatureStats feature_stats(const at::Tensor& features);

/// ||μ1 - μ2||² + Tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^{1/2}). Tr((Σ1 Σ2)^{1/2}) is Σ √λ_i of the symmetric positive
/// semi-definite Σ1^{1/2} Σ2 Σ1^{1/2} (the same eigenvalues as Σ1 Σ2), both square roots through symmetric
/// eigendecompositions; eigenvalues below zero from rounding count as 0. Throws InvalidArgument on a shape mismatch.
double frechet_distance(const FeatureStats& a, const FeatureStats& b);

/// Inception Score exp(E_x KL(p(y|x) || p(y))) of class probabilities [N, K] (rows sum to 1), computed over `splits`
/// equal parts as the papers do; returns {mean, std over the splits}.
std::pair<double, double> inception_score(const at::Tensor& probs, int64_t splits = 1);

/// Cache files for reference statistics (safetensors: "mean", "cov", metadata count and description).
void save_feature_stats(const std::string& path, const FeatureStats& s);
FeatureStats load_feature_stats(const std::string& path);

}  // namespace ddpm
