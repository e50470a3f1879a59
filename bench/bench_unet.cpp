// bench_unet: training and sampling throughput of the DDPM U-Net against this machine's convolution peak and against
// the same network and steps in PyTorch eager (bench/reference_unet.py), all timed in one run.
//
//   build/bench/bench_unet [--config fashion-mnist|cifar10-ddpm|all] [--iters N] [--threads N] [--json FILE]
//                          [--no-reference] [--scaling]
//                          fp32 and mixed bf16 (ComputePrecision) against PyTorch eager fp32 and under autocast bf16;
//                          the host (CPU, instruction sets, ATen capability, library versions) heads the table
//   build/bench/bench_unet --group-norm                     GroupNorm+SiLU: LibTorch's ops against the fused kernel
//   build/bench/bench_unet --film [--config C]              FiLM scale-shift ResBlocks against the fused default
//   build/bench/bench_unet --config C --profile TRACE.json [--bf16 | --train]
//                          LibTorch profiler trace of sampling forwards (or training steps);
//                          summarise with bench/profile_summary.py
//
// Every figure is a best-of-repeats wall time; the ratios compare runs made minutes apart on the same machine.
#include <ATen/ATen.h>
#include <torch/utils.h>
#include <torch/version.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "ddpm/compat.h"
#include "ddpm/store/checkpoint.h"
#include "ddpm/io/npy.h"
#include "ddpm/models/group_norm.h"
#include "ddpm/models/unet.h"
#include "ddpm/models/unet_cost.h"
#include "ddpm/samplers.h"
#include "ddpm/schedule.h"
#include "ddpm/train/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Config {
  std::string name;
  ddpm::UNetOptions unet;
  int64_t batch_train, batch_sample;
};

std::vector<Config> configs() {
  Config fm;
  fm.name = "fashion-mnist";
  fm.unet.in_channels = 1;
  fm.unet.base_channels = 32;
  fm.unet.channel_mult = {1, 2, 2};
  fm.unet.num_classes = 10;
  fm.batch_train = 64;
  fm.batch_sample = 64;
  Config cf;
  cf.name = "cifar10-ddpm";
  cf.batch_train = 16;
  cf.batch_sample = 16;
  return {fm, cf};
}

/// Best GFLOP/s of one convolution shape over a few repeats, NCHW or channels_last.
double conv_gflops(const ddpm::ConvShape& s, int64_t batch, bool channels_last, int repeats,
                   at::ScalarType dtype = at::kFloat) {
  auto x = at::randn({batch, s.in_channels, s.in_side, s.in_side}).to(dtype);
  auto w = at::randn({s.out_channels, s.in_channels, s.kernel, s.kernel}).to(dtype);
  auto b = at::randn({s.out_channels}).to(dtype);
  if (channels_last) {
    x = x.contiguous(at::MemoryFormat::ChannelsLast);
    w = w.contiguous(at::MemoryFormat::ChannelsLast);
  }
  c10::InferenceMode guard;
  at::conv2d(x, w, b, {s.stride, s.stride}, {s.kernel / 2, s.kernel / 2});
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = Clock::now();
    auto y = at::conv2d(x, w, b, {s.stride, s.stride}, {s.kernel / 2, s.kernel / 2});
    best = std::min(best, seconds_since(t0));
  }
  return s.flops() * static_cast<double>(batch) / best / 1e9;
}

