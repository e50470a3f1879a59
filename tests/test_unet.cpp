#include <cmath>

#include "ddpm/errors.h"
#include "ddpm/models/embedding.h"
#include "ddpm/models/unet.h"
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

TEST(UNet, FashionPresetScale) {
  // improved-diffusion's U-Net with 32 channels, (1, 2, 2), 2 res blocks, attention at 16: about 1.6M parameters.
  UNet net(small());
  EXPECT_GT(net.num_parameters(), 1500000);
  EXPECT_LT(net.num_parameters(), 1800000);
}
