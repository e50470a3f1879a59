#include "ddpm/train/run.h"

#include <torch/utils.h>

#include <chrono>
#include <filesystem>

#include "ddpm/compat.h"
#include "ddpm/data/images.h"
#include "ddpm/data/points.h"
#include "ddpm/errors.h"
#include "ddpm/io/file.h"
#include "ddpm/models/mlp.h"
#include "ddpm/resources.h"
#include "ddpm/samplers.h"
#include "ddpm/store/checkpoint.h"

namespace ddpm {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string shown(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

/// Throws ConfigMismatch when a given value differs from the stored one.
template <class T>
void refuse_change(const std::string& ckpt, const char* field, const std::optional<T>& given,
                   const nlohmann::json& stored) {
  if (given && nlohmann::json(*given) != stored)
    throw ConfigMismatch("'" + ckpt + "' was trained with " + field + " " + shown(stored) +
                             "; resuming cannot change it",
                         field);
}

DataSource data_source(const RunRequest& r, const std::string& preset_data) {
  DataSource d;
  if (!preset_data.empty()) d.spec = preset_data;
  if (r.data) d.spec = *r.data;
  if (r.data_size) d.size = *r.data_size;
  if (r.data_seed) d.seed = *r.data_seed;
  if (r.labels) d.labels = *r.labels;
  return d;
}

std::shared_ptr<Network> build_network(const RunRequest& r, const TrainingData& data, const UNetOptions& base,
                                       const DiffusionConfig& dcfg, bool conditional) {
  const int64_t out_factor = learns_variance(dcfg.var_type) ? 2 : 1;
  if (data.images) {
    if (r.hidden || r.blocks)
      throw InvalidArgument("hidden and blocks set the MLP; images train a U-Net (channels ...)", "hidden");
    UNetOptions u = base;
    u.in_channels = data.x.size(1);
    u.image_size = data.x.size(2);
    if (r.channels) u.base_channels = *r.channels;
    if (r.channel_mult) u.channel_mult = *r.channel_mult;
    if (r.res_blocks) u.num_res_blocks = *r.res_blocks;
    if (r.attention) u.attention_resolutions = *r.attention;
    if (r.dropout) u.dropout = *r.dropout;
    if (r.groups) u.groups = *r.groups;
    u.learn_sigma = out_factor == 2;
    u.num_classes = conditional ? data.num_classes : 0;
    return std::make_shared<UNet>(u);
  }
  if (r.channels || r.channel_mult || r.res_blocks || r.attention || r.dropout || r.groups)
    throw InvalidArgument("channels, channel_mult, res_blocks, attention and dropout set the U-Net of image data; "
                          "points train an MLP (hidden, blocks)",
                          "channels");
  MLPOptions o;
  o.dim = data.x.size(1);
  o.hidden = r.hidden.value_or(128);
  o.blocks = r.blocks.value_or(3);
  o.out_factor = out_factor;
  o.num_classes = conditional ? data.num_classes : 0;
  return std::make_shared<MLPDenoiser>(o);
}

/// The settings of a new run: the preset's, then the request's; the network built with the training seed.
struct NewRun {
  DataSource source;
  TrainingData data;
  DiffusionConfig diffusion;
  TrainConfig train;
  std::shared_ptr<Network> net;
};

NewRun plan_new_run(const RunRequest& r) {
  std::optional<Preset> preset;
  if (!r.preset.empty()) preset = make_preset(r.preset);
  NewRun n;
  n.source = data_source(r, preset ? preset->data : "");
  const bool conditional = r.conditional || (preset && preset->conditional);
  n.train = preset ? preset->train : run_defaults();
  if (r.steps) n.train.steps = *r.steps;
  if (r.batch) n.train.batch = *r.batch;
  if (r.lr) n.train.lr = *r.lr;
  if (r.warmup) n.train.warmup = *r.warmup;
  if (r.grad_clip) n.train.grad_clip = *r.grad_clip;
  if (r.ema_decay) n.train.ema_decay = *r.ema_decay;
  if (r.seed) n.train.seed = *r.seed;
  if (r.random_flip) n.train.random_flip = *r.random_flip;
  if (r.loss) n.train.loss = *r.loss;
  if (r.timestep_sampler) n.train.timestep_sampler = *r.timestep_sampler;
  n.data = load_training_data(n.source);
  n.diffusion = r.diffusion.over(preset ? preset->diffusion : DiffusionConfig());
  if (conditional) {
    if (n.data.num_classes == 0)
      throw InvalidArgument("conditional training needs labelled data (toy:8gaussians, toy:moons, labels FILE.npy, "
                            "or a labelled image set)");
    n.train.label_dropout = r.label_dropout.value_or(0.1);
  } else if (r.label_dropout) {
    throw InvalidArgument("label_dropout applies to conditional training only", "label_dropout");
  } else {
    n.train.label_dropout = 0.0;
  }
  n.train.validate();
  torch::manual_seed(n.train.seed);  // network initialisation
  n.net = build_network(r, n.data, preset ? preset->unet : UNetOptions(), n.diffusion, conditional);
  return n;
}

}  // namespace

TrainingData load_training_data(const DataSource& source) {
  TrainingData d;
  if (is_image_spec(source.spec)) {
    auto s = load_image_dataset(source.spec);
    const int64_t side = std::max(padded_side(s.images.size(2)), s.images.size(2));
    require_memory(bytes_of(s.images.size(0) * s.images.size(1), static_cast<uint64_t>(side) * side, 2 * sizeof(float)),
                   "the " + std::to_string(s.images.size(0)) + " training images in floating point",
                   "train on a smaller image set", "data");
    d.x = to_model_range(s.images, padded_side(s.images.size(2)));
    d.labels = s.labels;
    d.num_classes = s.num_classes;
    d.images = true;
    d.class_names = s.class_names;
  } else {
    auto p = load_points(source.spec, source.size, source.seed, source.labels);
    d.x = p.x;
    d.labels = p.labels;
    d.num_classes = p.num_classes;
  }
  return d;
}

TrainConfig run_defaults() {
  TrainConfig t;
  t.steps = 4000;
  t.lr = 2e-3;
  return t;
}

Preset make_preset(const std::string& name) {
  Preset p;
  p.train = run_defaults();
  if (name == "fashion-mnist") {
    // A small class-conditional model that trains on 2 CPU cores (about 1.6M parameters).
    p.data = "fashion-mnist";
    p.conditional = true;
    p.unet.in_channels = 1;
    p.unet.base_channels = 32;
    p.unet.channel_mult = {1, 2, 2};
    p.unet.attention_resolutions = {16};
    p.unet.dropout = 0.1;
    p.train.batch = 64;
    p.train.lr = 5e-4;
    p.train.warmup = 500;
    p.train.ema_decay = 0.999;
    p.train.steps = 20000;
    p.train.label_dropout = 0.1;
  } else if (name == "cifar10-ddpm") {
    // DDPM §4 and Appendix B: the 35.7M-parameter model, Adam 2e-4, batch 128, warm-up 5000, EMA 0.9999, flips.
    p.data = "cifar10:cifar-10-batches-bin";
    p.train.batch = 128;
    p.train.lr = 2e-4;
    p.train.warmup = 5000;
    p.train.ema_decay = 0.9999;
    p.train.steps = 800000;
    p.train.random_flip = true;
  } else if (name == "cifar10-improved") {
    // Improved DDPM: cosine, T = 4000, learned_range + hybrid, 3 res blocks, dropout 0.3, lr 1e-4.
    p.data = "cifar10:cifar-10-batches-bin";
    p.unet.num_res_blocks = 3;
    p.unet.dropout = 0.3;
    p.unet.learn_sigma = true;
    p.diffusion.schedule = BetaSchedule::cosine;
    p.diffusion.timesteps = 4000;
    p.diffusion.var_type = VarType::learned_range;
    p.train.loss = LossType::hybrid;
    p.train.batch = 128;
    p.train.lr = 1e-4;
    p.train.ema_decay = 0.9999;
    p.train.steps = 500000;
    p.train.random_flip = true;
  } else {
    throw InvalidArgument("unknown preset '" + name + "' (choose fashion-mnist, cifar10-ddpm or cifar10-improved)");
  }
  return p;
}

nlohmann::json TrainingRun::describe(const RunRequest& r) {
  auto n = plan_new_run(r);
  return {{"network", n.net->config()}, {"parameters", n.net->num_parameters()},
          {"diffusion", n.diffusion},   {"train", n.train},
          {"data", n.source},           {"examples", n.data.x.size(0)},
          {"item_shape", n.data.x[0].sizes().vec()}};
}

std::unique_ptr<TrainingRun> TrainingRun::start(const RunRequest& r, RunCadence cadence,
                                                std::shared_ptr<Communicator> comm) {
  std::unique_ptr<TrainingRun> run(new TrainingRun());
  run->cadence_ = cadence;
  run->comm_ = comm;
  run->out_ = r.out;
  run->ckpt_ = r.out + "/checkpoint.safetensors";
  run->metrics_path_ = r.out + "/metrics.jsonl";
  ensure_directory(r.out);
  run->device_ = at::Device(r.device);
  auto n = plan_new_run(r);
  run->data_ = std::move(n.data);
  const bool conditional = n.net->num_classes() > 0;
  n.net->set_compute_precision(r.precision);
  run->trainer_ = std::make_unique<Trainer>(n.net, n.diffusion, n.train, run->data_.x,
                                            conditional ? run->data_.labels : at::Tensor(),
                                            run->data_.images ? Decoder::discrete : Decoder::continuous,
                                            run->device_, comm);
  run->extra_ = {{"data", n.source}, {"command", r.command}, {"resumed", nlohmann::json::array()}};
  run->open_metrics(true);
  return run;
}

std::unique_ptr<TrainingRun> TrainingRun::resume(const RunRequest& r, RunCadence cadence,
                                                 std::shared_ptr<Communicator> comm) {
  std::unique_ptr<TrainingRun> run(new TrainingRun());
  run->cadence_ = cadence;
  run->comm_ = comm;
  run->out_ = r.out;
  const std::string ckpt = run->ckpt_ = r.out + "/checkpoint.safetensors";
  run->metrics_path_ = r.out + "/metrics.jsonl";
  if (!std::filesystem::exists(ckpt))
    throw IoError("nothing to resume: '" + ckpt + "' does not exist (start a new run instead)");
  // Hyperparameters a resumed run takes from its checkpoint.
  auto stored_by_resume = [&](const char* field, bool given) {
    if (given)
      throw ConfigMismatch(std::string(field) + " is stored in '" + ckpt +
                               "'; resuming continues with it (drop it, or start a new run)",
                           field);
  };
  stored_by_resume("label_dropout", r.label_dropout.has_value());
  stored_by_resume("batch", r.batch.has_value());
  stored_by_resume("warmup", r.warmup.has_value());
  stored_by_resume("grad_clip", r.grad_clip.has_value());
  stored_by_resume("ema_decay", r.ema_decay.has_value());
  stored_by_resume("seed", r.seed.has_value());
  stored_by_resume("random_flip", r.random_flip.has_value());
  auto st = load_train_state(ckpt);
  nlohmann::json resumed = st.meta.value("resumed", nlohmann::json::array());
  resumed.push_back(r.command);
  const auto& net_cfg = st.meta.at("network");
  const DataSource source = st.meta.value("data", nlohmann::json::object()).get<DataSource>();
  const auto stored_net = [&](const char* key) { return net_cfg.value(key, nlohmann::json()); };
  refuse_change(ckpt, "hidden", r.hidden, stored_net("hidden"));
  refuse_change(ckpt, "blocks", r.blocks, stored_net("blocks"));
  refuse_change(ckpt, "channels", r.channels, stored_net("base_channels"));
  refuse_change(ckpt, "channel_mult", r.channel_mult, stored_net("channel_mult"));
  refuse_change(ckpt, "res_blocks", r.res_blocks, stored_net("num_res_blocks"));
  refuse_change(ckpt, "attention", r.attention, stored_net("attention_resolutions"));
  refuse_change(ckpt, "dropout", r.dropout, stored_net("dropout"));
  refuse_change(ckpt, "groups", r.groups, stored_net("groups"));
  refuse_change(ckpt, "data", r.data, nlohmann::json(source.spec));
  refuse_change(ckpt, "data_size", r.data_size, nlohmann::json(source.size));
  refuse_change(ckpt, "data_seed", r.data_seed, nlohmann::json(source.seed));
  refuse_change(ckpt, "labels", r.labels, nlohmann::json(source.labels));
  if (r.conditional && net_cfg.value("num_classes", 0) == 0)
    throw ConfigMismatch("'" + ckpt + "' was trained unconditionally; resuming cannot change it", "conditional");
  if (!r.preset.empty())
    throw ConfigMismatch("a preset applies to new runs; resuming continues '" + ckpt + "' as it was", "preset");
  const auto dcfg = r.diffusion.check_against(diffusion_from_meta(st.meta, ckpt), "'" + ckpt + "'");
  auto tcfg = train_config_from_meta(st.meta);
  refuse_change(ckpt, "loss", r.loss, nlohmann::json(tcfg.loss));
  refuse_change(ckpt, "timestep_sampler", r.timestep_sampler, nlohmann::json(tcfg.timestep_sampler));
  if (r.steps) tcfg.steps = *r.steps;
  if (r.lr) tcfg.lr = *r.lr;  // a lower rate to go on with (after a divergence, or to decay at the end)
  auto net = make_network(net_cfg);
  run->device_ = at::Device(r.device);
  run->data_ = load_training_data(source);
  const auto decoder = parse_decoder(st.meta.value("decoder", std::string("continuous")));
  net->set_compute_precision(r.precision);
  run->trainer_ = std::make_unique<Trainer>(net, dcfg, tcfg, run->data_.x,
                                            net->num_classes() ? run->data_.labels : at::Tensor(), decoder,
                                            run->device_, comm);
  run->trainer_->load_state(st);
  run->extra_ = {{"data", source},
                 {"command", st.meta.value("command", r.command)},
                 {"resumed", resumed}};
  run->open_metrics(false);
  return run;
}

void TrainingRun::open_metrics(bool fresh) {
  start_step_ = trainer_->steps_done();
  started_ = now_s();
  if (!root()) return;
  // A checkpoint write cut short (SIGKILL, power loss) leaves its temporary file beside the intact checkpoint: the
  // run that continues here removes it.
  const std::string partial = std::filesystem::path(ckpt_).filename().string() + ".tmp.";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(out_, ec))
    if (e.path().filename().string().rfind(partial, 0) == 0) std::filesystem::remove(e.path(), ec);
  if (fresh) std::filesystem::remove(metrics_path_);
  metrics_ = std::make_unique<std::ofstream>(metrics_path_, std::ios::app);
  if (!*metrics_) throw IoError("cannot write '" + metrics_path_ + "'");
}

