// ddpm nll: bits/dim of a data set under a model, with its standard error and the per-term breakdown.
#include <optional>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "ddpm/compat.h"
#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/io/file.h"
#include "ddpm/eval/nll.h"

namespace ddpm::cli {
namespace {

struct NllArgs {
  std::string model, data = "toy:8gaussians", labels, decoder = "auto", csv, plot;
  int64_t num = 2000, batch = 1000;
  uint64_t data_seed = 1, seed = 0;
  std::optional<uint64_t> subset_seed;  // images: a seeded random subset instead of the first N
  bool json = false, quantize = false, clip = false, conditional = false;
  DiffusionFlags diffusion;
  std::string prefix = "rate_distortion";  // rate-distortion: plots PREFIX_{distortion_t,rate_t,distortion_rate}.png
};

/// Data on the 256-level grid of [-1, 1] (as images are) gets the discrete decoder; anything else the density.
bool on_image_grid(const at::Tensor& x) {
  if (x.min().item<double>() < -1.0 || x.max().item<double>() > 1.0) return false;
  auto k = (x.to(at::kDouble) + 1) * 127.5;
  return (k - k.round()).abs().max().item<double>() < 1e-3;
}

struct Evaluated {
  NllSummary s;
  Decoder decoder;
  int64_t T;
};

Evaluated evaluate(NllArgs& a) {
  auto h = open_cli_model(a.model, a.diffusion);
  PointSet data;
  if (is_image_spec(a.data)) {
    auto s = load_image_dataset(a.data);
    const int64_t n = std::min<int64_t>(a.num, s.size());
    at::Tensor idx = at::arange(n, at::TensorOptions().dtype(at::kLong));
    if (a.subset_seed) {
      auto g = compat::make_cpu_generator(*a.subset_seed);
      idx = std::get<0>(at::randperm(s.size(), g, at::TensorOptions().dtype(at::kLong)).slice(0, 0, n).sort());
    }
    data.x = to_model_range(s.images.index_select(0, idx), padded_side(s.images.size(2)));
    if (s.labels.defined()) data.labels = s.labels.index_select(0, idx);
    data.num_classes = s.num_classes;
  } else {
    data = load_points(a.data, a.num, a.data_seed, a.labels);
  }
  if (a.quantize) data.x = (((data.x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1).to(at::kFloat);
  if (data.x[0].sizes().vec() != h.item_shape)
    throw InvalidArgument("the data items have shape " + std::string(c10::str(data.x[0].sizes())) +
                          " (dimensions), the model expects " + std::string(c10::str(at::IntArrayRef(h.item_shape))));
  NllOptions o;
  o.batch = a.batch;
  o.seed = a.seed;
  o.clip_denoised = a.clip;
  o.decoder = a.decoder == "auto" ? (on_image_grid(data.x) ? Decoder::discrete : Decoder::continuous)
                                  : parse_decoder(a.decoder);
  const auto diffusion = h.diffusion.make();
  const int64_t T = diffusion.num_timesteps();
  Progress bar("nll", (data.size() + a.batch - 1) / a.batch * T);
  o.progress = [&](int64_t done, int64_t) { bar.update(done); };
  at::Tensor labels;
  if (a.conditional) {
    if (h.num_classes == 0) throw InvalidArgument("--conditional needs a class-conditional model");
    if (!data.labels.defined()) throw InvalidArgument("--conditional needs labelled data");
    if (data.num_classes > h.num_classes)
      throw InvalidArgument("the data has more classes than the model (" + std::to_string(h.num_classes) + ")");
    labels = data.labels;
  }
  auto s = evaluate_nll(diffusion, h.denoiser, data.x, labels, o);
  bar.finish();
  return {std::move(s), o.decoder, T};
}

void run_nll(NllArgs& a) {
  check_writable(a.csv);
  check_writable(a.plot);
  auto [s, decoder, T] = evaluate(a);

  if (!a.csv.empty()) {
    std::ostringstream os;
    os << "term,t,bits_per_dim,x0_mse\n";
    os << "prior," << T << "," << s.prior_bpd << ",\n";
    for (int64_t i = T - 1; i >= 0; --i)
      os << (i == 0 ? "decoder" : "kl") << "," << i << "," << s.terms[i] << "," << s.x0_mse[i] << "\n";
    write_file_atomic(a.csv, os.str());
  }
  if (!a.plot.empty()) {
    LineSeries ls;
    for (int64_t i = 0; i < T; ++i) {
      ls.x.push_back(static_cast<double>(i));
      ls.y.push_back(s.terms[i]);
    }
    ls.color = palette(0);
    ls.label = "L_t (bits/dim)";
    PlotOptions po;
    char title[160];
    std::snprintf(title, sizeof title, "VLB terms: total %.4f bits/dim, L_0 %.4g, L_T %.3g", s.bits_per_dim,
                  s.terms[0], s.prior_bpd);
    po.title = title;
    po.xlabel = "timestep t";
    po.ylabel = "bits/dim (log scale)";
    po.log_y = true;
    po.height = 600;
    save_line_plot_png(a.plot, {ls}, po);
  }
  nlohmann::json j = {{"bits_per_dim", s.bits_per_dim}, {"stderr", s.stderr_},    {"count", s.count},
                      {"prior_bpd", s.prior_bpd},       {"decoder_bpd", s.terms[0]}, {"timesteps", T},
                      {"decoder", to_string(decoder)}};
  if (a.json) {
    std::cout << j.dump() << "\n";
  } else {
    std::printf("%.4f ± %.4f bits/dim over %lld points (%s decoder; prior %.4g, L_0 %.4g)\n", s.bits_per_dim,
                s.stderr_, static_cast<long long>(s.count), to_string(decoder).c_str(), s.prior_bpd, s.terms[0]);
  }
}

void run_rate_distortion(NllArgs& a) {
  check_writable(a.csv);
  for (const char* k : {"_distortion_t.png", "_rate_t.png", "_distortion_rate.png"}) check_writable(a.prefix + k);
  auto [s, decoder, T] = evaluate(a);
  auto rd = rate_distortion(s);
  if (!a.csv.empty()) {
    std::ostringstream os;
    os << "t,rate_bits_per_dim,distortion_rmse_255\n";
    for (size_t i = 0; i < rd.t.size(); ++i) os << rd.t[i] << "," << rd.rate_bpd[i] << "," << rd.distortion_rmse[i] << "\n";
    write_file_atomic(a.csv, os.str());
  }
  auto plot = [&](const std::string& path, const std::vector<double>& x, const std::vector<double>& y,
                  const std::string& title, const std::string& xl, const std::string& yl, bool log_y) {
    LineSeries ls;
    ls.x = x;
    ls.y = y;
    ls.color = palette(0);
    PlotOptions po;
    po.title = title;
    po.xlabel = xl;
    po.ylabel = yl;
    po.log_y = log_y;
    po.height = 600;
    save_line_plot_png(path, {ls}, po);
  };
  std::vector<double> tt(rd.t.begin(), rd.t.end());
  plot(a.prefix + "_distortion_t.png", tt, rd.distortion_rmse, "distortion of x̂0(x_t)", "timestep t",
       "RMSE [0, 255]", false);
  plot(a.prefix + "_rate_t.png", tt, rd.rate_bpd, "rate after sending x_T … x_t", "timestep t", "bits/dim", false);
  plot(a.prefix + "_distortion_rate.png", rd.rate_bpd, rd.distortion_rmse, "distortion against rate",
       "rate (bits/dim)", "RMSE [0, 255]", false);
  const double end_rate = rd.rate_bpd.back(), end_dist = rd.distortion_rmse.back();
  nlohmann::json j = {{"end_rate_bpd", end_rate},   {"end_distortion_rmse", end_dist}, {"bits_per_dim", s.bits_per_dim},
                      {"stderr", s.stderr_},         {"count", s.count},               {"timesteps", T},
                      {"decoder", to_string(decoder)}, {"prefix", a.prefix}};
  if (a.json) {
    std::cout << j.dump() << "\n";
  } else {
    std::printf("end point (x_1 sent): rate %.4f bits/dim, distortion %.3f RMSE (0–255); lossless total %.4f ± %.4f "
                "bits/dim over %lld images; plots %s_*.png\n",
                end_rate, end_dist, s.bits_per_dim, s.stderr_, static_cast<long long>(s.count), a.prefix.c_str());
  }
}

void add_data_flags(CLI::App* c, NllArgs& a) {
  c->add_option("--model,-m", a.model, "CHECKPOINT.safetensors, MODEL.pt, gaussian:..., gmm:FILE.json or gmm:8gaussians")
      ->required();
  a.diffusion.add(c, false);
  c->add_option("--data", a.data, "toy:NAME, FILE.npy, or images (fashion-mnist:test, cifar10:DIR:test, folder:DIR)")
      ->capture_default_str();
  c->add_option("--labels", a.labels, "labels .npy for FILE.npy data (class-conditional models)");
  c->add_option("--num,-n", a.num, "points drawn from a toy set; the first N images of an image set (N at least the "
                                   "split's size: all of it)")
      ->capture_default_str();
  c->add_option("--subset-seed", a.subset_seed, "images: evaluate N images drawn at random with this seed instead of "
                                               "the first N");
  c->add_option("--data-seed", a.data_seed, "seed of the toy set (default differs from training's 0)")
      ->capture_default_str();
  c->add_flag("--quantize", a.quantize, "round the data to the 256-level grid of [-1, 1] first (as images)");
  c->add_option("--decoder", a.decoder, "L_0 likelihood: auto, discrete (256 bins), continuous")->capture_default_str();
  c->add_flag("--clip", a.clip, "clip x̂0 to [-1, 1]");
  c->add_flag("--conditional", a.conditional, "evaluate -log p(x | y) with the data's labels (default: p(x))");
  c->add_option("--batch", a.batch, "rows per call of the model: examples, times timesteps when fewer examples remain")->capture_default_str();
  c->add_option("--seed", a.seed, "seed of the forward-process noise")->capture_default_str();
  c->add_flag("--json", a.json, "print one JSON object");
}

}  // namespace

void register_nll(CLI::App& app) {
  {
    auto a = std::make_shared<NllArgs>();
    auto* c = app.add_subcommand("nll", "negative log-likelihood (bits/dim) of a data set under a model");
    add_data_flags(c, *a);
    c->add_option("--csv", a->csv, "write every term (prior, L_{t-1}, L_0) to this CSV");
    c->add_option("--plot", a->plot, "plot the terms against t to this PNG");
    c->callback([a] { run_nll(*a); });
  }
  {
    auto a = std::make_shared<NllArgs>();
    auto* c = app.add_subcommand("rate-distortion",
                                 "progressive lossy compression (DDPM §4.3): rate and distortion as x_T … x_1 are sent");
    add_data_flags(c, *a);
    c->add_option("--csv", a->csv, "write t, rate (bits/dim), distortion (RMSE 0–255) to this CSV");
    c->add_option("--prefix", a->prefix, "plots PREFIX_distortion_t.png, PREFIX_rate_t.png, PREFIX_distortion_rate.png")
        ->capture_default_str();
    c->callback([a] { run_rate_distortion(*a); });
  }
}

}  // namespace ddpm::cli
