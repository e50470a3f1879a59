#include <cmath>

#include "ddpm/diffusion.h"
#include "ddpm/errors.h"
#include "support.h"

using namespace ddpm;
using namespace ddpm::test;

namespace {
const auto kDouble = at::TensorOptions().dtype(at::kDouble);
}

TEST(Diffusion, ClosedFormMarginalAgreesWithIteratingTheChain) {
  // q(x_t | x0) in closed form against t steps of x_t = √(1-β_t) x_{t-1} + √β_t z, by moments.
  const int64_t T = 1000, N = 200000;
  auto d = make_diffusion(T);
  auto g = gen(1);
  const double x0v = 0.7;
  auto x = at::full({N, 1}, x0v, kDouble);
  const auto& betas = d.betas();
  for (int64_t i = 0; i < T; ++i) {
    x = std::sqrt(1 - betas[i]) * x + std::sqrt(betas[i]) * at::randn({N, 1}, g, kDouble);
    if (i == 9 || i == 99 || i == 499 || i == 999) {
      auto q = d.q_mean_variance(at::full({1, 1}, x0v, kDouble), full_t(1, i));
      const double m = q.mean.item<double>(), v = q.variance.item<double>();
      EXPECT_NEAR(x.mean().item<double>(), m, 5 * std::sqrt(v / N)) << "t index " << i;
      EXPECT_NEAR(x.var().item<double>() / v, 1.0, 0.015) << "t index " << i;
      // and q_sample draws from the same law
      auto xs = d.q_sample(at::full({N, 1}, x0v, kDouble), full_t(N, i), at::randn({N, 1}, g, kDouble));
      EXPECT_NEAR(xs.mean().item<double>(), m, 5 * std::sqrt(v / N));
      EXPECT_NEAR(xs.var().item<double>() / v, 1.0, 0.015);
    }
  }
}

TEST(Diffusion, PosteriorAgreesWithBayesRuleNumerically) {
  // q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0), integrated on a fine grid in double.
  const int64_t T = 1000;
  auto d = make_diffusion(T);
  auto betas = linear_betas(T);
  auto ac = cumprod(betas);
  const double x0 = 0.3, xt = -0.4;
  for (int64_t i : {1, 2, 10, 500, 999}) {
    const double b = betas[i], acp = ac[i - 1];
    const double lo = -4, hi = 4;
    const int n = 2000001;
    auto log_w = [&](double y) {
      return -std::pow(xt - std::sqrt(1 - b) * y, 2) / (2 * b) - std::pow(y - std::sqrt(acp) * x0, 2) / (2 * (1 - acp));
    };
    double peak = -1e300;
    for (int k = 0; k < n; ++k) peak = std::max(peak, log_w(lo + (hi - lo) * k / (n - 1)));
    double z = 0, m1 = 0, m2 = 0;
    for (int k = 0; k < n; ++k) {
      const double y = lo + (hi - lo) * k / (n - 1);
      const double w = std::exp(log_w(y) - peak);
      z += w, m1 += w * y, m2 += w * y * y;
    }
    const double mean = m1 / z, var = m2 / z - mean * mean;
    auto q = d.q_posterior_mean_variance(at::full({1, 1}, x0, kDouble), at::full({1, 1}, xt, kDouble), full_t(1, i));
    EXPECT_NEAR(q.mean.item<double>(), mean, 1e-8) << i;
    EXPECT_NEAR(q.variance.item<double>() / var, 1.0, 1e-5) << i;
    EXPECT_NEAR(q.log_variance.item<double>(), std::log(var), 1e-5) << i;
  }
  // At the first step the posterior is x0 itself; its log variance is clipped to that of the second step.
  auto q0 = d.q_posterior_mean_variance(at::full({1, 1}, x0, kDouble), at::full({1, 1}, xt, kDouble), full_t(1, 0));
  EXPECT_NEAR(q0.mean.item<double>(), x0, 1e-12);
  EXPECT_EQ(q0.variance.item<double>(), 0.0);
  EXPECT_NEAR(q0.log_variance.item<double>(), std::log(betas[1] * (1 - ac[0]) / (1 - ac[1])), 1e-12);
}

TEST(Diffusion, ParameterisationConversionsInvertEachOther) {
  auto d = make_diffusion(1000, MeanType::eps, VarType::fixed_large, BetaSchedule::cosine);
  auto g = gen(2);
  auto x0 = at::rand({64, 3}, g, kDouble) * 2 - 1;
  auto eps = at::randn({64, 3}, g, kDouble);
  auto t = at::randint(0, 1000, {64}, g, at::TensorOptions().dtype(at::kLong));
  auto xt = d.q_sample(x0, t, eps);
  EXPECT_LT(max_abs_diff(d.predict_x0_from_eps(xt, t, eps), x0), 1e-9);
  EXPECT_LT(max_abs_diff(d.predict_eps_from_x0(xt, t, x0), eps), 1e-9);
  auto v = d.predict_v(x0, t, eps);
  EXPECT_LT(max_abs_diff(d.predict_x0_from_v(xt, t, v), x0), 1e-9);
  auto t1 = t.clamp_min(1);  // prev_x cannot recover x0 at the first step, where μ̃ = x0 exactly
  auto xt1 = d.q_sample(x0, t1, eps);
  EXPECT_LT(max_abs_diff(d.predict_x0_from_xprev(xt1, t1, d.q_posterior_mean_variance(x0, xt1, t1).mean), x0), 1e-8);
}

