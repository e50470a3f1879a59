#include <cmath>
#include <cstdio>

#include "ddpm/eval/nll.h"
#include "ddpm/likelihood.h"
#include "ddpm/models/exact.h"
#include "support.h"

using namespace ddpm;
using namespace ddpm::test;

namespace {

const double kMean = 0.1, kStd = 0.4;
const auto kDouble = at::TensorOptions().dtype(at::kDouble);

at::Tensor quantised_gaussian(int64_t n, uint64_t seed) {
  auto g = gen(seed);
  auto x = kMean + kStd * at::randn({n, 1}, g, kDouble);
  return ((x + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1;
}

/// Entropy (bits) of N(0.1, 0.4²) rounded to the 256-level grid of [-1, 1], the edge bins taking the tails.
double discrete_entropy() {
  double h = 0;
  for (int k = 0; k < 256; ++k) {
    const double c = k / 127.5 - 1;
    const double lo = k == 0 ? -INFINITY : c - 1 / 255.0, hi = k == 255 ? INFINITY : c + 1 / 255.0;
    const double p = normal_cdf((hi - kMean) / kStd) - normal_cdf((lo - kMean) / kStd);
    if (p > 0) h -= p * std::log2(p);
  }
  return h;
}

}  // namespace

TEST(Likelihood, PriorTermMatchesItsClosedForm) {
  auto d = make_diffusion(1000);
  auto x0 = at::linspace(-1, 1, 11, kDouble).unsqueeze(1);
  auto got = prior_bpd(d, x0);
  const double a = cumprod(linear_betas(1000)).back();
  for (int i = 0; i < 11; ++i) {
    const double x = -1 + 0.2 * i;
    const double kl = 0.5 * (-1 - std::log(1 - a) + (1 - a) + a * x * x) / std::log(2.0);
    EXPECT_NEAR(got[i].item<double>(), kl, 1e-12);
  }
}

TEST(Likelihood, DiscreteEntropyOfTheTestDataIsAsPublished) {
  EXPECT_NEAR(discrete_entropy(), 7.633, 0.001);
}

TEST(Likelihood, ExactGaussianBitsPerDimBoundTheEntropyAndMatchTheReference) {
  // openai/improved-diffusion's calc_bpd_loop with the same exact denoiser on 4000 points, whose own Monte-Carlo
  // error is about the stated tolerance. Here the expectation over the data is taken exactly (every grid value,
  // weighted by its probability) and only the forward-process noise is sampled, so our own error is small.
  struct Case {
    int64_t T;
    VarType var;
    double reference, tolerance;
  };
  const std::vector<Case> cases = {{100, VarType::fixed_large, 7.748, 0.03},  {1000, VarType::fixed_large, 7.819, 0.03},
                                   {4000, VarType::fixed_large, 7.729, 0.03}, {100, VarType::fixed_small, 9.487, 0.05},
                                   {1000, VarType::fixed_small, 8.489, 0.05}, {4000, VarType::fixed_small, 8.205, 0.05}};
  const double entropy = discrete_entropy();
  const int64_t R = 48;  // noise draws per grid value
  std::vector<double> p(256);
  for (int k = 0; k < 256; ++k) {
    const double c = k / 127.5 - 1;
    const double lo = k == 0 ? -INFINITY : c - 1 / 255.0, hi = k == 255 ? INFINITY : c + 1 / 255.0;
    p[k] = normal_cdf((hi - kMean) / kStd) - normal_cdf((lo - kMean) / kStd);
  }
  auto grid = (at::arange(256, kDouble) / 127.5 - 1).repeat_interleave(R).unsqueeze(1);
  for (const auto& c : cases) {
    GaussianDiffusion d(Schedule::make(BetaSchedule::linear, c.T), MeanType::eps, c.var);
    ExactMixtureDenoiser exact(GaussianMixture::gaussian(kMean, kStd, 1), d.alphas_cumprod());
    NllOptions o;
    o.batch = grid.size(0);
    o.seed = 11;
    auto s = evaluate_nll(d, exact.as_denoiser(), grid, {}, o);
    auto per_value = s.per_example.view({256, R});
    auto w = at::tensor(p, kDouble);
    const double bpd = (w * per_value.mean(1)).sum().item<double>();
    const double se = std::sqrt((w * w * per_value.var(1) / R).sum().item<double>());
    std::printf("T = %4lld %-11s: %.4f ± %.4f bits/dim (reference %.3f ± %.2f; entropy %.3f)\n",
                static_cast<long long>(c.T), to_string(c.var).c_str(), bpd, se, c.reference, c.tolerance, entropy);
    EXPECT_GT(bpd - 3 * se, entropy) << c.T << " " << to_string(c.var);
    EXPECT_NEAR(bpd, c.reference, 2 * c.tolerance + 3 * se) << c.T << " " << to_string(c.var);
    // The total is the sum of its terms.
    double sum = s.prior_bpd;
    for (double v : s.terms) sum += v;
    EXPECT_NEAR(sum, s.bits_per_dim, 1e-9);
  }
}

TEST(Likelihood, BatchingDoesNotChangeTheTerms) {
  auto d = make_diffusion(50);
  ExactMixtureDenoiser exact(GaussianMixture::gaussian(kMean, kStd, 1), d.alphas_cumprod());
  auto x = quantised_gaussian(300, 3);
  NllOptions a, b;
  a.batch = 300;
  b.batch = 300;
  auto s1 = evaluate_nll(d, exact.as_denoiser(), x, {}, a);
  auto s2 = evaluate_nll(d, exact.as_denoiser(), x, {}, b);
  EXPECT_EQ(s1.bits_per_dim, s2.bits_per_dim);  // same seed, same numbers
  int64_t calls = 0;
  b.batch = 64;
  b.progress = [&](int64_t, int64_t total) {
    ++calls;
    EXPECT_EQ(total, 5 * 50);
  };
  auto s3 = evaluate_nll(d, exact.as_denoiser(), x, {}, b);
  EXPECT_EQ(calls, 5 * 50);
  EXPECT_NEAR(s3.bits_per_dim, s1.bits_per_dim, 5 * s1.stderr_);
}

TEST(Likelihood, RateDistortionOfGaussianDataFollowsThePosteriorVariance) {
  // With the exact denoiser, x̂0(x_t) = E[x0 | x_t], so the distortion is the posterior std:
  // 127.5 · s √((1-a)/v), a = ᾱ_t, v = a s² + 1 - a (SPEC §9). The rate grows as t falls and ends at the bound.
  const double m = 0.1, s = 0.4;
  auto d = make_diffusion(100);
  auto den = ExactMixtureDenoiser(GaussianMixture::gaussian(m, s, 1), d.alphas_cumprod()).as_denoiser();
  auto g = gen(11);
  auto x = m + s * at::randn({8000, 1}, g, at::TensorOptions().dtype(at::kDouble));
  NllOptions o;
  o.decoder = Decoder::continuous;
  o.batch = 8000;
  auto sum = evaluate_nll(d, den, x, {}, o);
  auto rd = rate_distortion(sum);
  ASSERT_EQ(rd.t.size(), 100u);
  EXPECT_EQ(rd.t.front(), 100);
  EXPECT_EQ(rd.t.back(), 1);
  EXPECT_DOUBLE_EQ(rd.rate_bpd.front(), sum.prior_bpd);
  EXPECT_NEAR(rd.rate_bpd.back() + sum.terms[0], sum.bits_per_dim, 1e-9);  // + L_0 = lossless
  for (size_t i = 1; i < rd.t.size(); ++i) EXPECT_GE(rd.rate_bpd[i], rd.rate_bpd[i - 1] - 1e-12);
  for (int64_t t : {100, 50, 10, 1}) {
    const double a = d.alphas_cumprod()[t - 1], v = a * s * s + 1 - a;
    const double want = 127.5 * s * std::sqrt((1 - a) / v);
    const double got = rd.distortion_rmse[100 - t];
    std::printf("t = %3lld: distortion %.3f (posterior std %.3f), rate %.4f bits/dim\n", static_cast<long long>(t), got,
                want, rd.rate_bpd[100 - t]);
    EXPECT_NEAR(got / want, 1.0, 0.04) << t;
  }
}

TEST(Likelihood, PackingTimestepsIntoOneCallChangesNoNumber) {
  // 20 points and room for 1000 rows per call: 50 timesteps share each call of the model. Same seed, same noise,
  // so every term equals the one-step-per-call evaluation.
  auto d = make_diffusion(120);
  ExactMixtureDenoiser exact(GaussianMixture::gaussian(kMean, kStd, 1), d.alphas_cumprod());
  auto x = quantised_gaussian(20, 5);
  int64_t calls = 0, largest = 0;
  Denoiser counting = [&](const at::Tensor& xt, const at::Tensor& t, const at::Tensor& y) {
    ++calls;
    largest = std::max(largest, xt.size(0));
    return exact.as_denoiser()(xt, t, y);
  };
  NllOptions one, packed;
  one.batch = 20;
  packed.batch = 1000;
  auto a = evaluate_nll(d, exact.as_denoiser(), x, {}, one);
  auto b = evaluate_nll(d, counting, x, {}, packed);
  EXPECT_EQ(calls, 3);     // 50 + 50 + 20 steps
  EXPECT_EQ(largest, 1000);
  EXPECT_NEAR(a.bits_per_dim, b.bits_per_dim, 1e-12);
  for (size_t i = 0; i < a.terms.size(); ++i) {
    EXPECT_NEAR(a.terms[i], b.terms[i], 1e-12) << "term " << i;
    EXPECT_NEAR(a.x0_mse[i], b.x0_mse[i], 1e-12) << "term " << i;
  }
  EXPECT_TRUE(a.per_example.allclose(b.per_example, 0, 1e-12));
}
