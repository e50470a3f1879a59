// ddpm train: binds the flags to the library's TrainingRun, handles signals and draws the progress.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "ddpm/errors.h"
#include "ddpm/names.h"
#include "ddpm/train/distributed.h"
#include "ddpm/train/run.h"

namespace ddpm::cli {
namespace {

std::atomic<bool> g_interrupted{false};
void on_signal(int) { g_interrupted = true; }

struct TrainArgs {
  RunRequest request;
  DiffusionFlags diffusion;
  RunCadence cadence;
  bool describe = false, random_flip = false;
  CLI::Option* random_flip_opt = nullptr;
  double dist_timeout = 300;
};

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

/// Restores the previous signal handlers when the run ends, however it ends.
struct SignalGuard {
  void (*old_int)(int), (*old_term)(int);
  SignalGuard() : old_int(std::signal(SIGINT, on_signal)), old_term(std::signal(SIGTERM, on_signal)) {
    g_interrupted = false;
  }
  ~SignalGuard() {
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
  }
};

void run_train(TrainArgs& a) {
  RunRequest r = a.request;
  r.diffusion = a.diffusion.overrides();
  if (a.diffusion.loss) r.loss = parse_name<LossType>(*a.diffusion.loss);
  if (a.diffusion.timestep_sampler) r.timestep_sampler = *a.diffusion.timestep_sampler;
  if (a.random_flip_opt->count() > 0) r.random_flip = a.random_flip;
  r.command = command_line();
  a.cadence.zoom = global_options().zoom;
  // Data-parallel when launched with WORLD_SIZE > 1 (ddpm launch, torchrun, Slurm): join the others first, so a
  // bad rendezvous fails before any work.
  const DistributedEnv env = distributed_env_from_environment();
  std::shared_ptr<Communicator> comm;
  if (env.enabled()) {
    if (a.describe) throw InvalidArgument("--describe runs in one process; start it without WORLD_SIZE");
    CommunicatorOptions co;
    co.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.dist_timeout * 1000));
    comm = connect_communicator(env, co);
    // One GPU per process on a node: rank-local device unless the user named one.
    if (r.device == "cuda") r.device = "cuda:" + std::to_string(env.local_rank);
  }
  parse_device(r.device);
  const bool auto_precision = global_options().precision == "auto";
  r.precision = auto_precision ? ComputePrecision::fp32 : parse_name<ComputePrecision>(global_options().precision);
  if (a.describe) {
    std::cout << TrainingRun::describe(r).dump() << "\n";
    return;
  }
  auto run = r.resume_requested ? TrainingRun::resume(r, a.cadence, comm) : TrainingRun::start(r, a.cadence, comm);
  const Trainer& tr = run->trainer();
  const std::string& ckpt = run->checkpoint_path();
  const bool images = run->data().images;
  const int64_t start = tr.steps_done(), total = tr.config().steps, batch = tr.global_batch();
  const bool show = run->root() && !global_options().quiet;
  if (auto_precision) {
    // Measured at the training batch on each process; the EMA copy (for sample grids) follows.
    const auto timing = choose_compute_precision(*tr.network(), std::min<int64_t>(tr.config().batch, 16));
    tr.ema_network()->set_compute_precision(timing.chosen);
    if (run->root()) report_precision_choice(timing);
  }
  if (show)
    std::cerr << (r.resume_requested ? "resuming at step " + std::to_string(start) + " of " : "training ") << total
              << " steps: " << tr.network()->num_parameters() << " parameters, " << run->data().x.size(0)
              << (images ? " images, batch " : " points, batch ") << batch
              << (env.enabled() ? " (" + std::to_string(tr.config().batch) + " on each of " +
                                      std::to_string(env.world_size) + " processes)"
                                : std::string())
              << ", out " << r.out << "\n";
  SignalGuard signals;
  auto lost_contact = [&](const DistributedError& e) {
    return DistributedError(std::string(e.what()) + "; the last checkpoint is '" + ckpt + "' (continue with --resume)");
  };
  Progress bar("train", total - start, show);
  auto t0 = std::chrono::steady_clock::now();
  double loss_avg = NAN;
  while (!run->finished()) {
    bool stop = false;
    try {
      stop = run->agree_to_stop(g_interrupted);  // a signal to any rank stops every rank at the same step
    } catch (const DistributedError& e) {
      throw lost_contact(e);
    }
    if (stop) {
      run->save();
      if (!run->root()) return;  // rank 0 reports it
      throw Error("interrupted at step " + std::to_string(tr.steps_done()) + "; checkpoint saved to '" + ckpt +
                  "' (continue with --resume)");
    }
    StepStats s;
    try {
      s = run->step();
    } catch (const DistributedError& e) {
      throw lost_contact(e);
    }
    loss_avg = std::isnan(loss_avg) ? s.loss : 0.98 * loss_avg + 0.02 * s.loss;
    const double el_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    bar.update(s.step - start, "loss " + fmt(loss_avg) +
                                   (images ? "  " + fmt((s.step - start) * batch / std::max(el_s, 1e-9)) + " img/s" : ""));
  }
  bar.finish("loss " + fmt(loss_avg));
  if (show) std::cerr << "checkpoint: " << ckpt << "\n";
}

}  // namespace

