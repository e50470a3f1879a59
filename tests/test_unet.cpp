#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "ddpm/errors.h"
#include "ddpm/io/safetensors.h"
#include "ddpm/store/checkpoint.h"
#include "ddpm/io/npy.h"
#include "ddpm/models/embedding.h"
#include "ddpm/models/unet.h"
#include "ddpm/models/unet_cost.h"
#include "ddpm/resources.h"
#include "support.h"

#include <torch/utils.h>

using namespace ddpm;
using namespace ddpm::test;

namespace {

UNetOptions small(int64_t classes = 0, bool sigma = false) {
  UNetOptions o;
  o.in_channels = 1;
  o.base_channels = 32;
  o.channel_mult = {1, 2, 2};
  o.attention_resolutions = {16};
  o.num_classes = classes;
  o.learn_sigma = sigma;
  return o;
}

}  // namespace

TEST(UNet, Cifar10ConfigurationHasThePapersParameterCount) {
  UNetOptions o;  // ch 128, mult (1,2,2,2), 2 res blocks, attention at 16×16, dropout 0.1: DDPM's CIFAR-10 model
  UNet net(o);
  EXPECT_EQ(net.num_parameters(), 35746307);
}

TEST(UNet, FreshModelOutputsExactlyZeroAtEveryShape) {
  torch::manual_seed(0);
  struct Case {
    UNetOptions o;
    int64_t side;
  };
  UNetOptions cifar;
  cifar.dropout = 0;
  cifar.base_channels = 32;  // the CIFAR layout, narrower to keep the test fast
  UNetOptions cifar64 = cifar;
  cifar64.image_size = 64;
  for (const auto& c : {Case{small(), 28}, Case{small(10), 32}, Case{small(0, true), 32}, Case{cifar, 32},
                        Case{cifar64, 64}, Case{cifar, 28}}) {
    UNet net(c.o);
    net.eval();
    auto x = at::randn({2, c.o.in_channels, c.side, c.side});
    auto t = at::tensor({0, 999}, at::TensorOptions().dtype(at::kLong));
    auto y = c.o.num_classes ? at::tensor(std::vector<int64_t>{3, c.o.num_classes}) : at::Tensor();
    auto out = net.forward(x, t, y);
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, c.o.in_channels * (c.o.learn_sigma ? 2 : 1), c.side, c.side}));
    EXPECT_EQ(out.abs().max().item<float>(), 0.0f) << c.side;
  }
}

