#include <cmath>

#include "ddpm/errors.h"
#include "ddpm/models/embedding.h"
#include "ddpm/models/exact.h"
#include "ddpm/models/mlp.h"
#include "support.h"

using namespace ddpm;
using namespace ddpm::test;

TEST(Models, TimestepEmbeddingIsTheSinusoidalFormula) {
  auto t = at::tensor({0, 1, 17, 999}, at::TensorOptions().dtype(at::kLong));
  const int64_t dim = 16, half = 8;
  auto e = timestep_embedding(t, dim);
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{4, dim}));
  for (int64_t b = 0; b < 4; ++b) {
    const double tv = t[b].item<int64_t>();
    for (int64_t k = 0; k < half; ++k) {
      const double w = std::exp(-std::log(10000.0) * k / (half - 1));
      EXPECT_NEAR(e[b][k].item<float>(), std::sin(tv * w), 2e-4);
      EXPECT_NEAR(e[b][half + k].item<float>(), std::cos(tv * w), 2e-4);
    }
  }
}

TEST(Models, MlpStartsAtZeroAndHasStableNames) {
  MLPOptions o;
  o.hidden = 32;
  o.blocks = 2;
  o.num_classes = 3;
  o.out_factor = 2;
  MLPDenoiser net(o);
  auto x = at::randn({5, 2}, gen(1));
  auto t = at::randint(0, 1000, {5}, gen(2), at::TensorOptions().dtype(at::kLong));
  auto y = at::tensor({0, 1, 2, 3, 3}, at::TensorOptions().dtype(at::kLong));
  auto out = net.forward(x, t, y);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{5, 4}));
  EXPECT_EQ(out.abs().max().item<float>(), 0.0f);  // zero-initialised output layer
  auto names = net.named_parameters().keys();
  for (const char* n : {"time_fc1.weight", "class_emb.weight", "fc1.0.weight", "fc2.1.bias", "out_proj.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  auto rebuilt = make_network(net.config());
  EXPECT_EQ(rebuilt->num_parameters(), net.num_parameters());
  EXPECT_EQ(rebuilt->config(), net.config());
  EXPECT_THROW(net.forward(at::randn({5, 3}), t, y), InvalidArgument);
  EXPECT_THROW(make_network({{"type", "transformer"}}), InvalidArgument);
}

TEST(Models, ExactMixturePosteriorMeanMatchesNumericalIntegration) {
  // E[x0 | x_t] = ∫ x0 p(x0) q(x_t | x0) dx0 / ∫ p(x0) q(x_t | x0) dx0 on a 1-D grid, in double.
  GaussianMixture g;
  g.weights = {0.3, 0.7};
  g.means = {{-0.6}, {0.5}};
  g.stds = {0.1, 0.25};
  auto d = make_diffusion(1000);
  ExactMixtureDenoiser exact(g, d.alphas_cumprod(), MeanType::x0);
  for (int64_t i : {0, 50, 400, 999}) {
    const double a = d.alphas_cumprod()[i];
    for (double xt : {-1.3, -0.2, 0.4, 2.0}) {
      double z = 0, m = 0;
      const int n = 400001;
      for (int k = 0; k < n; ++k) {
        const double x0 = -3 + 6.0 * k / (n - 1);
        double prior = 0;
        for (int c = 0; c < 2; ++c)
          prior += g.weights[c] / g.stds[c] * std::exp(-0.5 * std::pow((x0 - g.means[c][0]) / g.stds[c], 2));
        const double w = prior * std::exp(-0.5 * std::pow(xt - std::sqrt(a) * x0, 2) / (1 - a));
        z += w;
        m += w * x0;
      }
      auto got = exact.posterior_mean(at::full({1, 1}, xt, at::TensorOptions().dtype(at::kDouble)), full_t(1, i), {});
      EXPECT_NEAR(got.item<double>(), m / z, 1e-6) << "t " << i << " x_t " << xt;
    }
  }
  // Output types agree with each other through the process's own conversions.
  ExactMixtureDenoiser eps_model(g, d.alphas_cumprod(), MeanType::eps), v_model(g, d.alphas_cumprod(), MeanType::v);
  auto x = at::randn({64, 1}, gen(3), at::TensorOptions().dtype(at::kDouble));
  auto t = at::randint(0, 1000, {64}, gen(4), at::TensorOptions().dtype(at::kLong));
  auto x0 = exact(x, t, {});
  EXPECT_LT(max_abs_diff(d.predict_x0_from_eps(x, t, eps_model(x, t, {})), x0), 1e-8);
  EXPECT_LT(max_abs_diff(d.predict_x0_from_v(x, t, v_model(x, t, {})), x0), 1e-8);
  // A label selects its component; the null label is the whole mixture.
  auto only1 = exact.posterior_mean(x, full_t(64, 999), at::full({64}, 1, at::TensorOptions().dtype(at::kLong)));
  EXPECT_LT(max_abs_diff(only1, at::full_like(x, 0.5)), 0.01);  // at t = T the posterior is the prior component
  auto null = exact.posterior_mean(x, t, at::full({64}, 2, at::TensorOptions().dtype(at::kLong)));
  EXPECT_LT(max_abs_diff(null, x0), 1e-12);
  EXPECT_THROW(ExactMixtureDenoiser(g, d.alphas_cumprod(), MeanType::prev_x), InvalidArgument);
}
