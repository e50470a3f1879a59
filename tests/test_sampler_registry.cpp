// The sampler registry and the typed diffusion settings: defaults, the spec's process, and that sample() is the
// sampler it names, bit for bit, on the exact mixture denoiser.
#include <gtest/gtest.h>

#include "ddpm/diffusion_config.h"
#include "ddpm/errors.h"
#include "ddpm/models/exact.h"
#include "ddpm/sampler_registry.h"
#include "support.h"

using namespace ddpm;

namespace {

template <class F>
std::string field_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.field().empty() ? "<none>" : e.field();
  }
  return "<no error>";
}

}  // namespace

TEST(SamplerRegistry, NamesDefaultsAndSpacings) {
  EXPECT_EQ(sampler_names(), (std::vector<std::string>{"ddpm", "ddim", "dpm++", "langevin"}));
  DiffusionConfig linear, cosine;
  cosine.schedule = BetaSchedule::cosine;
  cosine.timesteps = 40;
  EXPECT_EQ(find_sampler("ddpm").default_steps(1000), 1000);
  EXPECT_EQ(find_sampler("ddim").default_steps(1000), 50);
  EXPECT_EQ(find_sampler("dpm++").default_steps(1000), 20);
  EXPECT_EQ(find_sampler("langevin").default_steps(1000), 100);
  EXPECT_EQ(find_sampler("ddim").default_steps(30), 30);  // never more than T
  EXPECT_EQ(find_sampler("dpm++").default_spacing(linear), "logsnr");
  EXPECT_EQ(find_sampler("dpm++").default_spacing(cosine), "trailing");
  EXPECT_EQ(find_sampler("langevin").default_spacing(linear), "logsnr");
  EXPECT_EQ(find_sampler("ddim").default_spacing(cosine), "ddim");
  try {
    find_sampler("euler");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(), "unknown sampler 'euler' (choose ddpm, ddim, dpm++ or langevin)");
  }
  SamplerSpec s;
  s.name = "dpm++";
  EXPECT_EQ(s.steps_for(linear), 20);
  EXPECT_EQ(s.timesteps(linear), respaced_timesteps(1000, 20, "logsnr", linear.alphas_cumprod()));
  EXPECT_EQ(s.process(linear).num_timesteps(), 20);
  s.name = "langevin";
  s.steps = 7;
  s.langevin.steps_per_level = 3;
  EXPECT_EQ(s.model_calls(linear), 21);
}

TEST(SamplerRegistry, ValidationNamesTheField) {
  auto with = [](auto change) {
    SamplerSpec s;
    change(s);
    return field_of([&] { s.validate(); });
  };
  EXPECT_EQ(with([](SamplerSpec& s) { s.eta = -1; }), "eta");
  EXPECT_EQ(with([](SamplerSpec& s) { s.order = 3; }), "order");
  EXPECT_EQ(with([](SamplerSpec& s) { s.langevin.steps_per_level = 0; }), "langevin_steps");
  EXPECT_EQ(with([](SamplerSpec& s) { s.langevin.step_scale = 0; }), "langevin_scale");
  EXPECT_EQ(with([](SamplerSpec& s) { s.steps = 0; }), "steps");
  EXPECT_EQ(with([](SamplerSpec&) {}), "<no error>");
  DiffusionConfig bad;
  bad.timesteps = 0;
  EXPECT_EQ(field_of([&] { bad.validate(); }), "timesteps");
  SamplerSpec s;
  s.name = "langevin";
  EXPECT_THROW(s.require_one_of({"ddpm", "ddim"}), InvalidArgument);
}

