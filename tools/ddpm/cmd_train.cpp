// ddpm train: fits a denoiser to a data set and writes checkpoints, metrics and a progress display.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "ddpm/errors.h"
#include "ddpm/io/checkpoint.h"
#include "ddpm/io/file.h"
#include "ddpm/models/mlp.h"
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
  bool conditional = false, resume = false;
  std::optional<double> label_dropout;
  std::optional<int64_t> hidden, blocks;
  int64_t checkpoint_every = 1000, log_every = 100;
  DiffusionFlags diffusion;
  TrainConfig train = [] {
    TrainConfig t;
    t.steps = 4000;
    t.lr = 2e-3;
    return t;
  }();
  std::optional<int64_t> steps;
  std::vector<CLI::Option*> fixed_on_resume;  // hyperparameters a resumed run takes from its checkpoint
};

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

void run_train(TrainArgs& a) {
  ensure_directory(a.out);
  const std::string ckpt = a.out + "/checkpoint.safetensors";
  const std::string metrics_path = a.out + "/metrics.jsonl";

  nlohmann::json data_meta = {{"spec", a.data.value_or("toy:8gaussians")},
                               {"size", a.data_size.value_or(50000)},
                               {"seed", a.data_seed.value_or(0)},
                               {"labels", a.labels.value_or("")}};
  std::unique_ptr<Trainer> trainer;
  PointSet data;
  if (a.resume) {
    if (!std::filesystem::exists(ckpt))
      throw IoError("nothing to resume: '" + ckpt + "' does not exist (run without --resume to start)");
    for (auto* opt : a.fixed_on_resume)
      if (opt->count() > 0)
        throw ConfigMismatch(opt->get_name() + " is stored in '" + ckpt +
                             "'; --resume continues with it (drop the flag, or start a new run)");
    auto st = load_train_state(ckpt);
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
    refuse("--data", a.data, stored_data.value("spec", nlohmann::json()));
    refuse("--data-size", a.data_size, stored_data.value("size", nlohmann::json()));
    refuse("--data-seed", a.data_seed, stored_data.value("seed", nlohmann::json()));
    refuse("--labels", a.labels, stored_data.value("labels", nlohmann::json()));
    if (a.conditional != (stored_net.value("num_classes", 0) > 0))
      throw ConfigMismatch("'" + ckpt + "' was trained " + (a.conditional ? "un" : "") +
                           "conditionally; --resume cannot change it (" + (a.conditional ? "drop" : "add") +
                           " --conditional)");
    auto net = make_network(stored_net);
    auto dcfg = a.diffusion.merge_with(DiffusionConfig::from_json(st.meta.at("diffusion")), "'" + ckpt + "'");
    auto tcfg = TrainConfig::from_json(st.meta.at("train"));
    if (a.steps) tcfg.steps = *a.steps;
    data_meta = st.meta.value("data", data_meta);
    data = load_data_spec(data_meta.at("spec"), data_meta.at("size"), data_meta.at("seed"),
                          data_meta.value("labels", std::string()));
    const auto decoder = parse_decoder(st.meta.value("decoder", std::string("continuous")));
    trainer = std::make_unique<Trainer>(net, dcfg, tcfg, data.x, net->num_classes() ? data.labels : at::Tensor(),
                                        decoder);
    trainer->load_state(st);
  } else {
    data = load_data_spec(data_meta.at("spec"), data_meta.at("size"), data_meta.at("seed"), data_meta.at("labels"));
    auto dcfg = a.diffusion.resolve();
    if (a.steps) a.train.steps = *a.steps;
    MLPOptions o;
    o.dim = data.dim();
    o.hidden = a.hidden.value_or(128);
    o.blocks = a.blocks.value_or(3);
    o.out_factor = learns_variance(parse_var_type(dcfg.var_type)) ? 2 : 1;
    if (a.conditional) {
      if (data.num_classes == 0)
        throw InvalidArgument("--conditional needs labelled data (toy:8gaussians, toy:moons, or --labels FILE.npy)");
      o.num_classes = data.num_classes;
      a.train.label_dropout = a.label_dropout.value_or(0.1);
    } else if (a.label_dropout) {
      throw InvalidArgument("--label-dropout applies to --conditional training only");
    }
    torch::manual_seed(a.train.seed);  // network initialisation
    auto net = std::make_shared<MLPDenoiser>(o);
    trainer = std::make_unique<Trainer>(net, dcfg, a.train, data.x, a.conditional ? data.labels : at::Tensor(),
                                        Decoder::continuous);
    std::filesystem::remove(metrics_path);
  }

  const nlohmann::json extra = {{"data", data_meta}, {"command", command_line()}};
  auto save = [&] { save_checkpoint(ckpt, trainer->state(), extra); };
  std::ofstream metrics(metrics_path, std::ios::app);
  if (!metrics) throw IoError("cannot write '" + metrics_path + "'");

  g_interrupted = false;
  auto old_int = std::signal(SIGINT, on_signal);
  auto old_term = std::signal(SIGTERM, on_signal);
  const int64_t start = trainer->steps_done(), total = trainer->config().steps;
  if (!global_options().quiet)
    std::cerr << (a.resume ? "resuming at step " + std::to_string(start) + " of " : "training ") << total
              << " steps: " << trainer->network()->num_parameters() << " parameters, " << data.size()
              << " points, batch " << trainer->config().batch << ", out " << a.out << "\n";
  Progress bar("train", total - start);
  auto t0 = std::chrono::steady_clock::now();
  double loss_avg = NAN;
  while (!trainer->finished()) {
    if (g_interrupted) {
      save();
      std::signal(SIGINT, old_int);
      std::signal(SIGTERM, old_term);
      throw Error("interrupted at step " + std::to_string(trainer->steps_done()) + "; checkpoint saved to '" + ckpt +
                  "' (continue with --resume)");
    }
    auto s = trainer->step();
    loss_avg = std::isnan(loss_avg) ? s.loss : 0.98 * loss_avg + 0.02 * s.loss;
    bar.update(s.step - start, "loss " + fmt(loss_avg));
    if (s.step % a.log_every == 0 || trainer->finished()) {
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      nlohmann::json j = {{"step", s.step}, {"loss", s.loss}, {"grad_norm", s.grad_norm}, {"lr", s.lr},
                          {"it_per_s", el > 0 ? (s.step - start) / el : 0.0}};
      if (!std::isnan(s.mse)) j["mse"] = s.mse;
      if (!std::isnan(s.vb)) j["vb"] = s.vb;
      metrics << j.dump() << "\n" << std::flush;
    }
    if (s.step % a.checkpoint_every == 0 || trainer->finished()) save();
  }
  bar.finish("loss " + fmt(loss_avg));
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  if (!global_options().quiet) std::cerr << "checkpoint: " << ckpt << "\n";
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
  a->fixed_on_resume = {
      c->add_option("--batch", a->train.batch, "batch size")->capture_default_str(),
      c->add_option("--lr", a->train.lr, "Adam learning rate")->capture_default_str(),
      c->add_option("--warmup", a->train.warmup, "linear learning-rate warm-up steps")->capture_default_str(),
      c->add_option("--grad-clip", a->train.grad_clip, "gradient-norm clip (0 = off)")->capture_default_str(),
      c->add_option("--ema-decay", a->train.ema_decay, "EMA decay of the weights")->capture_default_str(),
      c->add_option("--seed", a->train.seed, "seed of initialisation, batches and noise")->capture_default_str(),
  };
  c->add_option("--hidden", a->hidden, "MLP width [128]");
  c->add_option("--blocks", a->blocks, "MLP residual blocks [3]");
  c->add_option("--out", a->out, "output directory (checkpoint.safetensors, metrics.jsonl)")->capture_default_str();
  c->add_flag("--resume", a->resume, "continue from OUT/checkpoint.safetensors (--steps may extend the run)");
  c->add_option("--checkpoint-every", a->checkpoint_every, "steps between checkpoints")->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--log-every", a->log_every, "steps between metrics lines")->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->callback([a] { run_train(*a); });
}

}  // namespace ddpm::cli
