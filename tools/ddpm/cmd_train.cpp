// ddpm train: fits a denoiser to a data set and writes checkpoints, metrics and a progress display.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "commands.h"
#include "common.h"
#include "ddpm/errors.h"
#include "ddpm/store/checkpoint.h"
#include "ddpm/io/file.h"
#include "ddpm/compat.h"
#include "ddpm/data/images.h"
#include "ddpm/models/mlp.h"
#include "ddpm/models/unet.h"
#include "ddpm/data/points.h"
#include "ddpm/samplers.h"
#include "ddpm/train/distributed.h"
#include "ddpm/train/trainer.h"

#include <torch/utils.h>

namespace ddpm::cli {
namespace {

std::atomic<bool> g_interrupted{false};
void on_signal(int) { g_interrupted = true; }

struct TrainArgs {
  std::optional<std::string> data, labels;
  std::string out = "runs/toy";
  std::optional<int64_t> data_size;
  std::optional<uint64_t> data_seed;
  bool conditional = false, resume = false, describe = false;
  std::optional<double> label_dropout;
  std::optional<int64_t> hidden, blocks;                       // MLP
  std::optional<int64_t> channels, res_blocks, groups;         // U-Net
  std::optional<std::vector<int64_t>> channel_mult, attention;
  std::optional<double> dropout;
  std::string preset, device = "cpu";
  int64_t sample_every = 0;
  int64_t checkpoint_every = 1000, log_every = 100;
  double dist_timeout = 300;
  DiffusionFlags diffusion;
  TrainConfig train = [] {
    TrainConfig t;
    t.steps = 4000;
    t.lr = 2e-3;
    return t;
  }();
  std::optional<int64_t> steps;
  std::vector<CLI::Option*> fixed_on_resume;  // hyperparameters a resumed run takes from its checkpoint
  std::map<std::string, CLI::Option*> train_opts;  // to tell a preset's value from one the user gave
};

/// What a run trains on: 2-D (or N-D) points, or images scaled to [-1, 1].
struct TrainData {
  at::Tensor x, labels;
  int64_t num_classes = 0;
  bool images = false;
  std::vector<std::string> class_names;
};

TrainData load_training_data(const nlohmann::json& meta) {
  TrainData d;
  const std::string spec = meta.at("spec");
  if (is_image_spec(spec)) {
    auto s = load_image_dataset(spec);
    d.x = to_model_range(s.images, padded_side(s.images.size(2)));
    d.labels = s.labels;
    d.num_classes = s.num_classes;
    d.images = true;
    d.class_names = s.class_names;
  } else {
    auto p = load_points(spec, meta.at("size"), meta.at("seed"), meta.value("labels", std::string()));
    d.x = p.x;
    d.labels = p.labels;
    d.num_classes = p.num_classes;
  }
  return d;
}

struct Preset {
  UNetOptions unet;
  DiffusionConfig diffusion;
  TrainConfig train;
  std::string data;
  bool conditional = false;
};

Preset make_preset(const std::string& name) {
  Preset p;
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

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

void run_train(TrainArgs& a) {
  // Data-parallel when launched with WORLD_SIZE > 1 (ddpm launch, torchrun, Slurm): join the others first, so a
  // bad rendezvous fails before any work.
  const DistributedEnv env = distributed_env_from_environment();
  std::shared_ptr<Communicator> comm;
  if (env.enabled()) {
    if (a.describe) throw InvalidArgument("--describe runs in one process; start it without WORLD_SIZE");
    CommunicatorOptions co;
    co.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.dist_timeout * 1000));
    comm = connect_communicator(env, co);
  }
  const bool root = env.rank == 0;
  ensure_directory(a.out);
  const std::string ckpt = a.out + "/checkpoint.safetensors";
  const std::string metrics_path = a.out + "/metrics.jsonl";

