#include "ddpm/models/noisy_classifier.h"

#include <torch/nn/functional/activation.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <algorithm>

#include "ddpm/errors.h"
#include "ddpm/models/embedding.h"
#include "ddpm/models/group_norm.h"
#include "ddpm/models/unet.h"

namespace ddpm {
namespace {

namespace F = torch::nn::functional;

class UNetEncoderClassifier : public NoisyClassifierNet {
 public:
  explicit UNetEncoderClassifier(NoisyClassifierOptions o) : NoisyClassifierNet(std::move(o)) {
    const auto& op = options_;
    const int64_t ch = op.base_channels, temb_dim = 4 * ch;
    temb0 = register_module("temb_dense0", torch::nn::Linear(ch, temb_dim));
    temb1 = register_module("temb_dense1", torch::nn::Linear(temb_dim, temb_dim));
    conv_in = register_module("conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(op.in_channels, ch, 3).padding(1)));
    blocks = register_module("blocks", torch::nn::ModuleList());
    int64_t cur = ch;
    const int64_t L = static_cast<int64_t>(op.channel_mult.size());
    for (int64_t i = 0; i < L; ++i) {
      const int64_t out = ch * op.channel_mult[i];
      const bool attn = std::find(op.attention_resolutions.begin(), op.attention_resolutions.end(),
                                  op.image_size >> i) != op.attention_resolutions.end();
      for (int64_t j = 0; j < op.num_res_blocks; ++j) {
        blocks->push_back(ResBlock(cur, out, temb_dim, op.dropout, op.groups));
        kinds.push_back('r');
        cur = out;
        if (attn) {
          blocks->push_back(AttnBlock(cur, op.groups));
          kinds.push_back('a');
        }
      }
      if (i != L - 1) {
        blocks->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(cur, cur, 3).stride(2).padding(1)));
        kinds.push_back('d');
      }
    }
    blocks->push_back(ResBlock(cur, cur, temb_dim, op.dropout, op.groups));  // the middle block
    kinds.push_back('r');
    norm_out = register_module("norm_out", torch::nn::GroupNorm(torch::nn::GroupNormOptions(op.groups, cur).eps(1e-6)));
    head = register_module("head", torch::nn::Linear(cur, op.num_classes));
  }

  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override {
    const auto& op = options_;
    if (x.dim() != 4 || x.size(1) != op.in_channels)
      throw InvalidArgument("this noisy classifier expects images [B, " + std::to_string(op.in_channels) +
                            ", H, W], got " + std::string(c10::str(x.sizes())));
    auto act = F::silu(temb1(F::silu(temb0(timestep_embedding(t, op.base_channels).to(x.dtype())))));
    auto h = conv_in(x);
    for (size_t i = 0; i < kinds.size(); ++i) {
      if (kinds[i] == 'r')
        h = blocks[i]->as<ResBlockImpl>()->forward(h, act);
      else if (kinds[i] == 'a')
        h = blocks[i]->as<AttnBlockImpl>()->forward(h);
      else
        h = blocks[i]->as<torch::nn::Conv2dImpl>()->forward(h);
    }
    auto pooled = group_norm_silu(h, norm_out->options.num_groups(), norm_out->weight, norm_out->bias,
                                  norm_out->options.eps(), true)
                      .mean({2, 3});
    return head(pooled);
  }

