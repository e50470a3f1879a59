#include "ddpm/models/inception.h"

#include <torch/nn/functional/pooling.h>
#include <torch/nn/functional/upsampling.h>

#include "ddpm/errors.h"
#include "ddpm/io/safetensors.h"

namespace ddpm {
namespace {

namespace F = torch::nn::functional;

at::Tensor avg3(const at::Tensor& x) {  // 3×3, stride 1, padding 1, padding not counted (FID variant)
  return at::avg_pool2d(x, {3, 3}, {1, 1}, {1, 1}, /*ceil_mode=*/false, /*count_include_pad=*/false);
}

at::Tensor max3s2(const at::Tensor& x) { return at::max_pool2d(x, {3, 3}, {2, 2}); }

class Block : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;

 protected:
  BasicConv conv(const std::string& name, int64_t in, int64_t out, int64_t kh, int64_t kw, int64_t stride = 1,
                 int64_t ph = 0, int64_t pw = 0) {
    return register_module(name, BasicConv(in, out, kh, kw, stride, ph, pw));
  }
};

class BlockA : public Block {  // torchvision InceptionA with the FID pool
 public:
  BlockA(int64_t in, int64_t pool_features) {
    b1 = conv("branch1x1", in, 64, 1, 1);
    b5_1 = conv("branch5x5_1", in, 48, 1, 1);
    b5_2 = conv("branch5x5_2", 48, 64, 5, 5, 1, 2, 2);
    d1 = conv("branch3x3dbl_1", in, 64, 1, 1);
    d2 = conv("branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
    d3 = conv("branch3x3dbl_3", 96, 96, 3, 3, 1, 1, 1);
    pool = conv("branch_pool", in, pool_features, 1, 1);
  }
  at::Tensor forward(const at::Tensor& x) override {
    return at::cat({b1(x), b5_2(b5_1(x)), d3(d2(d1(x))), pool(avg3(x))}, 1);
  }
  BasicConv b1{nullptr}, b5_1{nullptr}, b5_2{nullptr}, d1{nullptr}, d2{nullptr}, d3{nullptr}, pool{nullptr};
};

class BlockB : public Block {  // InceptionB (Mixed_6a)
 public:
  explicit BlockB(int64_t in) {
    b3 = conv("branch3x3", in, 384, 3, 3, 2);
    d1 = conv("branch3x3dbl_1", in, 64, 1, 1);
    d2 = conv("branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
    d3 = conv("branch3x3dbl_3", 96, 96, 3, 3, 2);
  }
  at::Tensor forward(const at::Tensor& x) override { return at::cat({b3(x), d3(d2(d1(x))), max3s2(x)}, 1); }
  BasicConv b3{nullptr}, d1{nullptr}, d2{nullptr}, d3{nullptr};
};

class BlockC : public Block {  // InceptionC with the FID pool
 public:
  BlockC(int64_t in, int64_t c7) {
    b1 = conv("branch1x1", in, 192, 1, 1);
    s1 = conv("branch7x7_1", in, c7, 1, 1);
    s2 = conv("branch7x7_2", c7, c7, 1, 7, 1, 0, 3);
    s3 = conv("branch7x7_3", c7, 192, 7, 1, 1, 3, 0);
    d1 = conv("branch7x7dbl_1", in, c7, 1, 1);
    d2 = conv("branch7x7dbl_2", c7, c7, 7, 1, 1, 3, 0);
    d3 = conv("branch7x7dbl_3", c7, c7, 1, 7, 1, 0, 3);
    d4 = conv("branch7x7dbl_4", c7, c7, 7, 1, 1, 3, 0);
    d5 = conv("branch7x7dbl_5", c7, 192, 1, 7, 1, 0, 3);
    pool = conv("branch_pool", in, 192, 1, 1);
  }
  at::Tensor forward(const at::Tensor& x) override {
    return at::cat({b1(x), s3(s2(s1(x))), d5(d4(d3(d2(d1(x))))), pool(avg3(x))}, 1);
  }
  BasicConv b1{nullptr}, s1{nullptr}, s2{nullptr}, s3{nullptr}, d1{nullptr}, d2{nullptr}, d3{nullptr}, d4{nullptr},
      d5{nullptr}, pool{nullptr};
};

class BlockD : public Block {  // InceptionD (Mixed_7a)
 public:
  explicit BlockD(int64_t in) {
    t1 = conv("branch3x3_1", in, 192, 1, 1);
    t2 = conv("branch3x3_2", 192, 320, 3, 3, 2);
    s1 = conv("branch7x7x3_1", in, 192, 1, 1);
    s2 = conv("branch7x7x3_2", 192, 192, 1, 7, 1, 0, 3);
    s3 = conv("branch7x7x3_3", 192, 192, 7, 1, 1, 3, 0);
    s4 = conv("branch7x7x3_4", 192, 192, 3, 3, 2);
  }
  at::Tensor forward(const at::Tensor& x) override { return at::cat({t2(t1(x)), s4(s3(s2(s1(x)))), max3s2(x)}, 1); }
  BasicConv t1{nullptr}, t2{nullptr}, s1{nullptr}, s2{nullptr}, s3{nullptr}, s4{nullptr};
};

class BlockE : public Block {  // InceptionE; FID: E_1 pools by average without padding, E_2 by max
 public:
  BlockE(int64_t in, bool max_pool) : max_pool_(max_pool) {
    b1 = conv("branch1x1", in, 320, 1, 1);
    t1 = conv("branch3x3_1", in, 384, 1, 1);
    t2a = conv("branch3x3_2a", 384, 384, 1, 3, 1, 0, 1);
    t2b = conv("branch3x3_2b", 384, 384, 3, 1, 1, 1, 0);
    d1 = conv("branch3x3dbl_1", in, 448, 1, 1);
    d2 = conv("branch3x3dbl_2", 448, 384, 3, 3, 1, 1, 1);
    d3a = conv("branch3x3dbl_3a", 384, 384, 1, 3, 1, 0, 1);
    d3b = conv("branch3x3dbl_3b", 384, 384, 3, 1, 1, 1, 0);
    pool = conv("branch_pool", in, 192, 1, 1);
  }
  at::Tensor forward(const at::Tensor& x) override {
    auto t = t1(x);
    auto d = d2(d1(x));
    auto p = max_pool_ ? at::max_pool2d(x, {3, 3}, {1, 1}, {1, 1}) : avg3(x);
    return at::cat({b1(x), at::cat({t2a(t), t2b(t)}, 1), at::cat({d3a(d), d3b(d)}, 1), pool(p)}, 1);
  }
  BasicConv b1{nullptr}, t1{nullptr}, t2a{nullptr}, t2b{nullptr}, d1{nullptr}, d2{nullptr}, d3a{nullptr}, d3b{nullptr},
      pool{nullptr};

