// FID and IS against closed forms (SPEC §5).
#include <cmath>
#include <filesystem>

#include "ddpm/errors.h"
#include "ddpm/eval/metrics.h"
#include "support.h"

using namespace ddpm;
using namespace ddpm::test;

namespace {

FeatureStats stats(const at::Tensor& mean, const at::Tensor& cov) {
  FeatureStats s;
  s.mean = mean.to(at::kDouble);
  s.cov = cov.to(at::kDouble);
  s.count = 1000;
  return s;
}

at::Tensor dbl(std::vector<double> v, std::vector<int64_t> shape) {
  return at::tensor(v, at::TensorOptions().dtype(at::kDouble)).reshape(shape);
}

}  // namespace

TEST(Metrics, FidOfDiagonalGaussiansIsTheClosedForm) {
  // Commuting covariances: Tr((Σ1Σ2)^½) = Σ √(a_i b_i), so FID = |Δμ|² + Σ (√a_i - √b_i)².
  auto g = gen(1);
  const int64_t D = 50;
  auto m1 = at::randn({D}, g, at::TensorOptions().dtype(at::kDouble)), m2 = at::randn({D}, g, at::TensorOptions().dtype(at::kDouble));
  auto a = at::rand({D}, g, at::TensorOptions().dtype(at::kDouble)) + 0.1, b = at::rand({D}, g, at::TensorOptions().dtype(at::kDouble)) * 3;
  double want = 0;
  for (int64_t i = 0; i < D; ++i) {
    const double dm = m1[i].item<double>() - m2[i].item<double>();
    const double ds = std::sqrt(a[i].item<double>()) - std::sqrt(b[i].item<double>());
    want += dm * dm + ds * ds;
  }
  EXPECT_NEAR(frechet_distance(stats(m1, at::diag(a)), stats(m2, at::diag(b))), want, 1e-10 * want);
}

TEST(Metrics, FidOfTwoByTwoGaussiansIsTheClosedForm) {
  // For 2×2 matrices with positive eigenvalues, Tr(√M) = √(tr M + 2 √det M); here M = Σ1 Σ2 (not symmetric).
  auto s1 = dbl({2.0, 0.7, 0.7, 1.0}, {2, 2}), s2 = dbl({0.5, -0.2, -0.2, 3.0}, {2, 2});
  auto m1 = dbl({0.3, -1.0}, {2}), m2 = dbl({1.1, 0.4}, {2});
  const double p00 = 2.0 * 0.5 + 0.7 * -0.2, p11 = 0.7 * -0.2 + 1.0 * 3.0;  // diagonal of Σ1Σ2
  const double det = (2.0 * 1.0 - 0.7 * 0.7) * (0.5 * 3.0 - 0.2 * 0.2);
  const double tr_sqrt = std::sqrt(p00 + p11 + 2 * std::sqrt(det));
  const double want = (0.3 - 1.1) * (0.3 - 1.1) + (-1.0 - 0.4) * (-1.0 - 0.4) + 3.0 + 3.5 - 2 * tr_sqrt;
  const double got = frechet_distance(stats(m1, s1), stats(m2, s2));
  EXPECT_NEAR(got, want, 1e-12);
  EXPECT_NEAR(frechet_distance(stats(m2, s2), stats(m1, s1)), want, 1e-12);  // symmetric
}

TEST(Metrics, FidOfASetAgainstItselfIsZeroAndSamplesConverge) {
  auto g = gen(2);
  const int64_t D = 64;
  auto A = at::randn({D, D}, g, at::TensorOptions().dtype(at::kDouble)) / std::sqrt(double(D));
  auto x = at::matmul(at::randn({5000, D}, g, at::TensorOptions().dtype(at::kDouble)), A.t()) + 0.5;
  auto s = feature_stats(x);
  const double scale = s.cov.trace().item<double>();
  EXPECT_LT(frechet_distance(s, s), 1e-9 * scale);
  EXPECT_LT(max_abs_diff(s.mean, at::full({D}, 0.5, at::kDouble)), 0.1);
  // Two samples of one Gaussian: the estimate shrinks toward 0 as the sample grows (it is biased upward).
  auto y = at::matmul(at::randn({5000, D}, g, at::TensorOptions().dtype(at::kDouble)), A.t()) + 0.5;
  auto small = frechet_distance(feature_stats(x.slice(0, 0, 500)), feature_stats(y.slice(0, 0, 500)));
  auto large = frechet_distance(s, feature_stats(y));
  EXPECT_LT(large, small);
  EXPECT_LT(large, 0.05 * scale);
  EXPECT_THROW(feature_stats(at::zeros({1, 3})), InvalidArgument);
  EXPECT_THROW(frechet_distance(s, feature_stats(at::randn({10, 3}, g))), InvalidArgument);
}

TEST(Metrics, InceptionScoreOfUniformAndOfConfidentBalancedPredictions) {
  const int64_t K = 10;
  auto uniform = at::full({200, K}, 1.0 / K, at::kDouble);
  EXPECT_NEAR(inception_score(uniform).first, 1.0, 1e-12);
  auto onehot = at::zeros({200, K}, at::kDouble);
  for (int64_t i = 0; i < 200; ++i) onehot[i][i % K] = 1.0;
  auto [m, sd] = inception_score(onehot, 4);
  EXPECT_NEAR(m, double(K), 1e-9);
  EXPECT_NEAR(sd, 0.0, 1e-9);
  // Confident but all one class: p(y) equals p(y|x), so IS = 1.
  auto one_class = at::zeros({50, K}, at::kDouble);
  one_class.select(1, 3).fill_(1.0);
  EXPECT_NEAR(inception_score(one_class).first, 1.0, 1e-12);
  EXPECT_THROW(inception_score(uniform, 0), InvalidArgument);
}

TEST(Metrics, StatisticsCacheRoundTrips) {
  auto g = gen(3);
  auto s = feature_stats(at::randn({100, 8}, g));
  s.description = "fashion-mnist:train, classifier features";
  const auto path = (std::filesystem::temp_directory_path() / ("ddpm_stats_" + std::to_string(::getpid()) + ".safetensors")).string();
  save_feature_stats(path, s);
  auto r = load_feature_stats(path);
  EXPECT_TRUE(r.mean.equal(s.mean));
  EXPECT_TRUE(r.cov.equal(s.cov));
  EXPECT_EQ(r.count, 100);
  EXPECT_EQ(r.description, s.description);
  std::filesystem::remove(path);
}
