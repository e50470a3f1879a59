// Models from and for Python: TorchScript files made by PyTorch (scripts/golden/make_torchscript.py) sampled here,
// and this project's networks exported to TorchScript computing what they compute in C++.
#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "ddpm/errors.h"
#include "ddpm/io/npy.h"
#include "ddpm/models/exact.h"
#include "ddpm/models/mlp.h"
#include "ddpm/models/torchscript.h"
#include "ddpm/models/unet.h"
#include "ddpm/samplers.h"
#include "support.h"

using namespace ddpm;
using namespace ddpm::test;

namespace {

std::string data(const std::string& name) { return std::string(DDPM_TEST_DATA) + "/" + name; }

std::string tmp(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("ddpm_test_ts_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return (d / name).string();
}

/// Random weights everywhere (a fresh network's last layers are zero, which would hide any mistake).
void randomise(torch::nn::Module& m, uint64_t seed) {
  torch::NoGradGuard g;
  auto gen_ = gen(seed);
  for (auto& p : m.parameters()) p.copy_(at::randn(p.sizes(), gen_) * 0.2);
}

}  // namespace

TEST(TorchScript, AModelScriptedInPythonSamplesTheRightDistribution) {
  // The exact ε-denoiser of N(0.1, 0.4²), written in Python and scripted by PyTorch: DDIM at 1000 steps and DDPM
  // must give the data's moments, and its output must equal ours to float precision.
  auto ts = load_torchscript(data("ts_gaussian.pt"), 0);
  EXPECT_EQ(ts.arity, 2);
  auto full = make_diffusion(1000);
  auto ours = ExactMixtureDenoiser(GaussianMixture::gaussian(0.1, 0.4, 2), full.alphas_cumprod()).as_denoiser();
  auto g = gen(1);
  auto x = at::randn({64, 2}, g);
  for (int64_t t : {0, 300, 999})
    EXPECT_LT(max_abs_diff(ts.denoiser(x, full_t(64, t), {}), ours(x, full_t(64, t), {})), 2e-4) << t;
  auto s = ddim_sample(full, ts.denoiser, at::randn({10000, 2}, g), 0.0, g);
  auto m = s.mean().item<double>(), sd = s.std().item<double>();
  std::printf("TorchScript exact Gaussian, DDIM 1000 steps: mean %.4f std %.4f (data 0.1, 0.4)\n", m, sd);
  EXPECT_NEAR(m, 0.1, 0.01);
  EXPECT_NEAR(sd / 0.4, 1.0, 0.02);
}

TEST(TorchScript, ATracedConditionalNetGivesPyTorchsOutputs) {
  auto ts = load_torchscript(data("ts_conv.pt"), 3);
  EXPECT_EQ(ts.arity, 3);
  auto x = read_npy(data("ts_conv_x.npy")), t = read_npy(data("ts_conv_t.npy")), y = read_npy(data("ts_conv_y.npy"));
  auto ref = read_npy(data("ts_conv_out.npy"));
  c10::InferenceMode guard;
  EXPECT_LT(max_abs_diff(ts.denoiser(x, t.to(at::kLong), y.to(at::kLong)), ref), 1e-6);
  // Without labels the null label (3) is passed, which is what PyTorch computes for y = 3.
  auto all_null = ts.denoiser(x, t.to(at::kLong), at::Tensor());
  auto with_3 = ts.denoiser(x, t.to(at::kLong), at::full({5}, 3, at::TensorOptions().dtype(at::kLong)));
  EXPECT_TRUE(all_null.equal(with_3));
}

TEST(TorchScript, WrongFilesAndSignaturesAreRefusedClearly) {
  try {
    load_torchscript(data("ts_bad.pt"), 0);
    FAIL() << "a one-argument forward was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("forward(x)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_torchscript(data("ts_conv_x.npy"), 0), FormatError);
  EXPECT_THROW(load_torchscript(data("no_such.pt"), 0), IoError);
  // The right signature but the wrong input shape: one line naming the file.
  auto ts = load_torchscript(data("ts_conv.pt"), 3);
  EXPECT_THROW(ts.denoiser(at::zeros({2, 3, 8, 8}), full_t(2, 1), at::zeros({2}, at::kLong)), InvalidArgument);
}

TEST(TorchScript, ExportedNetworksComputeWhatTheyComputeInCpp) {
  c10::InferenceMode guard;
  auto g = gen(5);
  {
    UNetOptions o;
    o.in_channels = 1;
    o.image_size = 28;  // not a power of two: the upsampling follows the skips' sizes
    o.base_channels = 16;
    o.channel_mult = {1, 2, 2};
    o.num_res_blocks = 1;
    o.attention_resolutions = {14};
    o.groups = 8;
    o.num_classes = 3;
    o.learn_sigma = true;
    auto net = std::make_shared<UNet>(o);
    randomise(*net, 6);
    net->eval();
    export_torchscript(*net, tmp("unet.pt"));
    auto ts = load_torchscript(tmp("unet.pt"), 3);
    EXPECT_EQ(ts.arity, 3);
    auto x = at::randn({3, 1, 28, 28}, g);
    auto t = at::tensor(std::vector<int64_t>{0, 417, 999});
    auto y = at::tensor(std::vector<int64_t>{0, 2, 3});
    auto ours = net->forward(x, t, y), theirs = ts.denoiser(x, t, y);
    EXPECT_EQ(theirs.sizes(), ours.sizes());
    std::printf("exported U-Net: max |Δ| %.2e over outputs of scale %.2f\n", max_abs_diff(ours, theirs),
                ours.abs().max().item<double>());
    EXPECT_LT(max_abs_diff(ours, theirs), 1e-4 * std::max(1.0, ours.abs().max().item<double>()));
    EXPECT_GT(ours.abs().max().item<double>(), 0.1);  // the comparison is not of zeros
  }
  {
    MLPOptions o;
    o.dim = 2;
    o.hidden = 32;
    o.blocks = 2;
    o.time_dim = 16;
    auto net = std::make_shared<MLPDenoiser>(o);
    randomise(*net, 7);
    export_torchscript(*net, tmp("mlp.pt"));
    auto ts = load_torchscript(tmp("mlp.pt"), 0);
    EXPECT_EQ(ts.arity, 2);
    auto x = at::randn({50, 2}, g);
    auto t = at::randint(0, 1000, {50}, g, at::TensorOptions().dtype(at::kLong));
    auto ours = net->forward(x, t, {});
    EXPECT_LT(max_abs_diff(ours, ts.denoiser(x, t, {})), 1e-5);
    EXPECT_GT(ours.abs().max().item<double>(), 0.1);
  }
}

TEST(TorchScript, PyTorchRunsTheExportedModel) {
  // Debian's python3-torch (installed by scripts/setup.sh) loads the export and computes the same outputs.
  if (std::system("/usr/bin/python3 -c 'import torch, numpy' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3-torch is not installed (scripts/setup.sh installs it)";
  c10::InferenceMode guard;
  auto o = test::tiny_unet_options({8});
  o.num_classes = 2;
  auto net = std::make_shared<UNet>(o);
  randomise(*net, 8);
  net->eval();
  export_torchscript(*net, tmp("py.pt"));
  auto g = gen(9);
  auto x = at::randn({2, 1, 16, 16}, g);
  auto t = at::tensor(std::vector<int64_t>{3, 700}), y = at::tensor(std::vector<int64_t>{1, 2});
  write_npy(tmp("py_x.npy"), x);
  write_npy(tmp("py_t.npy"), t);
  write_npy(tmp("py_y.npy"), y);
  const std::string script =
      "import sys, numpy as np, torch\n"
      "d = sys.argv[1]\n"
      "m = torch.jit.load(d + '/py.pt')\n"
      "x, t, y = (torch.from_numpy(np.load(d + '/py_' + k + '.npy')) for k in 'xty')\n"
      "np.save(d + '/py_out.npy', m(x, t, y).detach().numpy())\n";
  std::ofstream(tmp("run.py")) << script;
  const auto dir = std::filesystem::path(tmp("py.pt")).parent_path().string();
  ASSERT_EQ(std::system(("/usr/bin/python3 " + tmp("run.py") + " " + dir).c_str()), 0);
  auto ours = net->forward(x, t, y);
  EXPECT_LT(max_abs_diff(read_npy(tmp("py_out.npy")), ours), 1e-4 * std::max(1.0, ours.abs().max().item<double>()));
}