 private:
  bool max_pool_;
};

class Stem : public torch::nn::Module {
 public:
  Stem(torch::nn::Module& parent) {
    c1a = parent.register_module("Conv2d_1a_3x3", BasicConv(3, 32, 3, 3, 2));
    c2a = parent.register_module("Conv2d_2a_3x3", BasicConv(32, 32, 3, 3));
    c2b = parent.register_module("Conv2d_2b_3x3", BasicConv(32, 64, 3, 3, 1, 1, 1));
    c3b = parent.register_module("Conv2d_3b_1x1", BasicConv(64, 80, 1, 1));
    c4a = parent.register_module("Conv2d_4a_3x3", BasicConv(80, 192, 3, 3));
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = max3s2(c2b(c2a(c1a(x))));
    return max3s2(c4a(c3b(h)));
  }
  BasicConv c1a{nullptr}, c2a{nullptr}, c2b{nullptr}, c3b{nullptr}, c4a{nullptr};
};

}  // namespace

BasicConvImpl::BasicConvImpl(int64_t in, int64_t out, int64_t kh, int64_t kw, int64_t stride, int64_t ph, int64_t pw) {
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, {kh, kw})
                                                       .stride(stride)
                                                       .padding({ph, pw})
                                                       .bias(false)));
  bn = register_module("bn", torch::nn::BatchNorm2d(torch::nn::BatchNormOptions(out).eps(0.001)));
}

at::Tensor BasicConvImpl::forward(const at::Tensor& x) { return at::relu(bn(conv(x))); }

FidInceptionV3::FidInceptionV3() {
  stem_ = std::make_shared<Stem>(*this);
  const char* names[11] = {"Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                           "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"};
  std::shared_ptr<torch::nn::Module> blocks[11] = {
      std::make_shared<BlockA>(192, 32),  std::make_shared<BlockA>(256, 64),  std::make_shared<BlockA>(288, 64),
      std::make_shared<BlockB>(288),      std::make_shared<BlockC>(768, 128), std::make_shared<BlockC>(768, 160),
      std::make_shared<BlockC>(768, 160), std::make_shared<BlockC>(768, 192), std::make_shared<BlockD>(768),
      std::make_shared<BlockE>(1280, false), std::make_shared<BlockE>(2048, true)};
  for (int i = 0; i < 11; ++i) mixed_[i] = register_module(names[i], blocks[i]);
  fc = register_module("fc", torch::nn::Linear(2048, 1008));
}

at::Tensor FidInceptionV3::features(const at::Tensor& x) {
  if (x.dim() != 4 || (x.size(1) != 1 && x.size(1) != 3))
    throw InvalidArgument("Inception takes images [B, 1 or 3, H, W], got " + std::string(c10::str(x.sizes())));
  auto h = x.size(1) == 1 ? x.expand({x.size(0), 3, x.size(2), x.size(3)}) : x;
  if (h.size(2) != 299 || h.size(3) != 299)
    h = F::interpolate(h, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{299, 299})
                              .mode(torch::kBilinear)
                              .align_corners(false));
  h = static_cast<Stem*>(stem_.get())->forward(h);
  for (auto& m : mixed_) h = static_cast<Block*>(m.get())->forward(h);
  return h.mean({2, 3});
}

at::Tensor FidInceptionV3::logits(const at::Tensor& features) { return fc(features); }

std::shared_ptr<FidInceptionV3> load_fid_inception(const std::string& path) {
  auto st = load_safetensors(path);
  auto net = std::make_shared<FidInceptionV3>();
  torch::NoGradGuard g;
  auto load = [&](const std::string& name, at::Tensor& t) {
    if (!st.contains(name))
      throw FormatError("'" + path + "' lacks '" + name + "' (Inception weights need torchvision's names; see "
                        "scripts/convert_inception.py)");
    const auto& v = st.at(name);
    if (!v.sizes().equals(t.sizes()))
      throw FormatError("'" + path + "': '" + name + "' has shape " + std::string(c10::str(v.sizes())) + ", expected " +
                        std::string(c10::str(t.sizes())));
    t.copy_(v);
  };
  for (auto& kv : net->named_parameters(true)) load(kv.key(), kv.value());
  for (auto& kv : net->named_buffers(true))
    if (kv.key().find("num_batches_tracked") == std::string::npos) load(kv.key(), kv.value());
  net->eval();
  return net;
}

}  // namespace ddpm
