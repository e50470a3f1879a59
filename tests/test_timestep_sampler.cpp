#include <cmath>

#include "ddpm/errors.h"
#include "ddpm/timestep_sampler.h"
#include "support.h"

using namespace ddpm;
using namespace ddpm::test;

TEST(TimestepSampler, UniformCoversEveryStepEqually) {
  UniformSampler s(10);
  auto d = s.sample(100000, gen(1));
  auto counts = at::bincount(d.t, {}, 10).to(at::kDouble) / 100000.0;
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(counts[i].item<double>(), 0.1, 0.005);
  EXPECT_EQ(d.weights.min().item<float>(), 1.0f);
  EXPECT_EQ(d.weights.max().item<float>(), 1.0f);
}

TEST(TimestepSampler, LossSecondMomentWeightsAndUnbiasedness) {
  const int64_t T = 20;
  LossSecondMomentResampler s(T);
  auto loss_of = [](int64_t t) { return 0.1 + t * t; };  // a known loss per timestep
  for (int i = 0; i < 10; ++i) {
    EXPECT_FALSE(s.warmed_up());
    auto t = at::arange(T, at::TensorOptions().dtype(at::kLong));
    auto l = at::empty({T}, at::TensorOptions().dtype(at::kDouble));
    for (int64_t k = 0; k < T; ++k) l[k] = loss_of(k);
    s.update(t, l);
  }
  ASSERT_TRUE(s.warmed_up());
  auto w = s.weights();
  double total = 0;
  for (int64_t k = 0; k < T; ++k) total += loss_of(k);
  for (int64_t k = 0; k < T; ++k) EXPECT_NEAR(w[k], loss_of(k) / total * 0.999 + 0.001 / T, 1e-12);
  // E[w(t) L(t)] under the importance distribution equals the uniform average of L(t).
  auto d = s.sample(400000, gen(2));
  double est = 0;
  auto tt = d.t.accessor<int64_t, 1>();
  auto ww = d.weights.accessor<float, 1>();
  for (int64_t i = 0; i < d.t.size(0); ++i) est += ww[i] * loss_of(tt[i]);
  est /= d.t.size(0);
  EXPECT_NEAR(est / (total / T), 1.0, 0.01);
  // The state round-trips.
  LossSecondMomentResampler r(T);
  r.load_state(s.state());
  EXPECT_EQ(r.weights(), s.weights());
  EXPECT_THROW(make_timestep_sampler("sometimes", T), InvalidArgument);
}