std::string run_capture(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return "";
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

extern "C" {
// OpenBLAS's own description of itself, when LibTorch's BLAS is OpenBLAS (weak: absent otherwise).
__attribute__((weak)) char* openblas_get_config(void);
__attribute__((weak)) char* openblas_get_corename(void);
}

/// The machine and the software the figures come from: CPU model, cores, the instruction sets that matter here, the
/// ATen kernel capability in use, LibTorch / oneDNN / OpenBLAS versions.
nlohmann::json host_info() {
  nlohmann::json h;
  std::ifstream cpu("/proc/cpuinfo");
  std::string line, model, flags;
  while (std::getline(cpu, line)) {
    auto value = [&] { return line.substr(line.find(':') + 2); };
    if (model.empty() && line.rfind("model name", 0) == 0) model = value();
    if (flags.empty() && line.rfind("flags", 0) == 0) flags = " " + value() + " ";
  }
  h["cpu"] = model;
  h["logical_cores"] = std::thread::hardware_concurrency();
  nlohmann::json isa = nlohmann::json::array();
  for (const char* f : {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"})
    if (flags.find(" " + std::string(f) + " ") != std::string::npos) isa.push_back(f);
  h["isa"] = isa;
  const char* cap = std::getenv("ATEN_CPU_CAPABILITY");
  // ATen picks the best of default / avx2 / avx512 its build has and the CPU supports, unless the variable says less.
  const std::string config = at::show_config();
  auto after = [&](const std::string& key) {
    const auto i = config.find(key);
    if (i == std::string::npos) return std::string();
    const auto j = config.find_first_of("\n(", i + key.size());
    return config.substr(i + key.size(), j - i - key.size());
  };
  std::string capability = after("CPU capability usage: ");
  h["aten_capability"] = capability.empty() ? (cap ? std::string(cap) + " (ATEN_CPU_CAPABILITY)" : "unknown") : capability;
  h["libtorch"] = TORCH_VERSION;
  std::string dnnl = after("Intel(R) MKL-DNN ");
  if (dnnl.empty()) dnnl = after("oneDNN ");
  h["onednn"] = dnnl;
  h["openblas"] = openblas_get_config ? std::string(openblas_get_config()) : "not OpenBLAS";
  if (openblas_get_corename) h["openblas_core"] = openblas_get_corename();
  return h;
}

/// The library's Trainer on `net` with random images in [-1, 1] (4 batches) and random labels for conditional nets:
/// the training step every measurement here times (forward, backward, clip, Adam, EMA).
std::unique_ptr<ddpm::Trainer> bench_trainer(std::shared_ptr<ddpm::UNet> net, int64_t batch) {
  const auto& o = net->options();
  auto data = at::rand({batch * 4, o.in_channels, o.image_size, o.image_size}) * 2 - 1;
  at::Tensor labels;
  if (o.num_classes > 0) labels = at::randint(0, o.num_classes, {batch * 4}, at::TensorOptions().dtype(at::kLong));
  ddpm::TrainConfig tc;
  tc.batch = batch;
  tc.steps = 1 << 30;
  tc.lr = 2e-4;
  tc.ema_decay = 0.9999;
  tc.label_dropout = o.num_classes > 0 ? 0.1 : 0.0;
  return std::make_unique<ddpm::Trainer>(net, ddpm::DiffusionConfig(), tc, data, labels, ddpm::Decoder::discrete);
}

nlohmann::json bench_config(const Config& c, int iters, int threads, bool reference) {
  nlohmann::json r = {{"config", c.name}, {"threads", threads}};
  const auto cost = ddpm::unet_cost(c.unet, c.unet.image_size);
  r["parameters"] = cost.parameters;
  r["forward_gflop_per_image"] = cost.total_flops() / 1e9;
  r["flop_share"] = {{"conv", cost.conv_flops / cost.total_flops()},
                     {"attention", cost.attention_flops / cost.total_flops()},
                     {"linear", cost.linear_flops / cost.total_flops()}};

  // The machine's peak: the model's three most expensive 3×3 convolution shapes at the sampling batch, both layouts.
  std::vector<ddpm::ConvShape> shapes;
  for (const auto& s : cost.convs)
    if (s.kernel == 3 && s.stride == 1 &&
        std::none_of(shapes.begin(), shapes.end(), [&](const ddpm::ConvShape& o) {
          return o.in_channels == s.in_channels && o.out_channels == s.out_channels && o.in_side == s.in_side;
        }))
      shapes.push_back(s);
  std::sort(shapes.begin(), shapes.end(), [](const auto& a, const auto& b) { return a.flops() > b.flops(); });
  shapes.resize(std::min<size_t>(3, shapes.size()));
  double peak = 0;
  nlohmann::json peaks = nlohmann::json::array();
  for (const auto& s : shapes)
    for (bool cl : {false, true}) {
      const double g = conv_gflops(s, c.batch_sample, cl, 5);
      peaks.push_back({{"shape", std::to_string(s.in_channels) + "->" + std::to_string(s.out_channels) + " @" +
                                     std::to_string(s.in_side)},
                       {"layout", cl ? "nhwc" : "nchw"},
                       {"gflops", g}});
      peak = std::max(peak, g);
    }
  std::cerr << "  conv peak " << peak << " GFLOP/s\n";
  r["conv_peak_gflops"] = peak;
  r["conv_peak_runs"] = peaks;
  // The same shapes in bfloat16, channels-last (the layout of the bf16 path).
  double peak_bf16 = 0;
  for (const auto& s : shapes) peak_bf16 = std::max(peak_bf16, conv_gflops(s, c.batch_sample, true, 5, at::kBFloat16));
  std::cerr << "  bf16 conv peak " << peak_bf16 << " GFLOP/s\n";
  r["conv_peak_bf16_gflops"] = peak_bf16;

  // Training step (forward, backward, clip, Adam, EMA) through the library's Trainer, fp32 and mixed bf16.
  for (auto compute : {ddpm::ComputePrecision::fp32, ddpm::ComputePrecision::bf16}) {
    const std::string suffix = compute == ddpm::ComputePrecision::bf16 ? "_bf16" : "";
    torch::manual_seed(0);
    const int64_t B = c.batch_train;
    auto net = std::make_shared<ddpm::UNet>(c.unet);
    net->set_compute_precision(compute);
    auto trainer = bench_trainer(net, B);
    trainer->step();  // warm-up
    double best = 1e30;  // best of two halves: the machine is shared
    for (int half = 0; half < 2; ++half) {
      auto t0 = Clock::now();
      for (int i = 0; i < (iters + 1) / 2; ++i) trainer->step();
      best = std::min(best, seconds_since(t0) / ((iters + 1) / 2));
    }
    const double img_s = B / best;
    r["train" + suffix + "_img_per_s"] = img_s;
    std::cerr << "  train" << suffix << " " << img_s << " img/s\n";
    r["train" + suffix + "_gflops"] = 3 * cost.total_flops() * img_s / 1e9;  // backward ≈ 2 × forward
  }

  // Sampling steps (network + DDIM update) under inference mode: fp32; fp32 with the attention products in bf16;
  // mixed bf16 (attention products in float); mixed bf16 with bf16 attention.
  struct Mode {
    const char* suffix;
    ddpm::ComputePrecision compute;
    ddpm::AttentionPrecision attention;
  };
  for (const Mode m : {Mode{"", ddpm::ComputePrecision::fp32, ddpm::AttentionPrecision::fp32},
                       Mode{"_bf16attn", ddpm::ComputePrecision::fp32, ddpm::AttentionPrecision::bf16},
                       Mode{"_bf16", ddpm::ComputePrecision::bf16, ddpm::AttentionPrecision::fp32},
                       Mode{"_bf16_bf16attn", ddpm::ComputePrecision::bf16, ddpm::AttentionPrecision::bf16}}) {
    const std::string suffix = m.suffix;
    torch::manual_seed(0);
    auto net = std::make_shared<ddpm::UNet>(c.unet);
    net->eval();
    net->set_attention_precision(m.attention);
    net->set_compute_precision(m.compute);
    const int64_t B = c.batch_sample, side = c.unet.image_size;
    ddpm::DiffusionConfig dc;
    auto diffusion = dc.respaced(iters + 1, "linspace");
    auto gen = ddpm::compat::make_cpu_generator(0);
    ddpm::SampleOptions so;
    if (c.unet.num_classes > 0) so.y = at::randint(0, c.unet.num_classes, {B}, at::TensorOptions().dtype(at::kLong));
    auto x = at::randn({B, c.unet.in_channels, side, side});
    ddpm::ddim_sample(dc.respaced(1, "linspace"), ddpm::as_denoiser(net), x, 0.0, gen,
                      so);  // warm-up
    auto t0 = Clock::now();
    ddpm::ddim_sample(diffusion, ddpm::as_denoiser(net), x, 0.0, gen, so);
    const double steps_s = (iters + 1) * B / seconds_since(t0);
    r["sample" + suffix + "_img_steps_per_s"] = steps_s;
    std::cerr << "  sample" << suffix << " " << steps_s << " image-steps/s\n";
    r["sample" + suffix + "_gflops"] = cost.total_flops() * steps_s / 1e9;
    r["sample" + suffix + "_fraction_of_peak"] =
        cost.total_flops() * steps_s / 1e9 / (m.compute == ddpm::ComputePrecision::bf16 ? peak_bf16 : peak);
  }

  // Peak memory of a training run of two steps, each precision in a fresh process of this program.
  {
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    for (const std::string p : {"fp32", "bf16"}) {
      const std::string out = run_capture(self + " --config " + c.name + " --threads " + std::to_string(threads) +
                                          " --precision " + p + " --point train,32," + std::to_string(c.batch_train) +
                                          ",2 2>/dev/null");
      if (out.find('{') != std::string::npos)
        r["train_peak_rss_mib" + std::string(p == "bf16" ? "_bf16" : "")] =
            nlohmann::json::parse(out.substr(out.find('{')))["peak_rss_mib"];
    }
  }

  if (reference) {
    const std::string args = " " DDPM_SOURCE_DIR "/bench/reference_unet.py --config " + c.name + " --batch-train " +
                             std::to_string(c.batch_train) + " --batch-sample " + std::to_string(c.batch_sample) +
                             " --iters " + std::to_string(iters) + " --threads " + std::to_string(threads) +
                             " 2>/dev/null";
    // The python3 on PATH (a pip torch), else Debian's (python3-torch). Eager fp32, then under
    // torch.autocast("cpu", dtype=torch.bfloat16).
    auto peer = [&](const std::string& extra) {
      std::string out = run_capture("python3" + args + extra);
      if (out.find('{') == std::string::npos) out = run_capture("/usr/bin/python3" + args + extra);
      return nlohmann::json::parse(out.substr(out.find('{')));
    };
    auto ratio = [&](const std::string& ours, const nlohmann::json& ref, const std::string& theirs) {
      return r[ours].get<double>() / ref.at(theirs).get<double>();
    };
    try {
      auto ref = peer("");
      r["pytorch"] = ref;
      if (ref.at("parameters") != r["parameters"]) r["pytorch_mismatch"] = "parameter counts differ";
      for (const std::string m : {"", "_bf16"}) r["train" + m + "_vs_pytorch"] = ratio("train" + m + "_img_per_s", ref, "train_img_per_s");
      for (const std::string m : {"", "_bf16attn", "_bf16", "_bf16_bf16attn"})
        r["sample" + m + "_vs_pytorch"] = ratio("sample" + m + "_img_steps_per_s", ref, "sample_img_steps_per_s");
      auto ac = peer(" --autocast");
      r["pytorch_autocast"] = ac;
      for (const std::string m : {"", "_bf16"}) r["train" + m + "_vs_autocast"] = ratio("train" + m + "_img_per_s", ac, "train_img_per_s");
      for (const std::string m : {"", "_bf16attn", "_bf16", "_bf16_bf16attn"})
        r["sample" + m + "_vs_autocast"] = ratio("sample" + m + "_img_steps_per_s", ac, "sample_img_steps_per_s");
    } catch (const std::exception&) {
      if (!r.contains("pytorch")) r["pytorch"] = "unavailable (python3 with torch is needed: bash scripts/setup.sh)";
    }
  }
  return r;
}

/// GroupNorm+SiLU at the U-Net's activation shapes: LibTorch's two ops against the fused one, forward (inference)
/// and forward+backward, NCHW and channels_last; milliseconds, best of `reps`.
void bench_group_norm(int reps) {
  std::printf("%-18s %-6s %12s %12s %12s %14s %14s\n", "shape", "layout", "torch fwd ms", "fused fwd ms",
              "GN only ms", "torch f+b ms", "fused f+b ms");
  for (auto shape : std::vector<std::vector<int64_t>>{{64, 64, 32, 32}, {64, 128, 16, 16}, {16, 256, 32, 32}}) {
    for (bool cl : {false, true}) {
      auto x = at::randn(shape);
      if (cl) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      auto w = at::randn({shape[1]}), b = at::randn({shape[1]});
      auto time = [&](auto&& f) {
        double best = 1e30;
        for (int i = 0; i < reps + 1; ++i) {
          auto t0 = Clock::now();
          f();
          if (i > 0) best = std::min(best, seconds_since(t0) * 1e3);
        }
        return best;
      };
      double tf, ff, nf, tb, fb;
      {
        c10::InferenceMode guard;
        tf = time([&] { at::silu(at::group_norm(x, 32, w, b, 1e-6)); });
        ff = time([&] { ddpm::group_norm_silu(x, 32, w, b, 1e-6); });
        nf = time([&] { ddpm::group_norm_silu(x, 32, w, b, 1e-6, /*silu=*/false); });
      }
      auto xg = x.clone().requires_grad_(true);
      auto up = at::randn(shape);
      tb = time([&] { (at::silu(at::group_norm(xg, 32, w, b, 1e-6)) * up).sum().backward(); });
      fb = time([&] { (ddpm::group_norm_silu(xg, 32, w, b, 1e-6) * up).sum().backward(); });
      char name[64];
      std::snprintf(name, sizeof name, "%lldx%lldx%lldx%lld", (long long)shape[0], (long long)shape[1],
                    (long long)shape[2], (long long)shape[3]);
      std::printf("%-18s %-6s %12.2f %12.2f %12.2f %14.2f %14.2f\n", name, cl ? "nhwc" : "nchw", tf, ff, nf, tb, fb);
    }
  }
}

/// Chrome trace of two training steps (forward, backward, clip, Adam, EMA through Trainer) under LibTorch's profiler.
void profile_training(const Config& c, const std::string& path) {
  torch::manual_seed(0);
  auto trainer = bench_trainer(std::make_shared<ddpm::UNet>(c.unet), c.batch_train);
  trainer->step();  // warm-up
  torch::autograd::profiler::RecordProfile profile(path);
  for (int i = 0; i < 2; ++i) trainer->step();
}

/// Chrome trace of three sampling forwards (batch of the config) under LibTorch's profiler; `precision` as given.
void profile_sampling(const Config& c, const std::string& path, ddpm::AttentionPrecision precision) {
  torch::manual_seed(0);
  auto net = std::make_shared<ddpm::UNet>(c.unet);
  net->eval();
  net->set_attention_precision(precision);
  const int64_t B = c.batch_sample, side = c.unet.image_size;
  auto x = at::randn({B, c.unet.in_channels, side, side});
  auto t = at::full({B}, 500, at::TensorOptions().dtype(at::kLong));
  at::Tensor y;
  if (c.unet.num_classes > 0) y = at::randint(0, c.unet.num_classes, {B}, at::TensorOptions().dtype(at::kLong));
  c10::InferenceMode guard;
  net->forward(x, t, y);  // warm-up
  torch::autograd::profiler::RecordProfile profile(path);
  for (int i = 0; i < 3; ++i) net->forward(x, t, y);
}

/// Peak resident memory of this process (Linux VmHWM).
double peak_rss_mib() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return NAN;
  char line[256];
  double kib = NAN;
  while (std::fgets(line, sizeof line, f) != nullptr)
    if (std::sscanf(line, "VmHWM: %lf kB", &kib) == 1) break;
  std::fclose(f);
  return kib / 1024;
}

/// One scaling point, measured in this (fresh) process so that its peak memory is its own: "sample,side,batch,steps"
/// or "train,side,batch,steps".
ddpm::ComputePrecision g_point_precision = ddpm::ComputePrecision::fp32;  // --precision, for --point

nlohmann::json measure_point(const Config& c, const std::string& spec) {
  char kind[16] = {0};
  long long side = 0, batch = 0, steps = 0;
  if (std::sscanf(spec.c_str(), "%15[a-z],%lld,%lld,%lld", kind, &side, &batch, &steps) != 4)
    throw std::invalid_argument("bad --point '" + spec + "'");
  ddpm::UNetOptions o = c.unet;
  o.image_size = side;
  torch::manual_seed(0);
  auto net = std::make_shared<ddpm::UNet>(o);
  net->set_compute_precision(g_point_precision);
  nlohmann::json r = {{"kind", kind}, {"side", side}, {"batch", batch}, {"steps", steps},
                      {"gflop_per_image", ddpm::unet_cost(o, side).total_flops() / 1e9}};
  if (std::string(kind) == "sample") {
    net->eval();
    ddpm::DiffusionConfig dc;
    auto gen = ddpm::compat::make_cpu_generator(0);
    ddpm::SampleOptions so;
    if (o.num_classes > 0) so.y = at::zeros({batch}, at::TensorOptions().dtype(at::kLong));
    auto x = at::randn({batch, o.in_channels, side, side});
    ddpm::ddim_sample(dc.respaced(1, "linspace"), ddpm::as_denoiser(net), x, 0.0,
                      gen, so);  // warm-up
    auto t0 = Clock::now();
    ddpm::ddim_sample(dc.respaced(steps, "linspace"), ddpm::as_denoiser(net), x,
                      0.0, gen, so);
    const double secs = seconds_since(t0);
    r["seconds"] = secs;
    r["img_steps_per_s"] = batch * steps / secs;
  } else {
    auto trainer = bench_trainer(net, batch);
    trainer->step();  // warm-up
    auto t0 = Clock::now();
    for (int i = 0; i < steps; ++i) trainer->step();
    const double secs = seconds_since(t0);
    r["seconds"] = secs;
    r["img_per_s"] = steps * batch / secs;
  }
  r["peak_rss_mib"] = peak_rss_mib();
  return r;
}

/// Sampling time and peak memory against steps, batch and image size; training throughput against batch size.
/// Each point runs in a fresh process of this program.
nlohmann::json bench_scaling(const Config& c, int threads) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  auto point = [&](const std::string& spec) {
    const std::string out = run_capture(self + " --config " + c.name + " --threads " + std::to_string(threads) +
                                        " --point " + spec + " 2>/dev/null");
    return nlohmann::json::parse(out.substr(out.find('{')));
  };
  nlohmann::json out = {{"config", c.name}};
  nlohmann::json rows = nlohmann::json::array();
  for (const char* spec : {"sample,32,16,5", "sample,32,16,10", "sample,32,16,20", "sample,32,1,5", "sample,32,4,5",
                           "sample,32,64,5", "sample,64,4,3", "sample,128,4,3"})
    rows.push_back(point(spec));
  out["sampling"] = rows;
  nlohmann::json train = nlohmann::json::array();
  for (const char* spec : {"train,32,8,4", "train,32,16,4", "train,32,32,3", "train,32,64,2", "train,32,128,2"})
    train.push_back(point(spec));
  out["training"] = train;
  return out;
}

void print_scaling(const nlohmann::json& s) {
  std::printf("\nscaling (%s): sampling\n%6s %6s %6s %9s %14s %12s\n", s["config"].get<std::string>().c_str(), "side",
              "batch", "steps", "seconds", "img-steps/s", "peak MiB");
  for (const auto& r : s["sampling"])
    std::printf("%6lld %6lld %6lld %9.2f %14.1f %12.0f\n", r["side"].get<long long>(), r["batch"].get<long long>(),
                r["steps"].get<long long>(), r["seconds"].get<double>(), r["img_steps_per_s"].get<double>(),
                r["peak_rss_mib"].get<double>());
  std::printf("training\n%6s %10s %12s\n", "batch", "img/s", "peak MiB");
  for (const auto& r : s["training"])
    std::printf("%6lld %10.1f %12.0f\n", r["batch"].get<long long>(), r["img_per_s"].get<double>(),
                r["peak_rss_mib"].get<double>());
}

void print_table(const std::vector<nlohmann::json>& rows) {
  std::printf("%-14s %-15s %11s %8s %8s %15s %8s %8s %8s\n", "config", "precision", "train img/s", "vs torch",
              "vs autoc", "sample img-st/s", "of peak", "vs torch", "vs autoc");
  for (const auto& r : rows) {
    auto num = [&](const std::string& k) { return r.contains(k) && r[k].is_number() ? r[k].get<double>() : NAN; };
    struct Row {
      const char* name;
      std::string train, sample;
    };
    for (const Row& m : {Row{"fp32", "", ""}, Row{"fp32, bf16 attn", "-", "_bf16attn"}, Row{"bf16", "_bf16", "_bf16"},
                         Row{"bf16, bf16 attn", "-", "_bf16_bf16attn"}}) {
      const bool tr = m.train != "-";
      std::printf("%-14s %-15s %11.1f %7.2fx %7.2fx %15.1f %7.0f%% %7.2fx %7.2fx\n",
                  m.train.empty() ? r["config"].get<std::string>().c_str() : "", m.name,
                  tr ? num("train" + m.train + "_img_per_s") : NAN, tr ? num("train" + m.train + "_vs_pytorch") : NAN,
                  tr ? num("train" + m.train + "_vs_autocast") : NAN, num("sample" + m.sample + "_img_steps_per_s"),
                  100 * num("sample" + m.sample + "_fraction_of_peak"), num("sample" + m.sample + "_vs_pytorch"),
                  num("sample" + m.sample + "_vs_autocast"));
    }
    std::printf("%-14s conv peak %.0f GFLOP/s fp32, %.0f bf16; training peak memory %.0f MiB fp32, %.0f bf16\n", "",
                num("conv_peak_gflops"), num("conv_peak_bf16_gflops"), num("train_peak_rss_mib"),
                num("train_peak_rss_mib_bf16"));
  }
}

/// The cost of FiLM (scale_shift_norm, improved-diffusion's ResBlocks; not fused) against the fused add-before-norm
/// block: the same network otherwise, forward passes interleaved, best of `iters`.
void bench_film(const Config& c, int iters, int64_t batch) {
  auto with = c.unet;
  with.scale_shift_norm = true;
  ddpm::UNet a(c.unet), b(with);
  a.eval();
  b.eval();
  auto x = at::randn({batch, c.unet.in_channels, c.unet.image_size, c.unet.image_size});
  auto t = at::randint(0, 1000, {batch}, at::TensorOptions().dtype(at::kLong));
  c10::InferenceMode guard;
  at::Tensor y;
  a.forward(x, t, y);
  b.forward(x, t, y);
  double best_a = 1e30, best_b = 1e30;
  for (int i = 0; i < iters; ++i) {
    auto t0 = Clock::now();
    a.forward(x, t, y);
    best_a = std::min(best_a, seconds_since(t0));
    t0 = Clock::now();
    b.forward(x, t, y);
    best_b = std::min(best_b, seconds_since(t0));
  }
  std::printf("%s batch %lld: add-before-norm (fused) %.1f ms, FiLM scale-shift %.1f ms, ratio %.3f\n", c.name.c_str(),
              static_cast<long long>(batch), best_a * 1e3, best_b * 1e3, best_b / best_a);
}

}  // namespace