TEST(UNet, StableParameterNamesAndTrainability) {
  UNet net(small(10));
  auto names = net.named_parameters().keys();
  for (const char* n : {"temb_dense0.weight", "class_emb.weight", "conv_in.weight", "down.0.block.0.norm1.weight",
                        "down.1.attn.1.q.weight", "down.0.downsample.weight", "mid.attn1.proj_out.weight", "mid.block2.conv2.bias",
                        "up.2.block.2.nin_shortcut.weight", "up.1.upsample.weight", "conv_out.bias"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  // One gradient step moves the output off zero: the zero-initialised layers still learn.
  auto x = at::randn({2, 1, 32, 32});
  auto t = at::tensor({5, 500}, at::TensorOptions().dtype(at::kLong));
  auto loss = (net.forward(x, t, {}) - x).pow(2).mean();
  loss.backward();
  EXPECT_GT(net.named_parameters()["conv_out.weight"].grad().abs().max().item<float>(), 0.0f);
  auto rebuilt = make_network(net.config());
  EXPECT_EQ(rebuilt->num_parameters(), net.num_parameters());
  EXPECT_THROW(net.forward(at::randn({2, 3, 32, 32}), t, {}), InvalidArgument);
}

TEST(UNet, OptionsBeyondAnyNetworkOrTheMachineAreRefusedBeforeAllocating) {
  // Configurations come from files (checkpoints, imports): bounds that keep the counting in 64 bits, and the weights'
  // memory checked before any is allocated (the fuzz_import_config campaign).
  auto o = test::tiny_unet_options();
  o.base_channels = 1 << 20;
  EXPECT_THROW(UNet{o}, InvalidArgument);
  o = test::tiny_unet_options();
  o.channel_mult = std::vector<int64_t>(17, 1);
  EXPECT_THROW(UNet{o}, InvalidArgument);
  o = test::tiny_unet_options();
  o.base_channels = 4096;  // 4096² · 9 weights per 3×3 convolution: over 1.8 GiB of weights
  ::setenv("DDPM_MEMORY_LIMIT", "1G", 1);
  try {
    UNet net(o);
    ADD_FAILURE() << "no OutOfMemory";
  } catch (const OutOfMemory& e) {
    EXPECT_EQ(e.field(), "channels");
    EXPECT_NE(std::string(e.what()).find("a U-Net of " + std::to_string(unet_cost(o, 16).parameters) + " parameters"),
              std::string::npos) << e.what();
  }
  ::unsetenv("DDPM_MEMORY_LIMIT");
  EXPECT_GT(unet_cost(o, 16).parameters, int64_t{1} << 28);  // the refusal was for a network of over 1 GiB
  EXPECT_NO_THROW(UNet{test::tiny_unet_options()});
}

TEST(UNet, FashionPresetScale) {
  // improved-diffusion's U-Net with 32 channels, (1, 2, 2), 2 res blocks, attention at 16: about 1.6M parameters.
  // The count equals the weights of the shipped model that this preset trained (a file written by a training run).
  auto o = small(10);
  UNet net(o);
  auto shipped = ddpm::load_safetensors(std::string(DDPM_SOURCE_DIR) + "/models/fashion-mnist.safetensors");
  int64_t stored = 0;
  for (const auto& [name, t] : shipped.tensors)
    if (name.rfind("ema.", 0) == 0) stored += t.numel();
  EXPECT_EQ(net.num_parameters(), stored);
  EXPECT_EQ(stored, 1624577);
}

TEST(UNetCost, ParameterCountOfTheStructuralWalkMatchesTheModule) {
  // The cost model walks the architecture on its own; its parameter count must equal the module's.
  std::vector<ddpm::UNetOptions> configs(4);
  configs[1].in_channels = 1;
  configs[1].image_size = 32;
  configs[1].base_channels = 32;
  configs[1].channel_mult = {1, 2, 2};
  configs[1].num_classes = 10;
  configs[2] = configs[1];
  configs[2].image_size = 28;
  configs[2].learn_sigma = true;
  configs[3].base_channels = 64;
  configs[3].num_res_blocks = 3;
  configs[3].attention_resolutions = {16, 8};
  configs[3].image_size = 64;
  configs[3].channel_mult = {1, 2, 3, 4};
  for (const auto& o : configs) {
    ddpm::UNet net(o);
    auto cost = ddpm::unet_cost(o, o.image_size);
    EXPECT_EQ(cost.parameters, net.num_parameters()) << o.to_json().dump();
    // Convolutions cost per pixel: without attention resolutions (whose placement depends on the size) the network
    // on images twice the side costs exactly 4× in convolutions and the same in its timestep layers.
    auto plain = o;
    plain.attention_resolutions = {};
    const auto c1 = ddpm::unet_cost(plain, o.image_size), c2 = ddpm::unet_cost(plain, 2 * o.image_size);
    EXPECT_DOUBLE_EQ(c2.conv_flops, 4 * c1.conv_flops) << o.to_json().dump();
    EXPECT_DOUBLE_EQ(c2.linear_flops, c1.linear_flops);
    // Only the middle block keeps its attention, whose two products grow with the square of the pixel count.
    EXPECT_DOUBLE_EQ(c2.attention_flops, 16 * c1.attention_flops);
  }
  EXPECT_EQ(ddpm::unet_cost(configs[0], 32).parameters, 35746307);
}

TEST(UNetCost, FlopsOfATinyNetworkByHand) {
  // One level, one res block, 4 channels, 8×8 grey images: every layer written out.
  ddpm::UNetOptions o;
  o.in_channels = 1;
  o.image_size = 8;
  o.base_channels = 4;
  o.channel_mult = {1};
  o.num_res_blocks = 1;
  o.attention_resolutions = {};
  o.groups = 2;
  const double px = 64, temb = 16;
  auto conv = [&](double in, double out, double k) { return 2 * in * out * k * k * px; };
  const double res44 = 2 * conv(4, 4, 3);
  const double res84 = conv(8, 4, 3) + conv(4, 4, 3) + conv(8, 4, 1);
  const double convs = conv(1, 4, 3) + res44                      // conv_in, down block
                       + 2 * res44 + 4 * conv(4, 4, 1)            // middle blocks, attention q/k/v/proj
                       + 2 * res84 + conv(4, 1, 3);               // up blocks (with skips), conv_out
  const double attn = 2 * (2 * px * px * 4);
  const double linear = 2 * (4 * temb) + 2 * (temb * temb) + 5 * 2 * (temb * 4);  // timestep MLP, 5 projections
  auto c = ddpm::unet_cost(o, 8);
  EXPECT_DOUBLE_EQ(c.conv_flops, convs);
  EXPECT_DOUBLE_EQ(c.attention_flops, attn);
  EXPECT_DOUBLE_EQ(c.linear_flops, linear);
  EXPECT_EQ(c.parameters, ddpm::UNet(o).num_parameters());
  EXPECT_EQ(c.convs.size(), 1u + 2 + 2 * 2 + 4 + 2 * 3 + 1);
  // Memory: the skips are conv_in's and the down block's outputs (4 channels × 64 pixels each); the largest tensor
  // is an up block's concatenated input (8 × 64); the middle attention's scores are 64² (one head); every
  // convolution's input plus output, summed layer by layer as above.
  EXPECT_DOUBLE_EQ(c.skip_floats, 2 * 4 * px);
  EXPECT_DOUBLE_EQ(c.largest_floats, 8 * px);
  EXPECT_DOUBLE_EQ(c.attention_scores, px * px);
  auto io = [&](double in, double out) { return (in + out) * px; };
  const double res44_io = 2 * io(4, 4), res84_io = io(8, 4) + io(4, 4) + io(8, 4);
  EXPECT_DOUBLE_EQ(c.activation_floats, io(1, 4) + res44_io + 2 * res44_io + 4 * io(4, 4) + 2 * res84_io + io(4, 1));
  EXPECT_DOUBLE_EQ(c.inference_bytes(), 4 * (2 * 4 * px + 6 * 8 * px + 2 * px * px));
}

TEST(UNet, ThePyTorchBaselineOfTheBenchmarkIsTheSameNetwork) {
  // bench/reference_unet.py must time this very network: the shipped model's weights load into it by name and
  // give the same outputs.
  if (std::system("/usr/bin/python3 -c 'import torch, numpy' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3-torch is not installed (scripts/setup.sh installs it)";
  const std::string model = std::string(DDPM_SOURCE_DIR) + "/models/fashion-mnist.safetensors";
  const auto dir = std::filesystem::temp_directory_path() / ("ddpm_test_ref_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string cmd = "/usr/bin/python3 " + std::string(DDPM_SOURCE_DIR) +
                          "/bench/reference_unet.py --config fashion-mnist --check " + model + " --dump " +
                          dir.string() + " > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto m = ddpm::load_model(model);
  auto x = ddpm::read_npy((dir / "x.npy").string());
  auto expected = ddpm::read_npy((dir / "out.npy").string());
  at::Tensor out;
  {
    at::NoGradGuard g;
    out = m.network->forward(x, at::tensor({int64_t{10}, int64_t{500}}), at::tensor({int64_t{1}, int64_t{3}}));
  }
  ASSERT_EQ(out.sizes(), expected.sizes());
  EXPECT_GT(expected.abs().max().item<double>(), 0.1);  // a trained model's output, not zeros
  EXPECT_LT(max_abs_diff(out, expected), 1e-4);
  std::filesystem::remove_all(dir);
}

TEST(UNet, SpatialAttentionEqualsTheDirectFormulaWithItsGradients) {
  // The float path against softmax(qᵀk/√C) written out in double, values and gradients.
  auto g = gen(9);
  const int64_t B = 3, C = 8, N = 20;
  auto q = at::randn({B, C, N}, g), k = at::randn({B, C, N}, g), v = at::randn({B, C, N}, g);
  auto up = at::randn({B, C, N}, g);
  auto run = [&](bool dbl) {
    auto qq = (dbl ? q.to(at::kDouble) : q.clone()).requires_grad_(true);
    auto kk = (dbl ? k.to(at::kDouble) : k.clone()).requires_grad_(true);
    auto vv = (dbl ? v.to(at::kDouble) : v.clone()).requires_grad_(true);
    at::Tensor out;
    if (dbl) {
      auto w = at::softmax(at::bmm(qq.transpose(1, 2), kk) / std::sqrt(double(C)), -1);  // [B, i, j]
      out = at::bmm(vv, w.transpose(1, 2));
    } else {
      out = spatial_attention(qq, kk, vv);
    }
    (out * (dbl ? up.to(at::kDouble) : up)).sum().backward();
    return std::vector<at::Tensor>{out.detach(), qq.grad(), kk.grad(), vv.grad()};
  };
  auto a = run(false), b = run(true);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_LT(max_abs_diff(a[i], b[i]), 2e-5) << "output/grad " << i;
}

TEST(UNet, Bf16AttentionIsTheFormulaToBfloat16Rounding) {
  // bfloat16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.2%): scores of size ~√C·|q||k|/√C round by ~1e-2,
  // so the output, a convex combination of v, is within a few 1e-2 of the exact one — and not equal to it.
  auto g = gen(10);
  const int64_t B = 4, C = 64, N = 256;
  auto q = at::randn({B, C, N}, g), k = at::randn({B, C, N}, g), v = at::randn({B, C, N}, g);
  auto exact = at::bmm(v.to(at::kDouble),
                       at::softmax(at::bmm(q.to(at::kDouble).transpose(1, 2), k.to(at::kDouble)) / 8.0, -1).transpose(1, 2));
  auto out = spatial_attention(q, k, v, AttentionPrecision::bf16);
  ASSERT_EQ(out.scalar_type(), at::kFloat);
  const double err = max_abs_diff(out, exact), rms = (out.to(at::kDouble) - exact).pow(2).mean().sqrt().item<double>();
  EXPECT_LT(err, 0.06);
  EXPECT_LT(rms, 0.01);
  EXPECT_GT(err, 1e-4);  // it really ran in reduced precision
  // The float path on the same inputs is exact to float rounding.
  EXPECT_LT(max_abs_diff(spatial_attention(q, k, v), exact), 1e-4);
  // Channels-last activations give q, k, v as transposed views of [B, N, C]: same values, same layout out.
  auto view = [](const at::Tensor& t) { return t.transpose(1, 2).contiguous().transpose(1, 2); };
  for (auto p : {AttentionPrecision::fp32, AttentionPrecision::bf16}) {
    auto o = spatial_attention(view(q), view(k), view(v), p);
    EXPECT_EQ(o.stride(1), 1);
    EXPECT_LT(max_abs_diff(o, exact), p == AttentionPrecision::bf16 ? 0.06 : 1e-4);
  }
  // Gradients flow through the bf16 path to float inputs.
  auto qq = q.clone().requires_grad_(true);
  spatial_attention(qq, k, v, AttentionPrecision::bf16).sum().backward();
  ASSERT_TRUE(qq.grad().defined());
  EXPECT_EQ(qq.grad().scalar_type(), at::kFloat);
}

namespace {

// A small U-Net with every parameter perturbed (a fresh one outputs exactly zero), in training or eval mode.
std::shared_ptr<UNet> perturbed_unet(uint64_t seed, bool scale_shift = false) {
  auto o = small(10);
  o.scale_shift_norm = scale_shift;
  o.dropout = 0.0;
  torch::manual_seed(static_cast<int64_t>(seed));
  auto net = std::make_shared<UNet>(o);
  auto g = gen(seed);
  at::NoGradGuard ng;
  for (auto& p : net->parameters()) p.add_(at::randn(p.sizes(), g) * 0.05);
  return net;
}

double cosine(const at::Tensor& a, const at::Tensor& b) {
  auto x = a.to(at::kDouble).flatten(), y = b.to(at::kDouble).flatten();
  return (x * y).sum().item<double>() / std::sqrt((x * x).sum().item<double>() * (y * y).sum().item<double>());
}

}  // namespace

TEST(UNet, Bf16ComputeIsTheFloatNetworkToBfloat16RoundingWithFloatGradients) {
  // Mixed precision against the float network (itself checked against the peers' code): bfloat16 keeps 8 significant
  // bits, so each layer rounds by up to 2⁻⁸ relative and the errors of some 40 layers add up to about 2% of the
  // output's spread on this randomly perturbed network (measured 1.8% additive, 2.1% scale-shift; gradient cosines
  // 0.99995 and 0.99991). Gradients reach the float parameters as float and point the same way.
  for (bool ss : {false, true}) {
    SCOPED_TRACE(ss ? "scale-shift" : "additive timestep embedding");
    auto net = perturbed_unet(21, ss);
    net->eval();
    auto g = gen(22);
    auto x = at::randn({4, 1, 32, 32}, g);
    auto t = at::tensor({5, 250, 600, 999}, at::TensorOptions().dtype(at::kLong));
    auto y = at::tensor({0, 3, 10, 7}, at::TensorOptions().dtype(at::kLong));
    at::Tensor ref, refx;
    std::vector<at::Tensor> ref_grads;
    auto forward_backward = [&](std::vector<at::Tensor>& grads) {
      net->zero_grad();
      auto out = net->forward(x, t, y);
      (out * out).sum().backward();
      grads.clear();
      for (auto& p : net->parameters()) grads.push_back(p.grad().clone());
      return out.detach();
    };
    ref = forward_backward(ref_grads);
    net->set_compute_precision(ComputePrecision::bf16);
    EXPECT_EQ(net->compute_precision(), ComputePrecision::bf16);
    std::vector<at::Tensor> grads;
    auto out = forward_backward(grads);
    ASSERT_EQ(out.scalar_type(), at::kFloat);
    ASSERT_TRUE(out.is_contiguous());
    auto all = [](const std::vector<at::Tensor>& v) {
      std::vector<at::Tensor> f;
      for (auto& a : v) f.push_back(a.flatten());
      return at::cat(f);
    };
    const double spread = ref.std().item<double>();
    const double rms = (out - ref).pow(2).mean().sqrt().item<double>() / spread;
    EXPECT_LT(rms, 0.04);
    EXPECT_GT(rms, 1e-5);  // it ran in bfloat16
    for (auto& gr : grads) ASSERT_EQ(gr.scalar_type(), at::kFloat);
    EXPECT_GT(cosine(all(grads), all(ref_grads)), 0.999);
    // Inference (no gradients) goes through the cached bfloat16 weights: the same values as with gradients on.
    {
      c10::InferenceMode guard;
      EXPECT_TRUE(at::equal(net->forward(x, t, y), out));
    }
    // A weight changed in place after the cache filled: the next forward sees it (as a fresh fp32→bf16 run does).
    {
      at::NoGradGuard ng;
      for (auto& p : net->parameters()) p.mul_(1.01);
      auto cached = net->forward(x, t, y);
      auto fresh = perturbed_unet(21, ss);
      for (auto& p : fresh->parameters()) p.mul_(1.01);
      fresh->eval();
      fresh->set_compute_precision(ComputePrecision::bf16);
      EXPECT_TRUE(at::equal(cached, fresh->forward(x, t, y)));
      net->set_compute_precision(ComputePrecision::fp32);
      EXPECT_TRUE(at::equal(net->forward(x, t, y), [&] {
        fresh->set_compute_precision(ComputePrecision::fp32);
        return fresh->forward(x, t, y);
      }()));
    }
  }
}

TEST(UNet, AutomaticPrecisionChoosesTheFasterMeasuredOneAndRestoresTheMode) {
  // Which precision is faster depends on the CPU, so the test checks the bookkeeping: the choice is the smaller of
  // the two reported times, the network is left in it, its train/eval mode is unchanged, and its output in the chosen
  // precision is what that precision computes.
  auto net = perturbed_unet(31);
  net->train();
  const auto timing = choose_compute_precision(*net, 2, 1);
  EXPECT_EQ(timing.batch, 2);
  ASSERT_GT(timing.fp32_seconds, 0);
  ASSERT_GT(timing.bf16_seconds, 0);
  EXPECT_EQ(timing.chosen, timing.bf16_seconds < timing.fp32_seconds ? ComputePrecision::bf16 : ComputePrecision::fp32);
  EXPECT_EQ(net->compute_precision(), timing.chosen);
  EXPECT_TRUE(net->is_training());
  EXPECT_THROW(choose_compute_precision(*net, 0), InvalidArgument);
  // A network without a bf16 path (the MLP) stays fp32.
  auto mlp = make_network({{"type", "mlp"}});
  const auto m = choose_compute_precision(*mlp, 4, 1);
  EXPECT_EQ(m.chosen, ComputePrecision::fp32);
  EXPECT_TRUE(std::isnan(m.bf16_seconds));
}
