// The importers against the peers' own code: small networks built with diffusers' UNet2DModel and improved-diffusion's
// UNetModel, random weights, their outputs and 10-step DDIM results (scripts/golden/pretrained.py →
// tests/data/pretrained). Each wrong choice of a numerical detail is shown to move the output far beyond the
// tolerance, so the tests can fail.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ddpm/errors.h"
#include "ddpm/io/npy.h"
#include "ddpm/models/torchscript.h"
#include "ddpm/models/unet_cost.h"
#include "ddpm/resources.h"
#include "ddpm/samplers.h"
#include "ddpm/store/checkpoint.h"
#include "ddpm/store/import.h"
#include "ddpm/store/model.h"
#include "support.h"

using namespace ddpm;
namespace fs = std::filesystem;

namespace {

std::string data(const std::string& name) { return std::string(DDPM_TEST_DATA) + "/pretrained/" + name; }
at::Tensor npy(const std::string& name) { return read_npy(data(name + ".npy")); }

std::string improved_flags() {
  std::ifstream in(data("improved.flags"));
  std::string s;
  std::getline(in, s);
  return s;
}

// Relative L2 distance, recorded as a test property (in --gtest_output=json) so that RESULTS.md can quote it.
double rel_l2(const at::Tensor& a, const at::Tensor& b) {
  auto ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  const double r = (ad - bd).norm().item<double>() / bd.norm().item<double>();
  static int k = 0;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", r);
  ::testing::Test::RecordProperty("rel_l2_" + std::to_string(k++), buf);
  return r;
}

at::Tensor forward(UNet& net, const at::Tensor& x, const at::Tensor& t, const at::Tensor& y = {}) {
  at::NoGradGuard g;
  return net.forward(x, t.to(at::kLong), y.defined() ? y.to(at::kLong) : y);
}

// The same weights in a network whose options differ by `change`: what a wrong import choice would give.
at::Tensor forward_changed(UNet& net, const std::function<void(UNetOptions&)>& change, const at::Tensor& x,
                           const at::Tensor& t, const at::Tensor& y = {}) {
  auto o = net.options();
  change(o);
  UNet other(o);
  at::NoGradGuard g;
  auto src = net.named_parameters();
  for (auto& kv : other.named_parameters()) kv.value().copy_(src[kv.key()]);
  other.eval();
  return forward(other, x, t, y);
}

at::Tensor ddim10(const ImportedModel& m, const at::Tensor& xT, const std::string& spacing, bool clip,
                  const at::Tensor& y = {}) {
  auto process = m.diffusion.respaced(10, spacing);
  SampleOptions so;
  so.clip_denoised = clip;
  if (y.defined()) so.y = y.to(at::kLong);
  at::NoGradGuard g;
  return ddim_sample(process, as_denoiser(m.network), xT, 0.0, test::gen(0), so);
}

std::string tmpdir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("ddpm_test_import_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

// A copy of a golden diffusers folder with one config key changed (or removed, with null_removes).
std::string diffusers_variant(const std::string& src, const std::string& file, const std::string& key,
                              const nlohmann::json& value) {
  const auto dir = tmpdir(src + "_" + key);
  fs::copy(data(src), dir, fs::copy_options::recursive);
  const auto path = fs::path(dir) / file;
  nlohmann::json j;
  std::ifstream(path) >> j;
  j[key] = value;
  std::ofstream(path) << j.dump();
  return dir;
}

template <class E>
std::string refusal(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no refusal";
  return "";
}

}  // namespace

TEST(ImportDiffusers, GoogleDdpmStructureEqualsThePeer) {
  auto m = import_diffusers(data("ddpm_tf"));
  EXPECT_EQ(m.network->options().downsample_padding, DownsamplePadding::tf_same);
  EXPECT_EQ(m.diffusion.var_type, VarType::fixed_large);
  EXPECT_EQ(m.diffusion.schedule, BetaSchedule::linear);
  EXPECT_TRUE(m.diffusion.betas.empty());
  const auto x = npy("ddpm_tf_x"), t = npy("ddpm_tf_t"), ref = npy("ddpm_tf_out");
  const auto out = forward(*m.network, x, t);
  EXPECT_LT(rel_l2(out, ref), 1e-5);
  // What each wrong choice would cost (relative L2 of the output): the test above can fail.
  EXPECT_GT(rel_l2(forward_changed(*m.network, [](UNetOptions& o) { o.downsample_padding = DownsamplePadding::symmetric; }, x, t), ref), 0.05);
  EXPECT_GT(rel_l2(forward_changed(*m.network, [](UNetOptions& o) { o.flip_sin_to_cos = true; }, x, t), ref), 0.05);
  EXPECT_GT(rel_l2(forward_changed(*m.network, [](UNetOptions& o) { o.freq_shift = 0; }, x, t), ref), 1e-3);
  const auto ddim = ddim10(m, npy("ddpm_tf_xT"), "leading", /*clip=*/false);
  EXPECT_LT(test::max_abs_diff(ddim, npy("ddpm_tf_ddim")), 1e-4);
}

TEST(ImportDiffusers, DiffusersDefaultsEqualThePeer) {
  auto m = import_diffusers(data("diff_def"));
  const auto& o = m.network->options();
  EXPECT_TRUE(o.flip_sin_to_cos);
  EXPECT_EQ(o.freq_shift, 0);
  EXPECT_EQ(o.head_channels, 8);
  EXPECT_TRUE(o.scale_shift_norm);
  EXPECT_TRUE(o.learn_sigma);
  EXPECT_EQ(o.num_classes, 4);
  EXPECT_EQ(m.diffusion.schedule, BetaSchedule::cosine);
  EXPECT_EQ(m.diffusion.var_type, VarType::learned_range);
  const auto x = npy("diff_def_x"), t = npy("diff_def_t"), y = npy("diff_def_y"), ref = npy("diff_def_out");
  EXPECT_LT(rel_l2(forward(*m.network, x, t, y), ref), 1e-5);
  EXPECT_GT(rel_l2(forward_changed(*m.network, [](UNetOptions& o) { o.norm_eps = 1e-5; }, x, t, y), ref), 1e-2);
  EXPECT_GT(rel_l2(forward_changed(*m.network, [](UNetOptions& o) { o.head_channels = 0; o.num_heads = 1; }, x, t, y), ref), 1e-2);
  EXPECT_GT(rel_l2(forward_changed(*m.network, [](UNetOptions& o) { o.downsample_padding = DownsamplePadding::tf_same; }, x, t, y), ref), 0.05);
  const auto ddim = ddim10(m, npy("diff_def_xT"), "leading", /*clip=*/false, y);
  EXPECT_LT(test::max_abs_diff(ddim, npy("diff_def_ddim")), 1e-4);
}

TEST(ImportDiffusers, Fp16WeightsInABareUnetFolder) {
  auto m = import_diffusers(data("diff_fp16") + "/unet");
  EXPECT_NE(m.source["weights"].get<std::string>().find("fp16.safetensors"), std::string::npos);
  EXPECT_EQ(m.diffusion.var_type, VarType::learned_range);  // the scheduler beside the unet/ folder was found
  EXPECT_LT(rel_l2(forward(*m.network, npy("diff_def_x"), npy("diff_def_t"), npy("diff_def_y")), npy("diff_fp16_out")), 1e-5);
}

TEST(ImportDiffusers, HuggingFaceCacheEntry) {
  const auto dir = tmpdir("cache");
  const auto entry = fs::path(dir) / "models--google--ddpm-tiny";
  fs::create_directories(entry / "snapshots" / "0123abcd");
  fs::create_directories(entry / "blobs");
  for (const auto& e : fs::directory_iterator(data("ddpm_tf"))) {
    const auto blob = entry / "blobs" / e.path().filename();
    fs::copy_file(e.path(), blob);
    fs::create_symlink(fs::path("../../blobs") / e.path().filename(), entry / "snapshots" / "0123abcd" / e.path().filename());
  }
  auto m = import_diffusers(entry.string());
  EXPECT_LT(rel_l2(forward(*m.network, npy("ddpm_tf_x"), npy("ddpm_tf_t")), npy("ddpm_tf_out")), 1e-5);
}

TEST(ImportImproved, EqualsThePeer) {
  auto m = import_improved(data("improved.pt"), improved_flags());
  const auto& o = m.network->options();
  EXPECT_EQ(o.num_heads, 4);
  EXPECT_EQ(o.num_heads_upsample, 2);
  EXPECT_DOUBLE_EQ(o.timestep_scale, 2.5);
  EXPECT_EQ(o.channel_mult, (std::vector<int64_t>{1, 1, 2}));
  EXPECT_EQ(o.attention_resolutions, (std::vector<int64_t>{8}));
  EXPECT_EQ(m.diffusion.timesteps, 400);
  EXPECT_EQ(m.diffusion.var_type, VarType::learned_range);
  const auto x = npy("improved_x"), t = npy("improved_t"), y = npy("improved_y"), ref = npy("improved_out");
  EXPECT_LT(rel_l2(forward(*m.network, x, t, y), ref), 1e-5);
  EXPECT_GT(rel_l2(forward_changed(*m.network, [](UNetOptions& o) { o.timestep_scale = 1.0; }, x, t, y), ref), 1e-3);
  EXPECT_GT(rel_l2(forward_changed(*m.network, [](UNetOptions& o) { o.num_heads_upsample = 4; }, x, t, y), ref), 1e-3);
  EXPECT_GT(rel_l2(forward_changed(*m.network, [](UNetOptions& o) { o.norm_eps = 1e-6; }, x, t, y), ref), 1e-5);
  const auto ddim = ddim10(m, npy("improved_xT"), "ddim", /*clip=*/true, y);
  EXPECT_LT(test::max_abs_diff(ddim, npy("improved_ddim")), 1e-4);
}

TEST(ImportImproved, FlagsThatContradictTheWeightsAreRefused) {
  const auto pt = data("improved.pt");
  auto flags = improved_flags();
  EXPECT_NE(refusal<InvalidArgument>([&] { import_improved(pt, flags + " --num_channels 64"); })
                .find("--num_channels 64 contradicts the weights: input_blocks.0.0.weight is [32, 3, 3, 3]"),
            std::string::npos);
  EXPECT_NE(refusal<InvalidArgument>([&] { import_improved(pt, flags + " --learn_sigma False"); }).find("out.2.weight"),
            std::string::npos);
  EXPECT_NE(refusal<InvalidArgument>([&] { import_improved(pt, flags + " --num_res_blocks 3"); }).find("--num_res_blocks 3"),
            std::string::npos);
  EXPECT_NE(refusal<InvalidArgument>([&] { import_improved(pt, flags + " --use_scale_shift_norm False"); })
                .find("emb_layers.1.weight"),
            std::string::npos);
  EXPECT_NE(refusal<InvalidArgument>([&] { import_improved(pt, flags + " --attention_resolutions 16"); })
                .find("place attention at resolutions 8"),
            std::string::npos);
  EXPECT_NE(refusal<InvalidArgument>([&] { import_improved(pt, flags + " --class_cond False"); }).find("label_emb"),
            std::string::npos);
  EXPECT_NE(refusal<InvalidArgument>([&] { import_improved(pt, "--resblock_updown True"); }).find("guided-diffusion"),
            std::string::npos);
  EXPECT_NE(refusal<InvalidArgument>([&] { import_improved(pt, "--no_such_flag 1"); }).find("unknown improved-diffusion flag"),
            std::string::npos);
  EXPECT_NE(refusal<InvalidArgument>([&] { import_improved(pt, "--image_size"); }).find("has no value"), std::string::npos);
  EXPECT_NE(refusal<InvalidArgument>([&] { import_improved(pt, flags + " --learn_sigma maybe"); }).find("expected True or False"),
            std::string::npos);
  // Training flags of the README's command lines are accepted.
  EXPECT_NO_THROW(import_improved(pt, flags + " --lr 1e-4 --batch_size 128"));
  const auto opt = std::string(DDPM_TEST_DATA) + "/torch/opt.pt";
  EXPECT_NE(refusal<FormatError>([&] { import_improved(opt, ""); }).find("optimizer state"), std::string::npos);
  EXPECT_NE(refusal<FormatError>([&] { import_improved(std::string(DDPM_TEST_DATA) + "/torch/state.pt", ""); })
                .find("not an improved-diffusion UNetModel state_dict"),
            std::string::npos);
}

TEST(ImportDiffusers, EveryUnsupportedSettingIsRefusedByName) {
  struct Case {
    std::string file, key;
    nlohmann::json value;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"scheduler_config.json", "variance_type", "learned", "variance_type = \"learned\" is not supported"},
      {"scheduler_config.json", "thresholding", true, "thresholding = true"},
      {"scheduler_config.json", "rescale_betas_zero_snr", true, "rescale_betas_zero_snr = true"},
      {"scheduler_config.json", "clip_sample_range", 2.0, "clip_sample_range = 2.0"},
      {"scheduler_config.json", "beta_schedule", "laplace", "beta_schedule = \"laplace\""},
      {"scheduler_config.json", "prediction_type", "flow", "prediction_type = \"flow\""},
      {"config.json", "time_embedding_type", "fourier", "time_embedding_type = \"fourier\""},
      {"config.json", "downsample_padding", 2, "downsample_padding = 2"},
      {"config.json", "downsample_type", "resnet", "downsample_type = \"resnet\""},
      {"config.json", "act_fn", "gelu", "act_fn = \"gelu\""},
      {"config.json", "resnet_time_scale_shift", "ada_group", "resnet_time_scale_shift = \"ada_group\""},
      {"config.json", "mid_block_scale_factor", 2, "mid_block_scale_factor = 2"},
      {"config.json", "center_input_sample", true, "center_input_sample = true"},
      {"config.json", "class_embed_type", "timestep", "class_embed_type = \"timestep\""},
      {"config.json", "mid_block_type", nullptr, "mid_block_type = null"},
      {"config.json", "norm_num_groups", nullptr, "norm_num_groups = null"},
      {"config.json", "attn_norm_num_groups", 4, "attn_norm_num_groups = 4"},
      {"config.json", "time_embedding_dim", 100, "time_embedding_dim = 100"},
      {"config.json", "sample_size", nullptr, "sample_size = null"},
      {"config.json", "sample_size", {16, 32}, "only square images"},
      {"config.json", "out_channels", 5, "out_channels = 5"},
      {"config.json", "down_block_types", {"SkipDownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"},
       "only DownBlock2D and AttnDownBlock2D"},
      {"config.json", "up_block_types", {"UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"},
       "same levels of the down and up paths"},
      {"config.json", "block_out_channels", {16, 24, 32, 32}, "multiple of the first"},
      {"config.json", "some_new_key", 1, "some_new_key = 1 is not supported (a key this importer does not know)"},
      {"config.json", "_class_name", "UNet2DConditionModel", "_class_name = \"UNet2DConditionModel\""},
  };
  for (const auto& c : cases) {
    const auto dir = diffusers_variant("ddpm_tf", c.file, c.key, c.value);
    const auto m = refusal<InvalidArgument>([&] { import_diffusers(dir); });
    EXPECT_NE(m.find(c.expect), std::string::npos) << c.key << ": " << m;
  }
  // A config that disagrees with the weights names the tensor.
  const auto layers = diffusers_variant("ddpm_tf", "config.json", "layers_per_block", 1);
  EXPECT_NE(refusal<FormatError>([&] { import_diffusers(layers); }).find("(the config and the weights disagree)"),
            std::string::npos);
  const auto no_mid = diffusers_variant("ddpm_tf", "config.json", "add_attention", false);
  EXPECT_NE(refusal<FormatError>([&] { import_diffusers(no_mid); }).find("no place for, e.g. 'mid_block.attentions.0"),
            std::string::npos);
  const auto chans = diffusers_variant("ddpm_tf", "config.json", "block_out_channels", {16, 32, 32, 64});
  EXPECT_NE(refusal<FormatError>([&] { import_diffusers(chans); }).find("has shape"), std::string::npos);
  // A pipeline whose unet is not a UNet2DModel; a git-lfs pointer instead of weights; not a model folder.
  const auto cond = diffusers_variant("diff_def", "model_index.json", "unet", {"diffusers", "UNet2DConditionModel"});
  EXPECT_NE(refusal<InvalidArgument>([&] { import_diffusers(cond); }).find("only UNet2DModel"), std::string::npos);
  const auto lfs = tmpdir("lfs");
  fs::copy(data("ddpm_tf"), lfs, fs::copy_options::recursive);
  std::ofstream(fs::path(lfs) / "diffusion_pytorch_model.bin") << "version https://git-lfs.github.com/spec/v1\nsize 1\n";
  EXPECT_NE(refusal<FormatError>([&] { import_diffusers(lfs); }).find("git-lfs pointer"), std::string::npos);
  EXPECT_NE(refusal<FormatError>([&] { import_diffusers(tmpdir("empty")); }).find("not a diffusers model folder"),
            std::string::npos);
  EXPECT_THROW(import_diffusers(data("absent")), IoError);
  // Values of the wrong JSON type, a config that is not an object, and a network too large to allocate: one typed
  // error each, naming the file (found by fuzz_import_config; regress-config-not-an-object).
  const auto wrong = diffusers_variant("ddpm_tf", "config.json", "layers_per_block", "two");
  EXPECT_NE(refusal<FormatError>([&] { import_diffusers(wrong); }).find("config.json': a value of the wrong type"),
            std::string::npos);
  const auto sched = diffusers_variant("ddpm_tf", "scheduler_config.json", "num_train_timesteps", {1000});
  EXPECT_NE(refusal<FormatError>([&] { import_diffusers(sched); }).find("scheduler_config.json': a value of the wrong type"),
            std::string::npos);
  const auto scalar = tmpdir("scalar");
  std::ofstream(fs::path(scalar) / "config.json") << "31.0";
  EXPECT_NE(refusal<FormatError>([&] { import_diffusers(scalar); }).find("must hold a JSON object"), std::string::npos);
  const auto huge = diffusers_variant("ddpm_tf", "config.json", "block_out_channels", {65536, 65536, 65536, 65536});
  EXPECT_NE(refusal<OutOfMemory>([&] { import_diffusers(huge); }).find("a U-Net of "), std::string::npos);
  const auto wide = diffusers_variant("ddpm_tf", "config.json", "block_out_channels", {1 << 20, 1 << 21, 1 << 21, 1 << 21});
  EXPECT_NE(refusal<InvalidArgument>([&] { import_diffusers(wide); }).find("must be 1 to 65536"), std::string::npos);
}

