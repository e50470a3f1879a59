// open_model for every kind of spec, the Model's labels and guidance, and the training settings of old checkpoints.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "ddpm/errors.h"
#include "ddpm/samplers.h"
#include "ddpm/store/checkpoint.h"
#include "ddpm/store/model.h"
#include "ddpm/train/config.h"
#include "support.h"

using namespace ddpm;

namespace {
const std::string kShipped = std::string(DDPM_SOURCE_DIR) + "/models/fashion-mnist.safetensors";
}

TEST(OpenModel, TheShippedCheckpoint) {
  auto m = open_model(kShipped);
  EXPECT_EQ(m.kind, Model::Kind::checkpoint);
  EXPECT_TRUE(m.is_image());
  EXPECT_EQ(m.item_shape, (std::vector<int64_t>{1, 32, 32}));
  EXPECT_EQ(m.num_classes, 10);
  EXPECT_EQ(m.null_label, 10);
  EXPECT_EQ(m.diffusion.timesteps, 1000);
  EXPECT_FALSE(m.network->is_training());  // ready to sample
  // The denoiser is the network as loaded.
  auto direct = load_model(kShipped);
  auto x = at::randn({2, 1, 32, 32}, test::gen(3));
  auto t = at::tensor(std::vector<int64_t>{5, 900});
  auto y = at::tensor(std::vector<int64_t>{1, 10});
  EXPECT_TRUE(m.denoiser(x, t, y).equal(direct.network->forward(x, t, y)));
  EXPECT_EQ(m.batch_shape(4), (std::vector<int64_t>{4, 1, 32, 32}));
  // A contradicting setting is refused, naming the field; an agreeing one is fine.
  OpenOptions o;
  o.diffusion.timesteps = 1000;
  EXPECT_NO_THROW(open_model(kShipped, o));
  o.diffusion.var_type = VarType::fixed_small;
  try {
    open_model(kShipped, o);
    FAIL();
  } catch (const ConfigMismatch& e) {
    EXPECT_EQ(e.field(), "var_type");
  }
}

