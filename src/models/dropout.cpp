#include "ddpm/models/dropout.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <mutex>
#include <string>

#include "ddpm/errors.h"
#include "fused_kernels.h"

namespace ddpm {
namespace {

uint64_t keep_threshold(double p) {
  return static_cast<uint64_t>(std::llround((1.0 - p) * 4294967296.0));
}

// y = mask(seed) · x / (1 − p), over the elements in memory order (x is dense: contiguous in some layout).
at::Tensor apply_mask(const at::Tensor& x, uint64_t seed, double p) {
  auto y = at::empty_like(x);  // same strides as x
  const uint64_t threshold = keep_threshold(p);
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  auto run = [&](auto* px, auto* py) {
    at::parallel_for(0, x.numel(), 16384, [&](int64_t b, int64_t e) {
      kernels::dropout(px + b, py + b, b, e - b, seed, threshold, scale);
    });
  };
  if (x.scalar_type() == at::kBFloat16)  // bfloat16 as its raw bits; the same mask as for float
    run(reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>()),
        reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>()));
  else
    run(x.data_ptr<float>(), y.data_ptr<float>());
  return y;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct HashedDropout : public torch::autograd::Function<HashedDropout> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, double p, int64_t seed) {
    ctx->saved_data["p"] = p;
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["channels_last"] = !x.is_contiguous();  // x is contiguous in one of the two layouts
    return apply_mask(x, static_cast<uint64_t>(seed), p);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // The same mask on the gradient, laid out like the input was (apply_mask works in memory order).
    const auto g = grads[0].contiguous(ctx->saved_data["channels_last"].toBool() ? at::MemoryFormat::ChannelsLast
                                                                                 : at::MemoryFormat::Contiguous);
    return {apply_mask(g, static_cast<uint64_t>(ctx->saved_data["seed"].toInt()), ctx->saved_data["p"].toDouble()),
            at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor hashed_dropout(const at::Tensor& x, double p, bool train) {
  if (!(p >= 0 && p < 1)) throw InvalidArgument("dropout probability must be in [0, 1), got " + std::to_string(p));
  if (!train || p == 0) return x;
  RECORD_FUNCTION("ddpm::hashed_dropout", std::vector<c10::IValue>());
  if (!x.device().is_cpu() || (x.scalar_type() != at::kFloat && x.scalar_type() != at::kBFloat16) ||
      !x.is_non_overlapping_and_dense())
    return at::dropout(x, p, true);
  uint64_t seed;
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    seed = at::check_generator<at::CPUGeneratorImpl>(gen)->random64();
  }
  // The mask follows memory order, so the gradient must arrive in the input's layout (backward makes it so).
  auto xd = x.contiguous(x.suggest_memory_format());
  if (!(at::GradMode::is_enabled() && x.requires_grad())) return apply_mask(xd, seed, p);
  return HashedDropout::apply(xd, p, static_cast<int64_t>(seed));
}

}  // namespace ddpm
