// The helpers of bench/bench_common.h.
#include "bench_common.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

namespace ddpm::bench {

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

double conv_gflops(const ddpm::ConvShape& s, int64_t batch, bool channels_last, int repeats,
                   at::ScalarType dtype) {
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

}  // namespace ddpm::bench
