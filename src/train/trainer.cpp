#include "ddpm/train/trainer.h"

#include <torch/nn/utils/clip_grad.h>

#include <cmath>
#include <limits>
#include <mutex>
#include <sstream>

#include "ddpm/compat.h"
#include "ddpm/errors.h"
#include "ddpm/resources.h"

namespace ddpm {
namespace {

double mean_or_nan(const at::Tensor& t) {
  return t.defined() ? t.detach().mean().item<double>() : std::numeric_limits<double>::quiet_NaN();
}

}  // namespace

Trainer::Trainer(std::shared_ptr<Network> net, DiffusionConfig diffusion, TrainConfig config, at::Tensor data,
                 at::Tensor labels, Decoder decoder, at::Device device, std::shared_ptr<Communicator> comm)
    : net_(std::move(net)),
      dcfg_(std::move(diffusion)),
      config_(config),
      diffusion_(dcfg_.make()),
      decoder_(decoder),
      data_(std::move(data)),
      labels_(std::move(labels)),
      num_classes_(net_->num_classes()),
      gen_(compat::make_cpu_generator(config.seed)),
      device_(device),
      comm_(comm && comm->world_size() > 1 ? std::move(comm) : nullptr) {
  config_.validate();
  if (!data_.defined() || data_.size(0) < 1) throw InvalidArgument("the training data set is empty");
  if ((net_->output_factor() == 2) != learns_variance(diffusion_.var_type()))
    throw ConfigMismatch("variance type '" + to_string(dcfg_.var_type) + "' needs a network with " +
                         (learns_variance(diffusion_.var_type()) ? "twice" : "exactly") + " the data's output channels");
  if (num_classes_ > 0 && !labels_.defined())
    throw InvalidArgument("a class-conditional network needs a labelled data set");
  if (labels_.defined() && num_classes_ > 0 && labels_.max().item<int64_t>() >= num_classes_)
    throw InvalidArgument("labels exceed the network's " + std::to_string(num_classes_) + " classes");
  if (device_.is_cpu()) {
    // A step holds the batch's activations and gradients; the run holds weights, EMA, gradients and Adam's two
    // moments (five float copies of the parameters).
    const double need = static_cast<double>(config_.batch) * net_->memory_per_item(true) +
                        20.0 * static_cast<double>(net_->num_parameters());
    require_memory(need >= 1.8e19 ? std::numeric_limits<uint64_t>::max() : static_cast<uint64_t>(need),
                   "a training step with batches of " + std::to_string(config_.batch), "give a smaller batch", "batch");
  }
  timesteps_ = make_timestep_sampler(config_.timestep_sampler, diffusion_.num_timesteps());
  adaptive_timesteps_ = timesteps_->state().defined();
  net_->to(device_);
  for (const auto& kv : net_->named_parameters()) {
    names_.push_back(kv.key());
    params_.push_back(kv.value());
  }
  if (comm_) {
    // Every rank starts from rank 0's weights (buffers too, should a network have any).
    at::NoGradGuard g;
    std::vector<at::Tensor> all(params_.begin(), params_.end());
    for (const auto& b : net_->buffers()) all.push_back(b);
    comm_->broadcast(all, 0);
  }
  ema_ = make_network(net_->config());
  ema_->set_compute_precision(net_->compute_precision());
  ema_->to(device_);
  {
    at::NoGradGuard g;
    auto ema_named = ema_->named_parameters();
    for (size_t i = 0; i < names_.size(); ++i) {
      auto p = ema_named[names_[i]];
      p.copy_(params_[i]);
      p.set_requires_grad(false);
      ema_params_.push_back(p);
    }
  }
  ema_->eval();
  loader_ = std::make_unique<BatchLoader>(data_, num_classes_ > 0 ? labels_ : at::Tensor(), config_.batch, config_.seed,
                                          config_.random_flip, rank(), world_size());
  adam_ = std::make_unique<Adam>(params_, config_.adam_beta1, config_.adam_beta2, config_.adam_eps);
}

StepStats Trainer::step() {
  net_->train();
  {
    // Dropout draws from the default CPU generator: seed it from (seed, step, rank), so that a run, its resumption
    // and each rank's masks depend on nothing else.
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(config_.seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(step_) * 1000003ULL +
                         static_cast<uint64_t>(rank()) + 1);
  }
  // The random numbers of the global batch come from the shared generator; this rank uses rows [lo, lo + B).
  const int64_t B = config_.batch, G = global_batch(), lo = rank() * B;
  auto mine = [&](const at::Tensor& t) { return G == B ? t : t.slice(0, lo, lo + B); };
  auto batch = loader_->get(step_);
  auto x0 = batch.x;
  at::Tensor y;
  if (num_classes_ > 0) {
    y = batch.labels;
    if (config_.label_dropout > 0) {
      // Classifier-free guidance training: drop labels to the null label with probability p_uncond.
      auto drop = at::rand({G}, gen_) < config_.label_dropout;
      y = y.masked_fill(mine(drop), num_classes_);
    }
  }
  auto draw = timesteps_->sample(G, gen_);
  auto noise_shape = x0.sizes().vec();
  noise_shape[0] = G;
  auto noise = mine(at::randn(noise_shape, gen_, x0.options())).to(device_);
  x0 = x0.to(device_);
  if (y.defined()) y = y.to(device_);
  auto t = mine(draw.t).to(device_);
  auto losses = training_losses(diffusion_, as_denoiser(net_), x0, t, y, noise, config_.loss, decoder_);
  auto loss = (losses.loss * mine(draw.weights).to(device_)).mean();

  for (auto& p : params_) p.mutable_grad() = at::Tensor();
  loss.backward();
  if (comm_) {
    std::vector<at::Tensor> grads;
    for (auto& p : params_) grads.push_back(p.grad());
    allreduce_mean(*comm_, grads);
  }
  double gnorm = 0;
  if (config_.grad_clip > 0) {
    gnorm = torch::nn::utils::clip_grad_norm_(params_, config_.grad_clip);
  } else {
    at::NoGradGuard g;
    double s = 0;
    for (auto& p : params_)
      if (p.grad().defined()) s += p.grad().pow(2).sum().item<double>();
    gnorm = std::sqrt(s);
  }
  // A non-finite step changes nothing. The gradient norm is the same on every rank (taken after the allreduce, which
  // spreads any rank's NaN), so all ranks stop together; the loss is checked on its own without ranks.
  const double loss_value = loss.item<double>();
  if (!std::isfinite(gnorm) || (!comm_ && !std::isfinite(loss_value))) {
    auto shown = [](double v) {
      std::ostringstream o;
      if (std::isnan(v)) o << "NaN";
      else o << v;
      return o.str();
    };
    std::ostringstream m;
    m << "training diverged at step " << step_ + 1 << ": the loss is " << shown(loss_value)
      << " and the gradient norm " << shown(gnorm) << "; that step's update was not applied";
    throw TrainingDiverged(m.str());
  }
  if (comm_ && adaptive_timesteps_) {
    // An adaptive sampler must see the losses of the whole global batch, on every rank alike.
    auto all = at::zeros({G}, losses.loss.options().device(at::kCPU));
    all.slice(0, lo, lo + B).copy_(losses.loss.detach());
    comm_->allreduce_sum({all});
    timesteps_->update(draw.t, all);
  } else {
    timesteps_->update(draw.t, losses.loss);
  }
  const double lr =
      config_.warmup > 0 ? config_.lr * std::min(1.0, static_cast<double>(step_ + 1) / config_.warmup) : config_.lr;
  adam_->step(lr);
  ++step_;
  {
    // EMA with the usual warm-up of its decay, so short runs are not dominated by the initial weights.
    at::NoGradGuard g;
    const double n = static_cast<double>(step_);
    const double d = std::min(config_.ema_decay, (1.0 + n) / (10.0 + n));
    for (size_t i = 0; i < params_.size(); ++i) ema_params_[i].mul_(d).add_(params_[i].detach(), 1.0 - d);
  }
  StepStats s;
  s.step = step_;
  s.loss = loss_value;
  s.mse = mean_or_nan(losses.mse);
  s.vb = mean_or_nan(losses.vb);
  if (comm_) {
    // Report the global batch's means.
    auto v = at::tensor(std::vector<double>{s.loss, s.mse, s.vb}, at::TensorOptions().dtype(at::kDouble));
    comm_->allreduce_sum({v});
    v.div_(world_size());
    s.loss = v[0].item<double>();
    s.mse = v[1].item<double>();
    s.vb = v[2].item<double>();
  }
  s.grad_norm = gnorm;
  s.lr = lr;
  return s;
}

TrainState Trainer::state() const {
  TrainState st;
  for (size_t i = 0; i < names_.size(); ++i) {
    st.tensors.emplace_back("ema." + names_[i], ema_params_[i].detach());
    st.tensors.emplace_back("model." + names_[i], params_[i].detach());
    st.tensors.emplace_back("optim.exp_avg." + names_[i], adam_->exp_avg()[i]);
    st.tensors.emplace_back("optim.exp_avg_sq." + names_[i], adam_->exp_avg_sq()[i]);
  }
  st.tensors.emplace_back("rng.train", compat::generator_state(gen_));
  auto ts = timesteps_->state();
  if (ts.defined()) st.tensors.emplace_back("timestep_sampler.state", ts);
  st.meta = {{"network", net_->config()},
             {"diffusion", dcfg_},
             {"train", config_},
             {"step", step_},
             {"optim_step", adam_->steps()},
             {"decoder", to_string(decoder_)}};
  return st;
}

void Trainer::load_state(const TrainState& st) {
  // Compared with defaults filled in: checkpoints from before an option existed name fewer options.
  if (!st.meta.contains("network") || normalized_network_config(st.meta["network"]) != net_->config())
    throw ConfigMismatch("the checkpoint holds a different network (" + st.meta.value("network", nlohmann::json()).dump() +
                         ") than this run (" + net_->config().dump() + ")");
  if (st.meta.at("diffusion").get<DiffusionConfig>() != dcfg_)
    throw ConfigMismatch("the checkpoint's diffusion settings " + st.meta.at("diffusion").dump() +
                         " differ from this run's " + nlohmann::json(dcfg_).dump());
  auto find = [&](const std::string& name) -> const at::Tensor& { return st.at(name); };
  at::NoGradGuard g;
  for (size_t i = 0; i < names_.size(); ++i) {
    auto copy = [&](at::Tensor& dst, const std::string& key) {
      const auto& src = find(key);
      if (!src.sizes().equals(dst.sizes())) throw ConfigMismatch("tensor '" + key + "' has the wrong shape");
      dst.copy_(src);
    };
    copy(params_[i], "model." + names_[i]);
    copy(ema_params_[i], "ema." + names_[i]);
    copy(adam_->exp_avg()[i], "optim.exp_avg." + names_[i]);
    copy(adam_->exp_avg_sq()[i], "optim.exp_avg_sq." + names_[i]);
  }
  compat::set_generator_state(gen_, find("rng.train"));
  auto ts = timesteps_->state();
  if (ts.defined()) timesteps_->load_state(find("timestep_sampler.state"));
  step_ = st.meta.at("step").get<int64_t>();
  adam_->set_steps(st.meta.at("optim_step").get<int64_t>());
}

}  // namespace ddpm
