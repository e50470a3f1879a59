// The measurements of bench_unet other than its main table: GroupNorm kernels, profiler traces, scaling points and
// the cost of FiLM ResBlocks (bench/bench_common.h).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "bench_common.h"
#include "ddpm/compat.h"
#include "ddpm/models/group_norm.h"
#include "ddpm/samplers.h"
#include "ddpm/schedule.h"

namespace ddpm::bench {

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

void profile_training(const Config& c, const std::string& path) {
  torch::manual_seed(0);
  auto trainer = bench_trainer(std::make_shared<ddpm::UNet>(c.unet), c.batch_train);
  trainer->step();  // warm-up
  torch::autograd::profiler::RecordProfile profile(path);
  for (int i = 0; i < 2; ++i) trainer->step();
}

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

nlohmann::json measure_point(const Config& c, const std::string& spec, ComputePrecision precision) {
  char kind[16] = {0};
  long long side = 0, batch = 0, steps = 0;
  if (std::sscanf(spec.c_str(), "%15[a-z],%lld,%lld,%lld", kind, &side, &batch, &steps) != 4)
    throw std::invalid_argument("bad --point '" + spec + "'");
  ddpm::UNetOptions o = c.unet;
  o.image_size = side;
  torch::manual_seed(0);
  auto net = std::make_shared<ddpm::UNet>(o);
  net->set_compute_precision(precision);
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

}  // namespace ddpm::bench