TEST(SamplerRegistry, SampleIsTheNamedSamplerBitForBit) {
  // The exact denoiser of the 8-Gaussian ring stands in for a network.
  DiffusionConfig c;
  c.timesteps = 200;
  GaussianMixture g;
  for (int k = 0; k < 8; ++k) {
    g.weights.push_back(1.0);
    g.means.push_back({2 * std::cos(k * M_PI / 4), 2 * std::sin(k * M_PI / 4)});
    g.stds.push_back(0.1);
  }
  const Denoiser den = ExactMixtureDenoiser(g, c.alphas_cumprod()).as_denoiser();
  auto x_T = at::randn({64, 2}, test::gen(1));
  for (const std::string name : {"ddpm", "ddim", "dpm++", "langevin"}) {
    SamplerSpec s;
    s.name = name;
    s.eta = 0.3;
    s.steps = name == "ddpm" ? std::optional<int64_t>() : std::optional<int64_t>(15);
    auto g1 = test::gen(5), g2 = test::gen(5);
    auto got = sample(s, c, den, x_T, g1);
    const auto d = c.respaced(respaced_timesteps(200, s.steps.value_or(200), name == "dpm++" || name == "langevin"
                                                                                 ? "logsnr" : "ddim",
                                                 c.alphas_cumprod()));
    at::Tensor want;
    if (name == "ddpm") want = ddpm_sample(d, den, x_T, g2);
    if (name == "ddim") want = ddim_sample(d, den, x_T, 0.3, g2);
    if (name == "dpm++") want = dpm_solver_sample(d, den, x_T, 2);
    if (name == "langevin") want = langevin_sample(d, den, x_T, g2);
    EXPECT_TRUE(got.equal(want)) << name;
  }
}

TEST(DiffusionConfig, JsonByNameAndOldCheckpointsKeys) {
  DiffusionConfig c;
  c.schedule = BetaSchedule::cosine;
  c.timesteps = 4000;
  c.var_type = VarType::learned_range;
  const nlohmann::json j = c;
  EXPECT_EQ(j.dump(), R"({"mean_type":"eps","schedule":"cosine","timesteps":4000,"var_type":"learned_range"})");
  EXPECT_EQ(j.get<DiffusionConfig>(), c);
  // Checkpoints before the typed settings also kept the loss and the timestep sampler here.
  auto old = nlohmann::json::parse(R"({"loss":"hybrid","mean_type":"v","schedule":"linear",
                                       "timestep_sampler":"uniform","timesteps":10,"var_type":"fixed_small"})");
  auto o = old.get<DiffusionConfig>();
  EXPECT_EQ(o.mean_type, MeanType::v);
  EXPECT_EQ(o.timesteps, 10);
  EXPECT_THROW(nlohmann::json::parse(R"({"schedule":"cosin"})").get<DiffusionConfig>(), InvalidArgument);
  // One respacing call builds what the two-step recipe built.
  auto a = c.respaced(25, "ddim");
  auto b = GaussianDiffusion(Schedule::make(c.schedule, c.timesteps).respace(space_timesteps(4000, "ddim25")),
                             c.mean_type, c.var_type);
  EXPECT_EQ(a.betas(), b.betas());
  EXPECT_TRUE(a.model_timesteps(test::full_t(1, 24)).equal(b.model_timesteps(test::full_t(1, 24))));
}

TEST(DiffusionOverrides, OverAndCheckAgainst) {
  DiffusionConfig stored;
  stored.timesteps = 100;
  DiffusionOverrides o;
  EXPECT_EQ(o.check_against(stored, "m"), stored);
  o.timesteps = 100;
  EXPECT_EQ(o.check_against(stored, "m"), stored);  // agreeing is fine
  o.schedule = BetaSchedule::cosine;
  try {
    o.check_against(stored, "'m'");
    FAIL();
  } catch (const ConfigMismatch& e) {
    EXPECT_EQ(e.field(), "schedule");
    EXPECT_STREQ(e.what(), "'m' was trained with schedule linear; it cannot be used with schedule cosine");
  }
  EXPECT_EQ(o.over(DiffusionConfig()).schedule, BetaSchedule::cosine);
  EXPECT_EQ(o.over(DiffusionConfig()).timesteps, 100);
}