 private:
  torch::nn::Linear temb0{nullptr}, temb1{nullptr}, head{nullptr};
  torch::nn::Conv2d conv_in{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  std::vector<char> kinds;  // r = ResBlock, a = attention, d = downsampling convolution
  torch::nn::GroupNorm norm_out{nullptr};
};

class MLPClassifier : public NoisyClassifierNet {
 public:
  explicit MLPClassifier(NoisyClassifierOptions o) : NoisyClassifierNet(std::move(o)) {
    const auto& op = options_;
    const int64_t H = op.hidden;
    time_fc1 = register_module("time_fc1", torch::nn::Linear(op.time_dim, H));
    time_fc2 = register_module("time_fc2", torch::nn::Linear(H, H));
    in_proj = register_module("in_proj", torch::nn::Linear(op.dim, H));
    fc1 = register_module("fc1", torch::nn::ModuleList());
    fc2 = register_module("fc2", torch::nn::ModuleList());
    temb_proj = register_module("temb_proj", torch::nn::ModuleList());
    for (int64_t b = 0; b < op.blocks; ++b) {
      fc1->push_back(torch::nn::Linear(H, H));
      fc2->push_back(torch::nn::Linear(H, H));
      temb_proj->push_back(torch::nn::Linear(H, H));
    }
    head = register_module("head", torch::nn::Linear(H, op.num_classes));
  }

  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override {
    const auto& op = options_;
    if (x.dim() != 2 || x.size(1) != op.dim)
      throw InvalidArgument("this noisy classifier expects points [B, " + std::to_string(op.dim) + "], got " +
                            std::string(c10::str(x.sizes())));
    auto act = F::silu(time_fc2(F::silu(time_fc1(timestep_embedding(t, op.time_dim).to(x.dtype())))));
    auto h = in_proj(x);
    for (int64_t b = 0; b < op.blocks; ++b) {
      auto u = fc1[b]->as<torch::nn::Linear>()->forward(F::silu(h)) + temb_proj[b]->as<torch::nn::Linear>()->forward(act);
      h = h + fc2[b]->as<torch::nn::Linear>()->forward(F::silu(u));
    }
    return head(F::silu(h));
  }

 private:
  torch::nn::Linear time_fc1{nullptr}, time_fc2{nullptr}, in_proj{nullptr}, head{nullptr};
  torch::nn::ModuleList fc1{nullptr}, fc2{nullptr}, temb_proj{nullptr};
};

void check(bool ok, const std::string& message, const std::string& field) {
  if (!ok) throw InvalidArgument("noisy classifier: " + message, field);
}

}  // namespace

nlohmann::json NoisyClassifierOptions::to_json() const {
  nlohmann::json j = *this;
  j["type"] = "noisy_classifier";
  return j;
}

NoisyClassifierOptions NoisyClassifierOptions::from_json(const nlohmann::json& j) {
  if (!j.is_object() || j.value("type", std::string()) != "noisy_classifier")
    throw FormatError("not a noisy classifier's configuration (\"type\": \"noisy_classifier\" missing)");
  try {
    return j.get<NoisyClassifierOptions>();
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(std::string("a noisy classifier's configuration is malformed: ") + e.what());
  }
}

std::vector<int64_t> NoisyClassifierOptions::item_shape() const {
  if (arch == "mlp") return {dim};
  return {in_channels, image_size, image_size};
}

std::shared_ptr<NoisyClassifierNet> make_noisy_classifier(const NoisyClassifierOptions& o) {
  check(o.num_classes >= 2, "needs at least 2 classes", "num_classes");
  if (o.arch == "mlp") {
    check(o.dim >= 1 && o.hidden >= 1 && o.blocks >= 0, "dim and hidden must be positive, blocks ≥ 0", "hidden");
    check(o.time_dim >= 4 && o.time_dim % 2 == 0, "time_dim must be even and at least 4", "time_dim");
    return std::make_shared<MLPClassifier>(o);
  }
  check(o.arch == "unet", "arch must be 'unet' or 'mlp', not '" + o.arch + "'", "arch");
  check(o.in_channels >= 1 && o.image_size >= 1, "channels and image size must be positive", "image_size");
  check(o.base_channels >= 1 && o.base_channels % 2 == 0, "base_channels must be positive and even", "base_channels");
  check(!o.channel_mult.empty() && o.num_res_blocks >= 1, "needs a level and a ResNet block per level",
        "channel_mult");
  check(o.dropout >= 0 && o.dropout < 1, "dropout must lie in [0, 1)", "dropout");
  for (int64_t m : o.channel_mult) {
    check(m >= 1, "channel multipliers must be positive", "channel_mult");
    check(o.groups >= 1 && (o.base_channels * m) % o.groups == 0,
          "groups (" + std::to_string(o.groups) + ") must divide every level's channel count", "groups");
  }
  return std::make_shared<UNetEncoderClassifier>(o);
}

NoisyClassifier as_noisy_classifier(std::shared_ptr<NoisyClassifierNet> net) {
  net->eval();
  return [net](const at::Tensor& x, const at::Tensor& t) { return net->forward(x.to(at::kFloat), t.to(at::kLong)); };
}

}  // namespace ddpm
