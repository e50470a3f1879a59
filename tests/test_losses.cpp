#include <cmath>

#include "ddpm/errors.h"
#include "ddpm/losses.h"
#include "ddpm/models/exact.h"
#include "support.h"

#include <torch/csrc/autograd/autograd.h>

using namespace ddpm;
using namespace ddpm::test;

namespace {
const auto kDouble = at::TensorOptions().dtype(at::kDouble);
at::Tensor scalar(double v) { return at::full({1}, v, kDouble); }
}  // namespace

TEST(Losses, NormalKlMatchesClosedForm) {
  for (auto [m1, s1, m2, s2] : std::vector<std::array<double, 4>>{{0, 1, 0, 1}, {0.3, 0.5, -0.2, 2.0}, {1, 1e-3, 1, 1e-2}}) {
    const double expect = std::log(s2 / s1) + (s1 * s1 + (m1 - m2) * (m1 - m2)) / (2 * s2 * s2) - 0.5;
    auto kl = normal_kl(scalar(m1), scalar(2 * std::log(s1)), scalar(m2), scalar(2 * std::log(s2)));
    EXPECT_NEAR(kl.item<double>(), expect, 1e-12 * std::max(1.0, expect));
  }
}

TEST(Losses, DiscretisedDecoderIsANormalisedDistributionOverTheGrid) {
  auto grid = at::arange(256, kDouble) / 127.5 - 1;
  for (auto [mu, sigma] : std::vector<std::pair<double, double>>{{0.0, 0.01}, {0.37, 0.003}, {-0.99, 0.2}, {1.2, 0.5}}) {
    auto ll = discretized_gaussian_log_likelihood(grid, at::full({256}, mu, kDouble),
                                                  at::full({256}, std::log(sigma), kDouble));
    EXPECT_NEAR(ll.exp().sum().item<double>(), 1.0, 1e-9) << mu << " " << sigma;
    // Each interior bin is Φ((x+1/255-μ)/σ) - Φ((x-1/255-μ)/σ), edge bins open.
    for (int k : {0, 1, 100, 128, 254, 255}) {
      const double x = k / 127.5 - 1;
      const double hi = k == 255 ? 1.0 : normal_cdf((x + 1 / 255.0 - mu) / sigma);
      const double lo = k == 0 ? 0.0 : normal_cdf((x - 1 / 255.0 - mu) / sigma);
      if (hi - lo > 1e-10) {
        EXPECT_NEAR(ll[k].item<double>(), std::log(hi - lo), 1e-7) << k;
      }
    }
  }
  // Far in the tail the upper-tail difference keeps precision where Φ(b) - Φ(a) would cancel.
  const double x = 128 / 127.5 - 1, mu = x - 7 * 0.01;
  auto ll = discretized_gaussian_log_likelihood(scalar(x), scalar(mu), scalar(std::log(0.01)));
  const double expect = std::log(0.5 * std::erfc((x - 1 / 255.0 - mu) / 0.01 / std::sqrt(2.0)) -
                                 0.5 * std::erfc((x + 1 / 255.0 - mu) / 0.01 / std::sqrt(2.0)));
  EXPECT_NEAR(ll.item<double>(), expect, 1e-9);
}

TEST(Losses, GaussianLogLikelihoodIsTheDensity) {
  auto ll = gaussian_log_likelihood(scalar(0.3), scalar(-0.1), scalar(std::log(0.7)));
  EXPECT_NEAR(ll.item<double>(), -0.5 * std::log(2 * M_PI) - std::log(0.7) - 0.5 * std::pow(0.4 / 0.7, 2), 1e-14);
}

TEST(Losses, SimpleLossOfTheExactDenoiserIsItsAnalyticMinimum) {
  // For x0 ~ N(m, s²): Var(x0 | x_t) = s²(1-a)/v, Var(ε | x_t) = a s²/v, Var(v | x_t) = s²/v, v = a s² + 1 - a.
  const double m = 0.1, s = 0.4;
  const int64_t N = 200000;
  for (auto mt : {MeanType::eps, MeanType::x0, MeanType::v}) {
    auto d = make_diffusion(1000, mt);
    ExactMixtureDenoiser exact(GaussianMixture::gaussian(m, s, 1), d.alphas_cumprod(), mt);
    auto g = gen(4);
    for (int64_t i : {0, 10, 300, 999}) {
      auto x0 = m + s * at::randn({N, 1}, g, kDouble);
      auto l = training_losses(d, exact.as_denoiser(), x0, full_t(N, i), {}, at::randn({N, 1}, g, kDouble),
                               LossType::mse);
      const double a = d.alphas_cumprod()[i], v = a * s * s + 1 - a;
      const double expect = mt == MeanType::eps ? a * s * s / v : mt == MeanType::x0 ? s * s * (1 - a) / v : s * s / v;
      EXPECT_NEAR(l.loss.mean().item<double>() / expect, 1.0, 0.02) << to_string(mt) << " t " << i;
      EXPECT_FALSE(l.vb.defined());
    }
  }
}

TEST(Losses, LossTypesScaleAndDetachAsSpecified) {
  const int64_t T = 100, B = 16;
  GaussianDiffusion d(Schedule::make(BetaSchedule::linear, T), MeanType::eps, VarType::learned_range);
  auto g = gen(5);
  auto x0 = at::rand({B, 2}, g, kDouble) * 2 - 1;
  auto noise = at::randn({B, 2}, g, kDouble);
  auto t = at::randint(0, T, {B}, g, at::TensorOptions().dtype(at::kLong));
  auto raw = at::randn({B, 4}, g, kDouble).mul_(0.3).requires_grad_(true);
  Denoiser net = [&](const at::Tensor&, const at::Tensor&, const at::Tensor&) { return raw * 1.0; };
  auto mse = training_losses(d, net, x0, t, {}, noise, LossType::mse);
  auto rmse = training_losses(d, net, x0, t, {}, noise, LossType::rescaled_mse);
  auto hyb = training_losses(d, net, x0, t, {}, noise, LossType::hybrid);
  auto kl = training_losses(d, net, x0, t, {}, noise, LossType::kl);
  auto rkl = training_losses(d, net, x0, t, {}, noise, LossType::rescaled_kl);
  EXPECT_LT(max_abs_diff(rmse.vb, mse.vb * (T / 1000.0)), 1e-12);
  EXPECT_LT(max_abs_diff(hyb.loss, rmse.loss), 1e-12);
  EXPECT_LT(max_abs_diff(rkl.loss, kl.loss * T), 1e-9);
  EXPECT_LT(max_abs_diff(kl.loss, mse.vb), 1e-12);  // the VLB term is the same number either way
  // The VLB term of the hybrid loss reaches the variance half only (Improved DDPM §3.1).
  auto grad_vb = torch::autograd::grad({hyb.vb.sum()}, {raw})[0];
  EXPECT_EQ(grad_vb.slice(1, 0, 2).abs().max().item<double>(), 0.0);
  EXPECT_GT(grad_vb.slice(1, 2, 4).abs().max().item<double>(), 0.0);
  auto grad_kl = torch::autograd::grad({kl.loss.sum()}, {raw})[0];
  EXPECT_GT(grad_kl.slice(1, 0, 2).abs().max().item<double>(), 0.0);  // the kl loss trains the mean too
  EXPECT_THROW(parse_loss_type("l2"), InvalidArgument);
}