TEST(ImportDiffusers, SchedulesWithoutANameHereImportAsExplicitBetas) {
  // diffusers' linear schedule does not scale with T: at T = 500 it is linspace(1e-4, 0.02, 500), not the project's.
  const auto dir = diffusers_variant("ddpm_tf", "scheduler_config.json", "num_train_timesteps", 500);
  auto m = import_diffusers(dir);
  ASSERT_EQ(m.diffusion.betas.size(), 500u);
  EXPECT_DOUBLE_EQ(m.diffusion.betas.front(), 1e-4);
  EXPECT_DOUBLE_EQ(m.diffusion.betas.back(), 0.02);
  EXPECT_NEAR(m.diffusion.betas[250], 1e-4 + (0.02 - 1e-4) * 250 / 499.0, 1e-15);
  const auto sq = diffusers_variant("ddpm_tf", "scheduler_config.json", "beta_schedule", "scaled_linear");
  auto s = import_diffusers(sq);
  EXPECT_NEAR(s.diffusion.betas[500], std::pow(std::sqrt(1e-4) + (std::sqrt(0.02) - std::sqrt(1e-4)) * 500 / 999.0, 2),
              1e-15);
  // The betas travel with the checkpoint.
  const auto path = tmpdir("betas") + "/m.safetensors";
  save_imported(m, path, "test");
  EXPECT_EQ(load_model(path).diffusion.betas, m.diffusion.betas);
}