TEST(Diffusion, PMeanVarianceForEveryMeanAndVarianceType) {
  const int64_t T = 200, B = 32, D = 4;
  auto betas = linear_betas(T);
  auto ac = cumprod(betas);
  auto g = gen(3);
  auto x0 = at::rand({B, D}, g, kDouble) * 1.8 - 0.9;
  auto eps = at::randn({B, D}, g, kDouble);
  auto t = at::randint(0, T, {B}, g, at::TensorOptions().dtype(at::kLong));
  t[0] = 0;
  t[1] = T - 1;
  auto raw_v = at::rand({B, D}, g, kDouble) * 2 - 1;  // a learned_range output in [-1, 1]
  auto raw_log = at::randn({B, D}, g, kDouble) - 5;   // a learned log-variance output
  for (auto m : {MeanType::eps, MeanType::x0, MeanType::prev_x, MeanType::v}) {
    for (auto vt : {VarType::fixed_small, VarType::fixed_large, VarType::learned, VarType::learned_range}) {
      GaussianDiffusion d(Schedule::make(BetaSchedule::linear, T), m, vt);
      auto xt = d.q_sample(x0, t, eps);
      // Independent posterior mean (DDPM eq. 7) and oracle outputs, in plain double per example.
      auto mu = at::empty_like(x0);
      auto expect_var = at::empty_like(x0);
      auto v_target = at::empty_like(x0);
      for (int64_t b = 0; b < B; ++b) {
        const int64_t i = t[b].item<int64_t>();
        const double a = ac[i], ap = i > 0 ? ac[i - 1] : 1.0, be = betas[i];
        const double c1 = be * std::sqrt(ap) / (1 - a), c2 = (1 - ap) * std::sqrt(1 - be) / (1 - a);
        mu[b] = c1 * x0[b] + c2 * xt[b];
        v_target[b] = std::sqrt(a) * eps[b] - std::sqrt(1 - a) * x0[b];
        const double post1 = betas[1] * (1 - ac[0]) / (1 - ac[1]);
        const double post = i == 0 ? post1 : be * (1 - ap) / (1 - a);
        const double large = i == 0 ? post1 : be;
        if (vt == VarType::fixed_small) expect_var[b].fill_(i == 0 ? 0.0 : post);
        if (vt == VarType::fixed_large) expect_var[b].fill_(large);
        if (vt == VarType::learned) expect_var[b] = raw_log[b].exp();
        if (vt == VarType::learned_range) {
          auto frac = (raw_v[b] + 1) / 2;
          expect_var[b] = (frac * std::log(be) + (1 - frac) * std::log(post)).exp();
        }
      }
      at::Tensor out;
      switch (m) {
        case MeanType::eps: out = eps; break;
        case MeanType::x0: out = x0; break;
        case MeanType::prev_x: out = mu; break;
        case MeanType::v: out = v_target; break;
      }
      if (vt == VarType::learned) out = at::cat({out, raw_log}, 1);
      if (vt == VarType::learned_range) out = at::cat({out, raw_v}, 1);
      auto p = d.p_mean_variance_from_output(out, xt, t, false);
      const std::string what = to_string(m) + "/" + to_string(vt);
      EXPECT_LT(max_abs_diff(p.mean, mu), 1e-9) << what;
      if (m != MeanType::prev_x) {
        EXPECT_LT(max_abs_diff(p.pred_x0, x0), 1e-8) << what;
      }
      if (vt == VarType::fixed_small) {
        // at t = 0 the variance is β̃_1 = 0 but its log is clipped; compare where t > 0
        auto mask = (t > 0).unsqueeze(1).expand_as(x0);
        EXPECT_LT(max_abs_diff(p.variance.masked_select(mask), expect_var.masked_select(mask)), 1e-12) << what;
      } else {
        EXPECT_LT(((p.variance - expect_var).abs() / expect_var).max().item<double>(), 1e-9) << what;
      }
    }
  }
}

TEST(Diffusion, ClippingAndModelTimesteps) {
  auto full = Schedule::make(BetaSchedule::linear, 1000);
  GaussianDiffusion d(full.respace(space_timesteps(1000, "ddim10")), MeanType::x0, VarType::fixed_small);
  auto x = at::zeros({2, 2}, kDouble);
  auto t = at::tensor({0, 9}, at::TensorOptions().dtype(at::kLong));
  EXPECT_TRUE(d.model_timesteps(t).equal(at::tensor({0, 900}, at::TensorOptions().dtype(at::kLong))));
  auto p = d.p_mean_variance_from_output(at::full({2, 2}, 2.5, kDouble), x, t, true);
  EXPECT_LT(max_abs_diff(p.pred_x0, at::ones({2, 2}, kDouble)), 1e-15);
  // The model sees original timesteps.
  Denoiser probe = [](const at::Tensor& xt, const at::Tensor& tt, const at::Tensor&) {
    EXPECT_EQ(tt[1].item<int64_t>(), 900);
    return at::zeros_like(xt);
  };
  d.p_mean_variance(probe, x, t, {}, false);
  EXPECT_THROW(d.check_timesteps(at::tensor({10}, at::TensorOptions().dtype(at::kLong))), InvalidArgument);
  EXPECT_THROW(parse_mean_type("epsilon"), InvalidArgument);
  EXPECT_THROW(parse_var_type("fixed"), InvalidArgument);
  GaussianDiffusion learned(full, MeanType::eps, VarType::learned_range);
  EXPECT_THROW(learned.p_mean_variance_from_output(at::zeros({2, 2}, kDouble), x, t, false), InvalidArgument);
}
