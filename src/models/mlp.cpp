#include "ddpm/models/mlp.h"

#include <torch/nn/functional/activation.h>
#include <torch/nn/init.h>

#include "ddpm/errors.h"
#include "ddpm/models/embedding.h"

namespace ddpm {

MLPDenoiser::MLPDenoiser(MLPOptions o) : options_(o) {
  if (o.dim < 1 || o.hidden < 1 || o.blocks < 0 || o.time_dim < 4 || o.num_classes < 0 ||
      (o.out_factor != 1 && o.out_factor != 2))
    throw InvalidArgument("invalid MLP options (dim, hidden ≥ 1; blocks ≥ 0; time_dim ≥ 4; out_factor 1 or 2)");
  const int64_t H = o.hidden;
  time_fc1 = register_module("time_fc1", torch::nn::Linear(o.time_dim, H));
  time_fc2 = register_module("time_fc2", torch::nn::Linear(H, H));
  if (o.num_classes > 0) class_emb = register_module("class_emb", torch::nn::Embedding(o.num_classes + 1, H));
  in_proj = register_module("in_proj", torch::nn::Linear(o.dim, H));
  fc1 = register_module("fc1", torch::nn::ModuleList());
  fc2 = register_module("fc2", torch::nn::ModuleList());
  temb_proj = register_module("temb_proj", torch::nn::ModuleList());
  for (int64_t b = 0; b < o.blocks; ++b) {
    fc1->push_back(torch::nn::Linear(H, H));
    fc2->push_back(torch::nn::Linear(H, H));
    temb_proj->push_back(torch::nn::Linear(H, H));
  }
  out_proj = register_module("out_proj", torch::nn::Linear(H, o.dim * o.out_factor));
  torch::NoGradGuard no_grad;
  out_proj->weight.zero_();
  out_proj->bias.zero_();
}

at::Tensor MLPDenoiser::forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
  namespace F = torch::nn::functional;
  if (x.dim() != 2 || x.size(1) != options_.dim)
    throw InvalidArgument("the MLP expects points of shape [B, " + std::to_string(options_.dim) + "], got " +
                          std::string(c10::str(x.sizes())));
  // The conditioning depends only on (t, y): evaluate it once per distinct pair. In sampling every row shares
  // one t, so this removes all but one row of the time-embedding work.
  at::Tensor key = t;
  at::Tensor labels;
  if (options_.num_classes > 0) {
    labels = y.defined() ? y : at::full({x.size(0)}, options_.num_classes, t.options());
    key = t * (options_.num_classes + 1) + labels;
  }
  at::Tensor uniq, inverse;
  std::tie(uniq, inverse, std::ignore) = at::_unique2(key, /*sorted=*/false, /*return_inverse=*/true);
  const bool dedup = uniq.size(0) < key.size(0);
  auto tu = dedup ? (options_.num_classes > 0 ? at::floor_divide(uniq, options_.num_classes + 1) : uniq) : t;
  auto temb = time_fc2(F::silu(time_fc1(timestep_embedding(tu, options_.time_dim).to(x.dtype()))));
  if (options_.num_classes > 0)
    temb = temb + class_emb(dedup ? at::remainder(uniq, options_.num_classes + 1) : labels);
  auto act = F::silu(temb);
  auto h = in_proj(x);
  for (int64_t b = 0; b < options_.blocks; ++b) {
    auto cond = temb_proj[b]->as<torch::nn::Linear>()->forward(act);
    if (dedup) cond = cond.index_select(0, inverse);
    auto u = fc1[b]->as<torch::nn::Linear>()->forward(F::silu(h)) + cond;
    h = h + fc2[b]->as<torch::nn::Linear>()->forward(F::silu(u));
  }
  return out_proj(F::silu(h));
}

nlohmann::json MLPDenoiser::config() const {
  nlohmann::json j = options_;
  j["type"] = "mlp";
  return j;
}

}  // namespace ddpm