TEST(ImportDiffusers, TheImportIsAnOrdinaryCheckpoint) {
  auto m = import_diffusers(data("diff_def"));
  const auto path = tmpdir("ckpt") + "/m.safetensors";
  save_imported(m, path, "ddpm import diffusers DIR -o m.safetensors");
  auto opened = open_model(path);
  EXPECT_EQ(opened.num_classes, 4);
  EXPECT_EQ(opened.meta["imported"]["format"], "diffusers");
  EXPECT_EQ(opened.meta["command"], "ddpm import diffusers DIR -o m.safetensors");
  at::NoGradGuard g;
  const auto x = npy("diff_def_x"), t = npy("diff_def_t").to(at::kLong), y = npy("diff_def_y").to(at::kLong);
  EXPECT_EQ(test::max_abs_diff(opened.denoiser(x, t, y), forward(*m.network, x, t, y)), 0.0);
}

// ddpm export writes the imported options too: the TorchScript module gives the peer's output.
TEST(ImportExport, TorchScriptOfImportsEqualsThePeer) {
  const auto dir = tmpdir("export");
  struct Case {
    ImportedModel m;
    std::string name;
    bool labels;
  };
  std::vector<Case> cases;
  cases.push_back({import_diffusers(data("ddpm_tf")), "ddpm_tf", false});
  cases.push_back({import_diffusers(data("diff_def")), "diff_def", true});
  cases.push_back({import_improved(data("improved.pt"), improved_flags()), "improved", true});
  for (auto& c : cases) {
    const auto path = dir + "/" + c.name + ".pt";
    export_torchscript(*c.m.network, path);
    auto ts = load_torchscript(path, c.m.network->num_classes());
    at::NoGradGuard g;
    auto y = c.labels ? npy(c.name + "_y").to(at::kLong) : at::Tensor();
    auto out = ts.denoiser(npy(c.name + "_x"), npy(c.name + "_t").to(at::kLong), y);
    EXPECT_LT(rel_l2(out, npy(c.name + "_out")), 1e-5) << c.name;
  }
}

// unet_cost counts the new options' parameters (FiLM's doubled projections, no middle attention, tf_same) exactly.
TEST(ImportCost, ParameterCountOfEveryImportedStructure) {
  std::vector<std::shared_ptr<UNet>> nets = {import_diffusers(data("ddpm_tf")).network,
                                             import_diffusers(data("diff_def")).network,
                                             import_improved(data("improved.pt"), improved_flags()).network};
  auto o = nets[0]->options();
  o.mid_attention = false;
  nets.push_back(std::make_shared<UNet>(o));
  for (const auto& n : nets)
    EXPECT_EQ(unet_cost(n->options(), n->options().image_size).parameters, n->num_parameters());
  EXPECT_EQ(nets[0]->num_parameters(), 565315);  // diffusers' count of the same network (pretrained.py prints it)
  EXPECT_EQ(nets[1]->num_parameters(), 225718 + 16 * 4);  // + the null label's row (4·C₀ values) of the class embedding
  EXPECT_EQ(nets[2]->num_parameters(), 1208038 + 32 * 4);
}
