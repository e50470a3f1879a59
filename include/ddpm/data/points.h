// Low-dimensional point sets: the 2-D toy distributions and .npy point files.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "ddpm/mixture.h"

namespace ddpm {

struct PointSet {
  at::Tensor x;             ///< [N, D] float32
  at::Tensor labels;        ///< [N] int64 in 0..num_classes-1, or undefined
  int64_t num_classes = 0;  ///< 0 when unlabelled
  int64_t size() const { return x.defined() ? x.size(0) : 0; }
  int64_t dim() const { return x.defined() ? x.size(1) : 0; }
};

/// Names of the toy distributions: 8gaussians (labelled by mode), swissroll, moons (labelled by moon),
/// checkerboard, gaussian (N(0.1, 0.4²) in 2-D).
std::vector<std::string> toy_names();

/// n points of a toy distribution drawn with the given seed (same seed, same points).
/// Throws InvalidArgument for an unknown name or n < 1.
PointSet make_toy(const std::string& name, int64_t n, uint64_t seed);

/// The toy sets that are Gaussian mixtures ("8gaussians", "gaussian"), for the exact denoiser.
GaussianMixture toy_mixture(const std::string& name);

/// Draws n points (and their component labels) from a mixture.
PointSet sample_mixture(const GaussianMixture& mixture, int64_t n, at::Generator gen);

/// Reads an [N, D] float32/float64 .npy (and optionally an [N] integer labels .npy); throws on bad files.
PointSet load_points_npy(const std::string& path, const std::string& labels_path = "");

/// A point set by spec: toy:NAME (`size` points drawn with `seed`) or FILE.npy (with an optional labels .npy).
/// Throws InvalidArgument (field "data") for any other spec.
PointSet load_points(const std::string& spec, int64_t size, uint64_t seed, const std::string& labels_path = "");

/// Reads a mixture from JSON {"weights": [K], "means": [K][D], "stds": [K]}; throws IoError / FormatError.
GaussianMixture load_mixture_json(const std::string& path);

}  // namespace ddpm
