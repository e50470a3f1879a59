#include <cmath>
#include <cstdio>

#include "ddpm/data/points.h"
#include "ddpm/models/mlp.h"
#include "ddpm/samplers.h"
#include "ddpm/train/loader.h"
#include "ddpm/train/trainer.h"
#include "support.h"

#include <torch/utils.h>

using namespace ddpm;
using namespace ddpm::test;

namespace {

/// Fractions of samples nearest each mode of the ring, fraction within 0.5 of a mode, mean per-mode spread.
struct RingStats {
  std::vector<double> frac;
  double near = 0, spread = 0;
};

RingStats ring_stats(const at::Tensor& x) {
  auto g = toy_mixture("8gaussians");
  auto centres = at::empty({8, 2}, at::TensorOptions().dtype(at::kDouble));
  for (int k = 0; k < 8; ++k) centres[k] = at::tensor(g.means[k], at::TensorOptions().dtype(at::kDouble));
  auto xd = x.to(at::kDouble);
  auto [dmin, arg] = at::cdist(xd, centres).min(1);
  RingStats s;
  s.near = (dmin < 0.5).to(at::kDouble).mean().item<double>();
  double spread = 0;
  int used = 0;
  for (int k = 0; k < 8; ++k) {
    auto in = (arg == k) & (dmin < 0.5);
    s.frac.push_back((arg == k).to(at::kDouble).mean().item<double>());
    if (in.sum().item<int64_t>() > 10) {
      spread += xd.index({in}).std(0).mean().item<double>();
      ++used;
    }
  }
  s.spread = used ? spread / used : NAN;
  return s;
}

std::unique_ptr<Trainer> make_trainer(bool conditional, int64_t steps, DiffusionConfig dc = {}, TrainConfig tc = {}) {
  auto data = make_toy("8gaussians", 50000, 0);
  MLPOptions o;
  o.hidden = 128;
  o.blocks = 2;
  o.num_classes = conditional ? 8 : 0;
  o.out_factor = learns_variance(dc.var_type) ? 2 : 1;
  torch::manual_seed(0);
  tc.steps = steps;
  tc.batch = 256;
  tc.lr = 2e-3;
  tc.label_dropout = conditional ? 0.1 : 0.0;
  return std::make_unique<Trainer>(std::make_shared<MLPDenoiser>(o), dc, tc, data.x,
                                   conditional ? data.labels : at::Tensor(), Decoder::continuous);
}

at::Tensor sample(Trainer& tr, int64_t n, const Denoiser& model, const at::Tensor& y = {}) {
  DiffusionConfig dc = tr.diffusion_config();
  auto d = dc.respaced(space_timesteps(dc.timesteps, "ddim100"));
  auto g = gen(7);
  SampleOptions o;
  o.y = y;
  return ddim_sample(d, model, at::randn({n, 2}, g), 0.0, g, o);
}

}  // namespace

TEST(Train, MlpLearnsTheRingOfGaussians) {
  auto tr = make_trainer(false, 3000);
  double first = 0, last = 0;
  while (!tr->finished()) {
    auto s = tr->step();
    if (s.step <= 100) first += s.loss / 100;
    if (s.step > 2900) last += s.loss / 100;
  }
  auto x = sample(*tr, 4000, as_denoiser(tr->ema_network()));
  auto s = ring_stats(x);
  std::printf("loss %.3f -> %.3f; within 0.5 of a mode %.3f; spread %.3f (data 0.1); proportions", first, last, s.near,
              s.spread);
  for (double f : s.frac) std::printf(" %.3f", f);
  std::printf("\n");
  EXPECT_LT(last, first);
  EXPECT_GT(s.near, 0.95);
  for (double f : s.frac) EXPECT_NEAR(f, 0.125, 0.03);
  EXPECT_GT(s.spread, 0.07);
  EXPECT_LT(s.spread, 0.16);
}

TEST(Train, ConditionalMlpWithGuidanceSamplesTheRequestedMode) {
  auto tr = make_trainer(true, 3000);
  while (!tr->finished()) tr->step();
  for (double w : {0.0, 1.0}) {
    auto guided = classifier_free_guidance(as_denoiser(tr->ema_network()), w, 8, false);
    for (int64_t k : {0, 3, 6}) {
      auto x = sample(*tr, 1000, guided, at::full({1000}, k, at::TensorOptions().dtype(at::kLong)));
      auto s = ring_stats(x);
      std::printf("class %lld, w = %.0f: %.3f on mode %lld, spread %.3f\n", static_cast<long long>(k), w, s.frac[k],
                  static_cast<long long>(k), s.spread);
      EXPECT_GT(s.frac[k], 0.95) << "class " << k << " w " << w;
    }
  }
}

TEST(Train, EveryObjectiveTrainsAndItsStateRoundTrips) {
  struct Case {
    const char *mean, *var, *loss, *sampler;
  };
  for (auto c : {Case{"eps", "fixed_large", "mse", "uniform"}, Case{"x0", "fixed_small", "kl", "uniform"},
                 Case{"v", "learned_range", "hybrid", "loss-second-moment"},
                 Case{"prev_x", "learned", "rescaled_mse", "uniform"}, Case{"eps", "learned_range", "rescaled_kl", "loss-second-moment"}}) {
    DiffusionConfig dc;
    dc.timesteps = 50;
    dc.mean_type = parse_mean_type(c.mean);
    dc.var_type = parse_var_type(c.var);
    TrainConfig tc;
    tc.loss = parse_loss_type(c.loss);
    tc.timestep_sampler = c.sampler;
    auto a = make_trainer(false, 100, dc, tc);
    for (int i = 0; i < 60; ++i) {
      auto s = a->step();
      ASSERT_TRUE(std::isfinite(s.loss)) << c.mean << " " << c.var << " " << c.loss;
    }
    // A second trainer restored from the first's state takes the identical next steps.
    auto b = make_trainer(false, 100, dc, tc);
    b->load_state(a->state());
    for (int i = 0; i < 5; ++i) EXPECT_EQ(a->step().loss, b->step().loss) << c.loss;
    auto pa = a->ema_network()->parameters(), pb = b->ema_network()->parameters();
    for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(pa[i].equal(pb[i]));
  }
}

TEST(Train, LoaderCoversEachEpochOnceAndPrefetchesTheSameBatches) {
  auto data = at::arange(100, at::TensorOptions().dtype(at::kFloat)).view({100, 1});
  BatchLoader a(data, {}, 10, 3, false), b(data, {}, 10, 3, false);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<at::Tensor> seen;
    for (int64_t k = 0; k < 10; ++k) {
      auto x = a.get(epoch * 10 + k).x;
      EXPECT_TRUE(x.equal(b.make(epoch * 10 + k).x));  // prefetched or not, the same batch
      seen.push_back(x);
    }
    auto all = std::get<0>(at::cat(seen).view(-1).sort());
    EXPECT_TRUE(all.equal(data.view(-1))) << "epoch " << epoch << " is not a permutation";
  }
  // Flips are per image, about half of them, and a pure function of the step.
  auto img = at::arange(4, at::TensorOptions().dtype(at::kFloat)).view({1, 1, 1, 4}).repeat({1000, 1, 1, 1});
  BatchLoader f(img, {}, 1000, 1, true);
  auto x = f.get(0).x;
  auto flipped = (x.select(3, 0) == 3).to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(flipped, 0.5, 0.05);
  EXPECT_TRUE(f.make(0).x.equal(x));
}