  nlohmann::json data_meta = {{"spec", a.data.value_or("toy:8gaussians")},
                               {"size", a.data_size.value_or(50000)},
                               {"seed", a.data_seed.value_or(0)},
                               {"labels", a.labels.value_or("")}};
  std::unique_ptr<Trainer> trainer;
  // The command that started the run stays in the checkpoint; each --resume is appended to "resumed".
  std::string first_command = command_line();
  nlohmann::json resumed = nlohmann::json::array();
  TrainData data;
  at::Device device = parse_device(a.device);
  // One GPU per process on a node: rank-local device unless the user named one.
  if (env.enabled() && device.is_cuda() && !device.has_index()) device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  if (a.resume) {
    if (!std::filesystem::exists(ckpt))
      throw IoError("nothing to resume: '" + ckpt + "' does not exist (run without --resume to start)");
    for (auto* opt : a.fixed_on_resume)
      if (opt->count() > 0)
        throw ConfigMismatch(opt->get_name() + " is stored in '" + ckpt +
                             "'; --resume continues with it (drop the flag, or start a new run)");
    auto st = load_train_state(ckpt);
    first_command = st.meta.value("command", first_command);
    resumed = st.meta.value("resumed", nlohmann::json::array());
    resumed.push_back(command_line());
    // Settings that define the run come from the checkpoint; a flag that contradicts them is refused.
    const auto& stored_net = st.meta.at("network");
    const auto stored_data = st.meta.value("data", data_meta);
    auto refuse = [&](const char* flag, const auto& given, const nlohmann::json& stored) {
      if (given && nlohmann::json(*given) != stored)
        throw ConfigMismatch("'" + ckpt + "' was trained with " + flag + " " +
                             (stored.is_string() ? stored.get<std::string>() : stored.dump()) +
                             "; --resume cannot change it (drop the flag)");
    };
    refuse("--hidden", a.hidden, stored_net.value("hidden", nlohmann::json()));
    refuse("--blocks", a.blocks, stored_net.value("blocks", nlohmann::json()));
    refuse("--channels", a.channels, stored_net.value("base_channels", nlohmann::json()));
    refuse("--channel-mult", a.channel_mult, stored_net.value("channel_mult", nlohmann::json()));
    refuse("--res-blocks", a.res_blocks, stored_net.value("num_res_blocks", nlohmann::json()));
    refuse("--attention", a.attention, stored_net.value("attention_resolutions", nlohmann::json()));
    refuse("--dropout", a.dropout, stored_net.value("dropout", nlohmann::json()));
    refuse("--groups", a.groups, stored_net.value("groups", nlohmann::json()));
    refuse("--data", a.data, stored_data.value("spec", nlohmann::json()));
    refuse("--data-size", a.data_size, stored_data.value("size", nlohmann::json()));
    refuse("--data-seed", a.data_seed, stored_data.value("seed", nlohmann::json()));
    refuse("--labels", a.labels, stored_data.value("labels", nlohmann::json()));
    if (a.conditional && stored_net.value("num_classes", 0) == 0)
      throw ConfigMismatch("'" + ckpt + "' was trained unconditionally; --resume cannot change it (drop --conditional)");
    if (!a.preset.empty()) throw ConfigMismatch("--preset applies to new runs; --resume continues '" + ckpt + "' as it was");
    auto net = make_network(stored_net);
    auto dcfg = a.diffusion.overrides().check_against(diffusion_from_meta(st.meta, ckpt), "'" + ckpt + "'");
    auto tcfg = train_config_from_meta(st.meta);
    TrainConfig asked = tcfg;
    a.diffusion.apply_training(asked);
    if (asked.loss != tcfg.loss)
      throw ConfigMismatch("'" + ckpt + "' was trained with loss " + to_string(tcfg.loss) +
                           "; it cannot be used with loss " + to_string(asked.loss), "loss");
    if (asked.timestep_sampler != tcfg.timestep_sampler)
      throw ConfigMismatch("'" + ckpt + "' was trained with timestep_sampler " + tcfg.timestep_sampler +
                           "; it cannot be used with timestep_sampler " + asked.timestep_sampler, "timestep_sampler");
    if (a.steps) tcfg.steps = *a.steps;
    data_meta = st.meta.value("data", data_meta);
    data = load_training_data(data_meta);
    const auto decoder = parse_decoder(st.meta.value("decoder", std::string("continuous")));
    trainer = std::make_unique<Trainer>(net, dcfg, tcfg, data.x, net->num_classes() ? data.labels : at::Tensor(),
                                        decoder, device, comm);
    trainer->load_state(st);
  } else {
    std::optional<Preset> preset;
    DiffusionConfig base_diffusion;
    if (!a.preset.empty()) {
      preset = make_preset(a.preset);
      base_diffusion = preset->diffusion;
      if (!a.data) data_meta["spec"] = preset->data;
      if (preset->conditional) a.conditional = true;
      // A preset supplies every training value the user did not give.
      const TrainConfig& pt = preset->train;
      auto take = [&](const char* flag, auto& field, const auto& value) {
        if (a.train_opts.at(flag)->count() == 0) field = value;
      };
      take("--batch", a.train.batch, pt.batch);
      take("--lr", a.train.lr, pt.lr);
      take("--warmup", a.train.warmup, pt.warmup);
      take("--grad-clip", a.train.grad_clip, pt.grad_clip);
      take("--ema-decay", a.train.ema_decay, pt.ema_decay);
      take("--random-flip", a.train.random_flip, pt.random_flip);
      if (!a.steps) a.train.steps = pt.steps;
      a.train.loss = pt.loss;
      if (!a.label_dropout && preset->conditional) a.label_dropout = pt.label_dropout;
    }
    data = load_training_data(data_meta);
    auto dcfg = a.diffusion.overrides().over(base_diffusion);
    a.diffusion.apply_training(a.train);
    if (a.steps) a.train.steps = *a.steps;
    const int64_t out_factor = learns_variance(dcfg.var_type) ? 2 : 1;
    if (a.conditional) {
      if (data.num_classes == 0)
        throw InvalidArgument("--conditional needs labelled data (toy:8gaussians, toy:moons, --labels FILE.npy, or a "
                              "labelled image set)");
      a.train.label_dropout = a.label_dropout.value_or(0.1);
    } else if (a.label_dropout) {
      throw InvalidArgument("--label-dropout applies to --conditional training only");
    }
    torch::manual_seed(a.train.seed);  // network initialisation
    std::shared_ptr<Network> net;
    if (data.images) {
      if (a.hidden || a.blocks) throw InvalidArgument("--hidden and --blocks set the MLP; images train a U-Net (--channels ...)");
      UNetOptions u = preset ? preset->unet : UNetOptions();
      u.in_channels = data.x.size(1);
      u.image_size = data.x.size(2);
      if (a.channels) u.base_channels = *a.channels;
      if (a.channel_mult) u.channel_mult = *a.channel_mult;
      if (a.res_blocks) u.num_res_blocks = *a.res_blocks;
      if (a.attention) u.attention_resolutions = *a.attention;
      if (a.dropout) u.dropout = *a.dropout;
      if (a.groups) u.groups = *a.groups;
      u.learn_sigma = out_factor == 2;
      u.num_classes = a.conditional ? data.num_classes : 0;
      net = std::make_shared<UNet>(u);
    } else {
      if (a.channels || a.channel_mult || a.res_blocks || a.attention || a.dropout || a.groups)
        throw InvalidArgument("--channels, --channel-mult, --res-blocks, --attention and --dropout set the U-Net of "
                              "image data; points train an MLP (--hidden, --blocks)");
      MLPOptions o;
      o.dim = data.x.size(1);
      o.hidden = a.hidden.value_or(128);
      o.blocks = a.blocks.value_or(3);
      o.out_factor = out_factor;
      o.num_classes = a.conditional ? data.num_classes : 0;
      net = std::make_shared<MLPDenoiser>(o);
    }
    if (a.describe) {
      // What this command would train, without training it.
      nlohmann::json card = {{"network", net->config()},        {"parameters", net->num_parameters()},
                             {"diffusion", dcfg},               {"train", a.train},
                             {"data", data_meta},               {"examples", data.x.size(0)},
                             {"item_shape", data.x[0].sizes().vec()}};
      std::cout << card.dump() << "\n";
      return;
    }
    trainer = std::make_unique<Trainer>(net, dcfg, a.train, data.x, a.conditional ? data.labels : at::Tensor(),
                                        data.images ? Decoder::discrete : Decoder::continuous, device, comm);
    if (root) std::filesystem::remove(metrics_path);
  }