void TrainingRun::save() {
  if (root()) save_checkpoint(ckpt_, trainer_->state(), extra_);
}

bool TrainingRun::agree_to_stop(bool this_rank_asks) {
  if (!comm_ || comm_->world_size() < 2) return this_rank_asks;
  auto f = at::full({1}, this_rank_asks ? 1.0 : 0.0, at::TensorOptions().dtype(at::kDouble));
  comm_->allreduce_sum({f});
  return f.item<double>() > 0;
}

StepStats TrainingRun::step() {
  StepStats s;
  try {
    s = trainer_->step();
  } catch (const TrainingDiverged& e) {
    const bool saved = std::filesystem::exists(ckpt_);
    throw TrainingDiverged(std::string(e.what()) +
                           (saved ? "; '" + ckpt_ + "' still holds the last checkpoint (resume it with a lower learning rate)"
                                  : "; no checkpoint was written yet (start again with a lower learning rate)"));
  }
  const bool done = trainer_->finished();
  if (root() && (s.step % cadence_.log_every == 0 || done)) {
    const double el = now_s() - started_;
    nlohmann::json j = {{"step", s.step}, {"loss", s.loss}, {"grad_norm", s.grad_norm}, {"lr", s.lr},
                        {"it_per_s", el > 0 ? (s.step - start_step_) / el : 0.0}};
    if (!std::isnan(s.mse)) j["mse"] = s.mse;
    if (!std::isnan(s.vb)) j["vb"] = s.vb;
    *metrics_ << j.dump() << "\n" << std::flush;
  }
  if (s.step % cadence_.checkpoint_every == 0 || done) save();
  if (root() && data_.images && cadence_.sample_every > 0 && (s.step % cadence_.sample_every == 0 || done))
    write_grid();
  return s;
}