TEST(OpenModel, ExactDenoisersTakeTheSettingsGiven) {
  auto g = open_model("gaussian:mean=0.5,std=0.2,dim=3");
  EXPECT_EQ(g.kind, Model::Kind::exact);
  EXPECT_EQ(g.item_shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(g.num_classes, 0);
  ASSERT_TRUE(g.mixture.has_value());
  // E[x0 | x_t] of N(μ, s²) in closed form at t = 499: μ + √ᾱ s² (x_t - √ᾱ μ) / (ᾱ s² + 1 - ᾱ).
  const double ab = g.diffusion.alphas_cumprod()[499];
  auto x = at::randn({5, 3}, test::gen(2)).to(at::kDouble);
  auto x0 = 0.5 + std::sqrt(ab) * 0.04 * (x - std::sqrt(ab) * 0.5) / (ab * 0.04 + 1 - ab);
  auto eps = g.denoiser(x.to(at::kFloat), test::full_t(5, 499), at::Tensor()).to(at::kDouble);
  EXPECT_LT(test::max_abs_diff((x - std::sqrt(ab) * x0) / std::sqrt(1 - ab), eps), 1e-5);
  auto ring = open_model("gmm:8gaussians");
  EXPECT_EQ(ring.num_classes, 8);
  EXPECT_EQ(ring.null_label, 8);
  OpenOptions o;
  o.diffusion.timesteps = 50;
  o.diffusion.schedule = BetaSchedule::cosine;
  EXPECT_EQ(open_model("gmm:8gaussians", o).diffusion.timesteps, 50);
  o.diffusion.var_type = VarType::learned;
  try {
    open_model("gmm:8gaussians", o);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(e.field(), "var_type");
  }
  EXPECT_THROW(open_model("gaussian:mean=0,std=-1"), InvalidArgument);
  EXPECT_THROW(open_model("gaussian:mean=0,size=3"), InvalidArgument);
  EXPECT_THROW(open_model("gmm:/nonexistent/mixture.json"), Error);
  EXPECT_THROW(open_model("/nonexistent/model.safetensors"), IoError);
}

TEST(OpenModel, TorchScriptWithItsSidecar) {
  auto m = open_model(std::string(DDPM_TEST_DATA) + "/ts_conv.pt");
  EXPECT_EQ(m.kind, Model::Kind::torchscript);
  EXPECT_FALSE(m.item_shape.empty());
  auto x = at::zeros(m.batch_shape(2));
  auto out = m.denoiser(x, at::zeros({2}, at::kLong), m.labels(2, std::nullopt));
  EXPECT_EQ(out.sizes(), x.sizes());
}

TEST(OpenModel, ASidecarOfWrongTypesOrImpossibleShapesIsOneTypedError) {
  // Found by fuzz_sidecar (regress-wrong-type): a nlohmann type error escaped as an untyped exception.
  const auto dir = std::filesystem::temp_directory_path() / ("ddpm_test_store_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto pt = (dir / "g.pt").string();
  std::filesystem::copy_file(std::string(DDPM_TEST_DATA) + "/ts_gaussian.pt", pt,
                             std::filesystem::copy_options::overwrite_existing);
  auto refusal = [&](const std::string& sidecar, const std::string& field) {
    std::ofstream(dir / "g.json") << sidecar;
    try {
      (void)open_model(pt);
    } catch (const FormatError& e) {
      return std::string("format: ") + e.what();
    } catch (const InvalidArgument& e) {
      EXPECT_EQ(e.field(), field) << sidecar;
      return std::string("argument: ") + e.what();
    }
    ADD_FAILURE() << "accepted " << sidecar;
    return std::string();
  };
  EXPECT_NE(refusal(R"({"item_shape": [2], "timesteps": "linear"})", "").find("format: '" + (dir / "g.json").string() +
                                                                                  "': a value of the wrong type"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"item_shape": "2"})", "").find("format:"), std::string::npos);
  EXPECT_NE(refusal(R"({"item_shape": [2, 0]})", "item_shape").find("must be positive"), std::string::npos);
  EXPECT_NE(refusal(R"({"item_shape": [1, 1, 1, 1, 2]})", "item_shape").find("1 to 4 dimensions"), std::string::npos);
  EXPECT_NE(refusal(R"({"item_shape": [65536, 65536]})", "item_shape").find("4294967296 numbers per item"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"item_shape": [2], "null_label": 3})", "null_label").find("0 to num_classes"), std::string::npos);
  EXPECT_NE(refusal(R"({"item_shape": [2], "num_classes": -1})", "num_classes").find("0 to 2^24"), std::string::npos);
  std::ofstream(dir / "g.json") << R"({"item_shape": [2]})";
  EXPECT_EQ(open_model(pt).item_shape, (std::vector<int64_t>{2}));
  std::filesystem::remove_all(dir);
}

TEST(OpenModel, LabelsAndGuidance) {
  auto ring = open_model("gmm:8gaussians");
  EXPECT_TRUE(ring.labels(3, 5).equal(at::full({3}, 5, at::kLong)));
  EXPECT_TRUE(ring.labels(2, std::nullopt).equal(at::full({2}, 8, at::kLong)));  // the null label
  auto data = at::tensor(std::vector<int64_t>{1, 2});
  EXPECT_TRUE(ring.labels(2, std::nullopt, data).equal(data));
  EXPECT_THROW(ring.labels(2, 8), InvalidArgument);
  auto plain = open_model("gaussian:dim=2");
  EXPECT_FALSE(plain.labels(2, std::nullopt).defined());
  EXPECT_THROW(plain.labels(2, 0), InvalidArgument);
  EXPECT_THROW(plain.guided(1.0), InvalidArgument);
  // Guidance w: (1 + w) ε(x, y) - w ε(x, ∅), against the two calls made here.
  auto x = at::randn({4, 2}, test::gen(4));
  auto t = test::full_t(4, 300);
  auto y = at::full({4}, 2, at::kLong);
  auto want = 2.5 * ring.denoiser(x, t, y) - 1.5 * ring.denoiser(x, t, at::full({4}, 8, at::kLong));
  EXPECT_LT(test::max_abs_diff(ring.guided(1.5)(x, t, y), want), 1e-6);
}

TEST(Checkpoint, TrainingSettingsOfOldCheckpoints) {
  // Checkpoints from before the typed settings (the shipped model until step 7177) keep the loss with the diffusion
  // settings: the shipped model's metadata, moved back to that layout.
  auto st = load_train_state(kShipped);
  auto& train = st.meta["train"];
  st.meta["diffusion"]["loss"] = train.value("loss", std::string("mse"));
  for (const char* key : {"loss", "timestep_sampler"}) train.erase(key);
  auto tc = train_config_from_meta(st.meta);
  EXPECT_EQ(tc.loss, LossType::mse);
  EXPECT_EQ(tc.timestep_sampler, "uniform");
  EXPECT_EQ(tc.batch, 64);
  nlohmann::json meta = {{"train", {{"loss", "kl"}}}, {"diffusion", {{"loss", "hybrid"}}}};
  EXPECT_EQ(train_config_from_meta(meta).loss, LossType::kl);  // the new place wins
  EXPECT_EQ(diffusion_from_meta(st.meta, kShipped).var_type, VarType::fixed_large);
  EXPECT_THROW(diffusion_from_meta(nlohmann::json{{"diffusion", {{"schedule", "nope"}}}}, "x"), FormatError);
}

// The raw weights of a training state as a model of their own (to evaluate or ship them instead of the EMA).
TEST(Checkpoint, StripKeepsTheEmaOrTheRawWeights) {
  const std::string state = std::string(DDPM_SOURCE_DIR) + "/models/wip/fashion-mnist.train.safetensors";
  const auto dir = std::filesystem::temp_directory_path() / ("ddpm_test_strip_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto raw_path = (dir / "raw.safetensors").string(), ema_path = (dir / "ema.safetensors").string();
  save_model_only(state, raw_path, /*raw=*/true);
  save_model_only(state, ema_path);
  auto raw = load_model(raw_path), ema = load_model(ema_path);
  auto want_raw = load_model(state, /*ema=*/false), want_ema = load_model(state);
  EXPECT_EQ(raw.meta["contents"], "raw-only");
  auto rp = raw.network->named_parameters(), ep = ema.network->named_parameters();
  auto wr = want_raw.network->named_parameters(), we = want_ema.network->named_parameters();
  double ema_vs_raw = 0;
  for (const auto& kv : wr) {
    EXPECT_TRUE(at::equal(rp[kv.key()], kv.value())) << kv.key();
    EXPECT_TRUE(at::equal(ep[kv.key()], we[kv.key()])) << kv.key();
    ema_vs_raw = std::max(ema_vs_raw, (kv.value() - we[kv.key()]).abs().max().item<double>());
  }
  EXPECT_GT(ema_vs_raw, 0.0);  // the two are different weights
  EXPECT_THROW(save_model_only(ema_path, (dir / "x.safetensors").string(), true), FormatError);
  std::filesystem::remove_all(dir);
}