  const nlohmann::json extra = {{"data", data_meta}, {"command", first_command}, {"resumed", resumed}};
  // Every rank holds the same weights; rank 0 alone writes checkpoints, metrics and sample grids.
  auto save = [&] {
    if (root) save_checkpoint(ckpt, trainer->state(), extra);
  };
  std::ofstream metrics;
  if (root) {
    metrics.open(metrics_path, std::ios::app);
    if (!metrics) throw IoError("cannot write '" + metrics_path + "'");
  }

  g_interrupted = false;
  auto old_int = std::signal(SIGINT, on_signal);
  auto old_term = std::signal(SIGTERM, on_signal);
  const int64_t start = trainer->steps_done(), total = trainer->config().steps;
  const bool show = root && !global_options().quiet;
  const int64_t batch = trainer->global_batch();
  if (show)
    std::cerr << (a.resume ? "resuming at step " + std::to_string(start) + " of " : "training ") << total
              << " steps: " << trainer->network()->num_parameters() << " parameters, " << data.x.size(0)
              << (data.images ? " images, batch " : " points, batch ") << batch
              << (env.enabled() ? " (" + std::to_string(trainer->config().batch) + " on each of " +
                                      std::to_string(env.world_size) + " processes)"
                                : std::string())
              << ", out " << a.out << "\n";
  auto write_grid = [&] {
    const std::string path = a.out + "/samples_" + std::to_string(trainer->steps_done()) + ".png";
    auto net = trainer->ema_network();  // in eval mode
    const int64_t classes = net->num_classes();
    const int64_t per = classes > 0 ? 8 : 64;
    at::Tensor y;
    if (classes > 0) y = at::arange(classes, at::TensorOptions().dtype(at::kLong)).repeat_interleave(per).to(device);
    const int64_t n = classes > 0 ? classes * per : per;
    const auto& dc = trainer->diffusion_config();
    auto diffusion = dc.respaced(std::min<int64_t>(50, dc.timesteps), "ddim");
    auto g = compat::make_cpu_generator(1234);
    std::vector<int64_t> shape = {n};
    for (int64_t i = 1; i < data.x.dim(); ++i) shape.push_back(data.x.size(i));
    SampleOptions so;
    so.clip_denoised = true;
    so.y = y;
    auto x = ddim_sample(diffusion, as_denoiser(net), at::randn(shape, g).to(device), 0.0, g, so);
    save_grid(path, x, per);
  };
  Progress bar("train", total - start, show);
  auto t0 = std::chrono::steady_clock::now();
  double loss_avg = NAN;
  // A signal to any rank stops every rank at the same step.
  auto stop_requested = [&] {
    if (!comm) return static_cast<bool>(g_interrupted);
    auto f = at::full({1}, g_interrupted ? 1.0 : 0.0, at::TensorOptions().dtype(at::kDouble));
    comm->allreduce_sum({f});
    return f.item<double>() > 0;
  };
  auto lost_contact = [&](const DistributedError& e) {
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
    return DistributedError(std::string(e.what()) + "; the last checkpoint is '" + ckpt +
                            "' (continue with --resume)");
  };
  while (!trainer->finished()) {
    bool stop = false;
    try {
      stop = stop_requested();
    } catch (const DistributedError& e) {
      throw lost_contact(e);
    }
    if (stop) {
      save();
      std::signal(SIGINT, old_int);
      std::signal(SIGTERM, old_term);
      if (!root) return;  // rank 0 reports it
      throw Error("interrupted at step " + std::to_string(trainer->steps_done()) + "; checkpoint saved to '" + ckpt +
                  "' (continue with --resume)");
    }
    StepStats s;
    try {
      s = trainer->step();
    } catch (const DistributedError& e) {
      throw lost_contact(e);
    }
    loss_avg = std::isnan(loss_avg) ? s.loss : 0.98 * loss_avg + 0.02 * s.loss;
    const double el_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    bar.update(s.step - start, "loss " + fmt(loss_avg) +
                                   (data.images ? "  " + fmt((s.step - start) * batch / std::max(el_s, 1e-9)) + " img/s" : ""));
    if (root && (s.step % a.log_every == 0 || trainer->finished())) {
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      nlohmann::json j = {{"step", s.step}, {"loss", s.loss}, {"grad_norm", s.grad_norm}, {"lr", s.lr},
                          {"it_per_s", el > 0 ? (s.step - start) / el : 0.0}};
      if (!std::isnan(s.mse)) j["mse"] = s.mse;
      if (!std::isnan(s.vb)) j["vb"] = s.vb;
      metrics << j.dump() << "\n" << std::flush;
    }
    if (s.step % a.checkpoint_every == 0 || trainer->finished()) save();
    if (root && data.images && a.sample_every > 0 && (s.step % a.sample_every == 0 || trainer->finished())) write_grid();
  }
  bar.finish("loss " + fmt(loss_avg));
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  if (show) std::cerr << "checkpoint: " << ckpt << "\n";
}

}  // namespace