void register_train(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  RunRequest& r = a->request;
  const TrainConfig d = run_defaults();
  auto* c = app.add_subcommand("train", "train a denoising diffusion model on a data set");
  c->add_option("--data", r.data,
                "toy:NAME (8gaussians, swissroll, moons, checkerboard, gaussian), FILE.npy (N×D), or images: "
                "fashion-mnist, cifar10:DIR, folder:DIR [toy:8gaussians]");
  c->add_option("--labels", r.labels, "labels .npy (N integers) for FILE.npy data");
  c->add_option("--data-size", r.data_size, "points drawn from a toy set [50000]");
  c->add_option("--data-seed", r.data_seed, "seed of the toy set [0]");
  c->add_flag("--conditional", r.conditional, "train class-conditionally on the data's labels (for guidance)");
  c->add_option("--label-dropout", r.label_dropout, "probability of the null label when conditional [0.1]");
  a->diffusion.add(c, true);
  c->add_option("--steps", r.steps, "optimisation steps [" + std::to_string(d.steps) + "]");
  c->add_option("--batch", r.batch, "batch size [" + std::to_string(d.batch) + "]");
  c->add_option("--lr", r.lr, "Adam learning rate [" + fmt(d.lr) + "]; with --resume, the rate to go on with (a decay, or a lower one after a divergence)");
  c->add_option("--warmup", r.warmup, "linear learning-rate warm-up steps [0]");
  c->add_option("--grad-clip", r.grad_clip, "gradient-norm clip (0 = off) [" + fmt(d.grad_clip) + "]");
  c->add_option("--ema-decay", r.ema_decay, "EMA decay of the weights [" + fmt(d.ema_decay) + "]");
  c->add_option("--seed", r.seed, "seed of initialisation, batches and noise [0]");
  a->random_flip_opt = c->add_flag("--random-flip", a->random_flip, "flip images horizontally at random");
  c->add_option("--preset", r.preset,
                "fashion-mnist (small class-conditional U-Net), cifar10-ddpm (the DDPM paper), cifar10-improved; "
                "flags override its values");
  c->add_option("--device", r.device, "cpu or cuda")->capture_default_str();
  c->add_option("--channels", r.channels, "U-Net base channels [128; preset fashion-mnist: 32]");
  c->add_option("--channel-mult", r.channel_mult, "U-Net channel multipliers per level [1,2,2,2]")->delimiter(',');
  c->add_option("--res-blocks", r.res_blocks, "U-Net residual blocks per level [2]");
  c->add_option("--attention", r.attention, "resolutions with self-attention [16]")->delimiter(',');
  c->add_option("--dropout", r.dropout, "U-Net dropout [0.1]");
  c->add_option("--groups", r.groups, "U-Net GroupNorm groups; must divide every channel count [32]");
  c->add_option("--sample-every", a->cadence.sample_every, "write a sample grid PNG (EMA, DDIM 50) every N steps (images)");
  c->add_option("--hidden", r.hidden, "MLP width [128]");
  c->add_option("--blocks", r.blocks, "MLP residual blocks [3]");
  c->add_option("--out", r.out, "output directory (checkpoint.safetensors, metrics.jsonl)")->capture_default_str();
  c->add_flag("--describe", a->describe, "print what would be trained (network, parameter count, settings) as JSON and stop");
  c->add_flag("--resume", r.resume_requested, "continue from OUT/checkpoint.safetensors (--steps may extend the run)");
  c->add_option("--checkpoint-every", a->cadence.checkpoint_every, "steps between checkpoints")->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--log-every", a->cadence.log_every, "steps between metrics lines")->capture_default_str()
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