void TrainingRun::write_grid() {
  const std::string path = out_ + "/samples_" + std::to_string(trainer_->steps_done()) + ".png";
  auto net = trainer_->ema_network();  // in eval mode
  const int64_t classes = net->num_classes();
  const int64_t per = classes > 0 ? 8 : 64;
  at::Tensor y;
  if (classes > 0) y = at::arange(classes, at::TensorOptions().dtype(at::kLong)).repeat_interleave(per).to(device_);
  const int64_t n = classes > 0 ? classes * per : per;
  const auto& dc = trainer_->diffusion_config();
  auto diffusion = dc.respaced(std::min<int64_t>(50, dc.timesteps), "ddim");
  auto g = compat::make_cpu_generator(1234);
  std::vector<int64_t> shape = {n};
  for (int64_t i = 1; i < data_.x.dim(); ++i) shape.push_back(data_.x.size(i));
  SampleOptions so;
  so.clip_denoised = true;
  so.y = y;
  auto x = ddim_sample(diffusion, as_denoiser(net), at::randn(shape, g).to(device_), 0.0, g, so);
  int64_t zoom = cadence_.zoom;
  if (zoom == 0) {
    const int64_t side = std::max(x.size(2), x.size(3));
    zoom = side <= 32 ? 3 : side <= 64 ? 2 : 1;
  }
  save_image_grid(path, x, per, zoom);
}

}  // namespace ddpm
