// The FID Inception against torchvision's Inception-v3 with the same random weights and the same FID changes
// (scripts/golden/inception_reference.py, run here with Debian's python3-torchvision).
#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ddpm/errors.h"
#include "ddpm/io/npy.h"
#include "ddpm/models/inception.h"
#include "support.h"

using namespace ddpm;
using namespace ddpm::test;

TEST(Inception, MatchesTorchvisionGivenTheSameWeights) {
  if (std::system("/usr/bin/python3 -c 'import torchvision' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3-torchvision is not installed (scripts/setup.sh installs it)";
  const auto dir = std::filesystem::temp_directory_path() / ("ddpm_inception_" + std::to_string(::getpid()));
  const std::string script = std::string(DDPM_SOURCE_DIR) + "/scripts/golden/inception_reference.py";
  ASSERT_EQ(std::system(("/usr/bin/python3 " + script + " " + dir.string()).c_str()), 0);
  auto net = load_fid_inception((dir / "inception.safetensors").string());
  c10::InferenceMode guard;
  auto x = read_npy((dir / "x.npy").string());
  auto f = net->features(x), l = net->logits(f);
  auto rf = read_npy((dir / "features.npy").string()), rl = read_npy((dir / "logits.npy").string());
  ASSERT_EQ(f.sizes(), rf.sizes());
  ASSERT_EQ(l.sizes(), (std::vector<int64_t>{2, 1008}));
  const double fs = rf.abs().max().item<double>(), ls = rl.abs().max().item<double>();
  std::printf("FID Inception vs torchvision: features max |Δ| %.2e (scale %.3g), logits %.2e (scale %.3g)\n",
              max_abs_diff(f, rf), fs, max_abs_diff(l, rl), ls);
  EXPECT_LT(max_abs_diff(f, rf), 1e-4 * std::max(1.0, fs));
  EXPECT_LT(max_abs_diff(l, rl), 1e-4 * std::max(1.0, ls));
  EXPECT_GT(fs, 1e-3);  // not a comparison of zeros
  // Grey images are the same image on three channels.
  auto grey = x.slice(1, 0, 1);
  EXPECT_LT(max_abs_diff(net->features(grey), net->features(grey.expand({2, 3, 64, 64}))), 1e-6);
  EXPECT_THROW(net->features(at::zeros({1, 2, 32, 32})), InvalidArgument);
  // The CLI with these weights: a set against itself has FID 0.
  const std::string w = (dir / "inception.safetensors").string(), xs = (dir / "x.npy").string();
  const std::string cmd = std::string(DDPM_CLI) + " -q fid --inception " + w + " --ref " + xs + " --samples " + xs +
                          " --json > " + (dir / "fid.json").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream in(dir / "fid.json");
  auto j = nlohmann::json::parse(in);
  EXPECT_LT(j["fid"].get<double>(), 1e-6);
  std::filesystem::remove_all(dir);
}

TEST(Inception, RefusesWeightsWithTheWrongNames) {
  EXPECT_THROW(load_fid_inception(std::string(DDPM_TEST_DATA) + "/ts_conv_x.npy"), FormatError);
}
