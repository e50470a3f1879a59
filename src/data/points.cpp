#include "ddpm/data/points.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "ddpm/compat.h"
#include "ddpm/errors.h"
#include "ddpm/io/file.h"
#include "ddpm/io/npy.h"

namespace ddpm {
namespace {

constexpr double kRingRadius = 2.0, kRingStd = 0.1;

}  // namespace

std::vector<std::string> toy_names() { return {"8gaussians", "swissroll", "moons", "checkerboard", "gaussian"}; }

GaussianMixture toy_mixture(const std::string& name) {
  if (name == "8gaussians") {
    GaussianMixture g;
    for (int k = 0; k < 8; ++k) {
      const double a = 2.0 * M_PI * k / 8.0;
      g.weights.push_back(1.0);
      g.means.push_back({kRingRadius * std::cos(a), kRingRadius * std::sin(a)});
      g.stds.push_back(kRingStd);
    }
    return g;
  }
  if (name == "gaussian") return GaussianMixture::gaussian(0.1, 0.4, 2);
  throw InvalidArgument("toy set '" + name + "' is not a Gaussian mixture (gmm: accepts 8gaussians or gaussian)");
}

PointSet sample_mixture(const GaussianMixture& g, int64_t n, at::Generator gen) {
  g.validate();
  const int64_t K = g.num_components(), D = g.dim();
  auto dbl = at::TensorOptions().dtype(at::kDouble);
  auto w = at::tensor(at::ArrayRef<double>(g.weights), dbl);
  auto means = at::empty({K, D}, dbl);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t d = 0; d < D; ++d) means[k][d] = g.means[k][d];
  auto stds = at::tensor(at::ArrayRef<double>(g.stds), dbl);
  PointSet p;
  p.labels = at::multinomial(w / w.sum(), n, true, gen);
  auto z = at::randn({n, D}, gen, dbl);
  p.x = (means.index_select(0, p.labels) + stds.index_select(0, p.labels).unsqueeze(1) * z).to(at::kFloat);
  p.num_classes = K;
  return p;
}

PointSet make_toy(const std::string& name, int64_t n, uint64_t seed) {
  if (n < 1) throw InvalidArgument("a toy data set needs at least one point");
  auto gen = compat::make_cpu_generator(seed);
  auto f = at::TensorOptions().dtype(at::kDouble);
  PointSet p;
  if (name == "8gaussians") {
    p = sample_mixture(toy_mixture(name), n, gen);
  } else if (name == "gaussian") {
    p = sample_mixture(toy_mixture(name), n, gen);
    p.labels = at::Tensor();
    p.num_classes = 0;
  } else if (name == "swissroll") {
    // sklearn's make_swiss_roll in the (x, z) plane, scaled to about [-2, 2].
    auto u = at::rand({n}, gen, f);
    auto t = 1.5 * M_PI * (1 + 2 * u);
    p.x = (at::stack({t * t.cos(), t * t.sin()}, 1) / 5.0 + 0.05 * at::randn({n, 2}, gen, f)).to(at::kFloat);
  } else if (name == "moons") {
    // Two interleaved half circles (sklearn's make_moons), centred and scaled by 1.5, noise 0.05; label = moon.
    auto labels = at::randint(0, 2, {n}, gen, at::TensorOptions().dtype(at::kLong));
    auto theta = M_PI * at::rand({n}, gen, f);
    auto x = at::where(labels == 0, theta.cos(), 1 - theta.cos());
    auto y = at::where(labels == 0, theta.sin(), 0.5 - theta.sin());
    auto pts = at::stack({x - 0.5, y - 0.25}, 1) * 1.5 + 0.05 * at::randn({n, 2}, gen, f);
    p.x = pts.to(at::kFloat);
    p.labels = labels;
    p.num_classes = 2;
  } else if (name == "checkerboard") {
    // FFJORD's checkerboard on [-2, 2]²: 8 filled squares of side 1.
    auto x1 = at::rand({n}, gen, f) * 4 - 2;
    auto x2 = at::rand({n}, gen, f) - at::randint(0, 2, {n}, gen, f) * 2;
    x2 = x2 + at::remainder(at::floor(x1), 2);
    p.x = at::stack({x1, x2}, 1).to(at::kFloat);
  } else {
    std::string names;
    for (const auto& s : toy_names()) names += (names.empty() ? "" : ", ") + s;
    throw InvalidArgument("unknown toy data set '" + name + "' (choose " + names + ")");
  }
  return p;
}

PointSet load_points_npy(const std::string& path, const std::string& labels_path) {
  auto x = read_npy(path);
  if (x.dim() != 2 || x.size(0) < 1 || x.size(1) < 1)
    throw FormatError("'" + path + "' must hold an N×D array of points, but its shape is " +
                      std::string(c10::str(x.sizes())));
  if (x.scalar_type() != at::kFloat && x.scalar_type() != at::kDouble)
    throw FormatError("'" + path + "' must hold float32 or float64 points");
  PointSet p;
  p.x = x.to(at::kFloat);
  if (!p.x.isfinite().all().item<bool>()) throw FormatError("'" + path + "' contains NaN or infinite values");
  if (!labels_path.empty()) {
    auto y = read_npy(labels_path);
    if (y.dim() != 1 || y.size(0) != x.size(0) || y.is_floating_point())
      throw FormatError("'" + labels_path + "' must hold " + std::to_string(x.size(0)) + " integer labels, one per point");
    p.labels = y.to(at::kLong);
    if (p.labels.min().item<int64_t>() < 0) throw FormatError("'" + labels_path + "' has negative labels");
    p.num_classes = p.labels.max().item<int64_t>() + 1;
  }
  return p;
}

GaussianMixture load_mixture_json(const std::string& path) {
  const std::string text = read_file(path);
  GaussianMixture g;
  try {
    auto j = nlohmann::json::parse(text);
    g.weights = j.at("weights").get<std::vector<double>>();
    g.means = j.at("means").get<std::vector<std::vector<double>>>();
    g.stds = j.at("stds").get<std::vector<double>>();
  } catch (const nlohmann::json::exception& e) {
    throw FormatError("'" + path + "' is not a mixture file {\"weights\": [K], \"means\": [K][D], \"stds\": [K]}: " +
                      e.what());
  }
  try {
    g.validate();
  } catch (const InvalidArgument& e) {
    throw FormatError("'" + path + "': " + e.what());
  }
  return g;
}

PointSet load_points(const std::string& spec, int64_t size, uint64_t seed, const std::string& labels) {
  if (spec.rfind("toy:", 0) == 0) {
    if (!labels.empty())
      throw InvalidArgument("labels apply to .npy data only; toy sets bring their own", "labels");
    return make_toy(spec.substr(4), size, seed);
  }
  if (spec.size() > 4 && spec.substr(spec.size() - 4) == ".npy") return load_points_npy(spec, labels);
  throw InvalidArgument("data must be toy:NAME or a .npy file (got '" + spec + "')", "data");
}

}  // namespace ddpm