void register_train(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  auto* c = app.add_subcommand("train", "train a denoising diffusion model on a data set");
  c->add_option("--data", a->data,
                "toy:NAME (8gaussians, swissroll, moons, checkerboard, gaussian) or FILE.npy (N×D) [toy:8gaussians]");
  c->add_option("--labels", a->labels, "labels .npy (N integers) for FILE.npy data");
  c->add_option("--data-size", a->data_size, "points drawn from a toy set [50000]");
  c->add_option("--data-seed", a->data_seed, "seed of the toy set [0]");
  c->add_flag("--conditional", a->conditional, "train class-conditionally on the data's labels (for guidance)");
  a->fixed_on_resume.push_back(
      c->add_option("--label-dropout", a->label_dropout, "probability of the null label when conditional [0.1]"));
  a->diffusion.add(c, true);
  c->add_option("--steps", a->steps, "optimisation steps [4000]");
  a->train_opts = {
      {"--batch", c->add_option("--batch", a->train.batch, "batch size")->capture_default_str()},
      {"--lr", c->add_option("--lr", a->train.lr, "Adam learning rate")->capture_default_str()},
      {"--warmup", c->add_option("--warmup", a->train.warmup, "linear learning-rate warm-up steps")->capture_default_str()},
      {"--grad-clip", c->add_option("--grad-clip", a->train.grad_clip, "gradient-norm clip (0 = off)")->capture_default_str()},
      {"--ema-decay", c->add_option("--ema-decay", a->train.ema_decay, "EMA decay of the weights")->capture_default_str()},
      {"--seed", c->add_option("--seed", a->train.seed, "seed of initialisation, batches and noise")->capture_default_str()},
      {"--random-flip", c->add_flag("--random-flip", a->train.random_flip, "flip images horizontally at random")},
  };
  for (auto& kv : a->train_opts) a->fixed_on_resume.push_back(kv.second);
  c->add_option("--preset", a->preset,
                "fashion-mnist (small class-conditional U-Net), cifar10-ddpm (the DDPM paper), cifar10-improved; "
                "flags override its values");
  c->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  c->add_option("--channels", a->channels, "U-Net base channels [128; preset fashion-mnist: 32]");
  c->add_option("--channel-mult", a->channel_mult, "U-Net channel multipliers per level [1,2,2,2]")->delimiter(',');
  c->add_option("--res-blocks", a->res_blocks, "U-Net residual blocks per level [2]");
  c->add_option("--attention", a->attention, "resolutions with self-attention [16]")->delimiter(',');
  c->add_option("--dropout", a->dropout, "U-Net dropout [0.1]");
  c->add_option("--groups", a->groups, "U-Net GroupNorm groups; must divide every channel count [32]");
  c->add_option("--sample-every", a->sample_every, "write a sample grid PNG (EMA, DDIM 50) every N steps (images)");
  c->add_option("--hidden", a->hidden, "MLP width [128]");
  c->add_option("--blocks", a->blocks, "MLP residual blocks [3]");
  c->add_option("--out", a->out, "output directory (checkpoint.safetensors, metrics.jsonl)")->capture_default_str();
  c->add_flag("--describe", a->describe, "print what would be trained (network, parameter count, settings) as JSON and stop");
  c->add_flag("--resume", a->resume, "continue from OUT/checkpoint.safetensors (--steps may extend the run)");
  c->add_option("--checkpoint-every", a->checkpoint_every, "steps between checkpoints")->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--log-every", a->log_every, "steps between metrics lines")->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--dist-timeout", a->dist_timeout,
                "data-parallel runs (WORLD_SIZE > 1): seconds to wait for the other processes at start-up and in "
                "each collective before stopping with an error")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->footer("Data-parallel: run it under `ddpm launch --nproc N -- train ...`, torchrun, or any launcher that sets "
            "RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; --batch is per process.");
  c->callback([a] { run_train(*a); });
}

}  // namespace ddpm::cli