int main(int argc, char** argv) {
  std::string which = "all", json_path;
  int iters = 5, threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool reference = true, scaling = false;
  std::string point, profile;
  bool bf16 = false, train = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "bench_unet: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--config") which = next();
    else if (a == "--iters") iters = std::stoi(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--json") json_path = next();
    else if (a == "--no-reference") reference = false;
    else if (a == "--scaling") scaling = true;
    else if (a == "--point") point = next();
    else if (a == "--group-norm") which = "group-norm";
    else if (a == "--film") profile = "film";
    else if (a == "--profile") profile = next();
    else if (a == "--bf16") bf16 = true;
    else if (a == "--train") train = true;
    else if (a == "--precision") g_point_precision = ddpm::parse_name<ddpm::ComputePrecision>(next());
    else {
      std::cerr << "usage: bench_unet [--config fashion-mnist|cifar10-ddpm|all] [--iters N] [--threads N] "
                   "[--json FILE] [--no-reference] [--scaling] [--group-norm] [--profile TRACE.json [--bf16 | --train]]\n";
      return a == "--help" ? 0 : 2;
    }
  }
  ddpm::compat::quiet_torch_logging();
  at::set_num_threads(threads);
  if (which == "group-norm") {
    bench_group_norm(iters);
    return 0;
  }
  if (profile == "film") {
    for (const auto& c : configs())
      if (which == "all" || c.name == which) bench_film(c, iters, c.batch_sample);
    return 0;
  }
  if (!profile.empty()) {
    for (const auto& c : configs())
      if (c.name == which) {
        if (train)
          profile_training(c, profile);
        else
          profile_sampling(c, profile, bf16 ? ddpm::AttentionPrecision::bf16 : ddpm::AttentionPrecision::fp32);
        return 0;
      }
    return 2;
  }
  if (!point.empty()) {
    for (const auto& c : configs())
      if (c.name == which) {
        std::cout << measure_point(c, point).dump() << "\n";
        return 0;
      }
    return 2;
  }
  const auto host = host_info();
  std::vector<nlohmann::json> rows;
  try {
    for (const auto& c : configs()) {
      if (which != "all" && which != c.name) continue;
      std::cerr << "bench_unet: " << c.name << " ...\n";
      rows.push_back(bench_config(c, iters, threads, reference));
      rows.back()["host"] = host;
      if (scaling) {
        std::cerr << "bench_unet: scaling of " << c.name << " ...\n";
        rows.back()["scaling"] = bench_scaling(c, threads);
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_unet: " << e.what() << "\n";
    return 1;
  }
  if (rows.empty()) {
    std::cerr << "bench_unet: unknown config '" << which << "'\n";
    return 2;
  }
  std::printf("host: %s, %d logical cores, %s; ATen %s; LibTorch %s, oneDNN %s; %s (%s); %d threads\n",
              host["cpu"].get<std::string>().c_str(), host["logical_cores"].get<int>(), host["isa"].dump().c_str(),
              host["aten_capability"].get<std::string>().c_str(), host["libtorch"].get<std::string>().c_str(),
              host["onednn"].get<std::string>().c_str(), host["openblas"].get<std::string>().c_str(),
              host.value("openblas_core", std::string("-")).c_str(), threads);
  print_table(rows);
  for (const auto& r : rows)
    if (r.contains("scaling")) print_scaling(r["scaling"]);
  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) {
      std::cerr << "bench_unet: cannot write " << json_path << "\n";
      return 1;
    }
    std::fputs(nlohmann::json(rows).dump(2).c_str(), f);
    std::fclose(f);
  }
  return 0;
}
