// ddpm progressive | shared-latent | interpolate: the generation figures of the DDPM paper (Fig. 6–9) and DDIM
// latent interpolation, each as one PNG grid.
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <iostream>
#include <map>

#include "commands.h"
#include "common.h"
#include "ddpm/compat.h"
#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/sampler_registry.h"

namespace ddpm::cli {
namespace {

/// Flags every generation command shares.
struct GenArgs {
  std::string model, out;
  SamplerSpec sampler;
  std::optional<int64_t> klass;
  uint64_t seed = 0;
  bool json = false;
  DiffusionFlags diffusion;

  void add(CLI::App* c, const std::string& default_out) {
    out = default_out;
    c->add_option("--model,-m", model, "CHECKPOINT.safetensors of an image model")->required();
    diffusion.add(c, false);
    add_sampler_flags(c, sampler, {"ddpm", "ddim"}, false);
    c->add_option("--steps", sampler.steps, "sampling steps over the whole process [T for ddpm, 50 for ddim]");
    c->add_option("--class", klass, "class label for a class-conditional model (default: the null label)");
    c->add_option("--seed", seed, "seed of every random draw")->capture_default_str();
    c->add_option("--out", out, "the PNG grid to write")->capture_default_str();
    c->add_flag("--json", json, "print the numbers as JSON");
  }

  /// The sampler's grid of original timesteps over the full process.
  std::vector<int64_t> grid(const Model& h) const {
    sampler.require_one_of({"ddpm", "ddim"});
    sampler.validate();
    return sampler.timesteps(h.diffusion);
  }
};

Model load_image_model(const GenArgs& a) {
  auto h = open_cli_model(a.model, a.diffusion);
  if (!h.is_image()) throw InvalidArgument("this command draws images; '" + a.model + "' is not an image model");
  return h;
}

/// Paper timesteps t ∈ 1..T from "250,500" (indices t-1 are returned).
std::vector<int64_t> parse_paper_t(const std::string& text, int64_t T) {
  auto ts = parse_int_list(text, "--t");
  for (auto& t : ts) {
    if (t < 1 || t > T) throw InvalidArgument("--t must be in 1.." + std::to_string(T) + " (got " + std::to_string(t) + ")");
    t -= 1;
  }
  return ts;
}

at::Tensor full_t(int64_t n, int64_t i) { return at::full({n}, i, at::TensorOptions().dtype(at::kLong)); }

// ---------------------------------------------------------------------------------------------------------------
struct ProgressiveArgs : GenArgs {
  int64_t num = 4, snapshots = 10;
  std::string chain;
};

void run_progressive(ProgressiveArgs& a) {
  if (a.num < 1) throw InvalidArgument("--num must be at least 1");
  if (a.snapshots < 2) throw InvalidArgument("--snapshots must be at least 2");
  check_writable(a.out);
  check_writable(a.chain);
  auto h = load_image_model(a);
  auto kept = a.grid(h);
  auto d = h.diffusion.respaced(kept);
  const int64_t S = std::min<int64_t>(a.snapshots, d.num_timesteps()), n = a.num, steps = d.num_timesteps();
  // Columns: steps evenly spaced from the first (i = steps-1) to the last (i = 0).
  std::map<int64_t, int64_t> column;
  for (int64_t k = 0; k < S; ++k)
    column[static_cast<int64_t>(std::llround((steps - 1) * (1.0 - static_cast<double>(k) / (S - 1))))] = k;
  auto gen = compat::make_cpu_generator(a.seed);
  auto x_T = at::randn(h.batch_shape(n), gen);
  SampleOptions o;
  o.clip_denoised = true;
  if (h.num_classes > 0)
    o.y = a.klass ? h.labels(n, a.klass) : at::arange(n, at::TensorOptions().dtype(at::kLong)) % h.num_classes;
  else
    h.labels(n, a.klass);  // rejects --class
  std::vector<at::Tensor> x0s(S), xts(S);
  at::Tensor prev = x_T;
  o.on_step = [&](int64_t i, const at::Tensor& x, const at::Tensor& x0) {
    auto it = column.find(i);
    if (it != column.end()) {
      x0s[it->second] = x0.clone();
      xts[it->second] = prev.clone();  // the x_t the prediction was made from
    }
    prev = x;
  };
  Progress bar("progressive " + a.sampler.name + " " + std::to_string(steps) + " steps", steps);
  o.progress = [&](int64_t done, int64_t) { bar.update(done); };
  run_sampler(a.sampler, d, h.denoiser, x_T, gen, o);
  bar.finish();
  auto by_row = [&](const std::vector<at::Tensor>& cols) { return at::stack(cols, 1).flatten(0, 1); };
  save_grid(a.out, by_row(x0s), S);
  if (!a.chain.empty()) save_grid(a.chain, by_row(xts), S);
  std::vector<int64_t> ts;
  for (const auto& [i, k] : column) ts.push_back(kept[i] + 1);
  std::sort(ts.rbegin(), ts.rend());
  nlohmann::json j = {{"rows", n}, {"columns_t", ts}, {"sampler", a.sampler.name}, {"steps", steps}, {"out", a.out}};
  if (a.json) {
    std::cout << j.dump() << "\n";
  } else if (!global_options().quiet) {
    std::cerr << "x̂0 at t = " << nlohmann::json(ts).dump() << " (left to right), one row per sample → " << a.out;
    if (!a.chain.empty()) std::cerr << "; x_t → " << a.chain;
    std::cerr << "\n";
  }
}

// ---------------------------------------------------------------------------------------------------------------
struct ImageInputArgs {
  std::string images, data = "fashion-mnist:test", index;
  void add(CLI::App* c, const std::string& index_help) {
    c->add_option("--images", images, "comma-separated PNG/JPEG files (instead of --data)");
    c->add_option("--data", data, "image data set to take the inputs from")->capture_default_str();
    c->add_option("--index", index, index_help);
  }
};

struct SharedArgs : GenArgs {
  ImageInputArgs in;
  std::string ts;
  int64_t k = 6;
};

void run_shared(SharedArgs& a) {
  if (a.k < 1) throw InvalidArgument("-k must be at least 1");
  check_writable(a.out);
  auto h = load_image_model(a);
  const int64_t T = h.diffusion.timesteps;
  auto ts = parse_paper_t(a.ts.empty() ? std::to_string(T / 4) + "," + std::to_string(T / 2) + "," +
                                             std::to_string(3 * T / 4) + "," + std::to_string(T)
                                       : a.ts,
                          T);
  auto in = load_input_images(h, a.in.images, a.in.data, a.in.index, 2);
  const int64_t B = in.size(), K = a.k;
  auto y = h.labels(B, a.klass, in.labels);
  auto full = h.diffusion.make();
  auto grid = a.grid(h);
  auto gen = compat::make_cpu_generator(a.seed);
  std::vector<at::Tensor> rows;  // per image, per t: [x0, x_t, K samples]
  std::vector<std::vector<at::Tensor>> per_image(B);
  nlohmann::json report = nlohmann::json::array();
  int64_t total = 0;
  for (int64_t t : ts) total += static_cast<int64_t>(timesteps_up_to(grid, t).size());
  Progress bar("shared-latent", total);
  int64_t done = 0;
  for (int64_t t : ts) {
    auto x_t = full.q_sample(in.x, full_t(B, t), at::randn(in.x.sizes(), gen));
    auto d = h.diffusion.respaced(timesteps_up_to(grid, t));
    SampleOptions o;
    o.clip_denoised = true;
    if (y.defined()) o.y = y.repeat_interleave(K);
    o.progress = [&](int64_t s, int64_t) { bar.update(done + s); };
    auto samples = run_sampler(a.sampler, d, h.denoiser, x_t.repeat_interleave(K, 0), gen, o);
    done += d.num_timesteps();
    const double dist = rmse_255(in.crop(samples), in.crop(in.x.repeat_interleave(K, 0)));
    report.push_back({{"t", t + 1}, {"rmse_to_input_255", dist}});
    auto s = samples.reshape({B, K, samples.size(1), samples.size(2), samples.size(3)});
    for (int64_t b = 0; b < B; ++b)
      per_image[b].push_back(at::cat({in.x.slice(0, b, b + 1), x_t.slice(0, b, b + 1).clamp(-1, 1), s[b]}));
  }
  bar.finish();
  for (auto& r : per_image)
    for (auto& row : r) rows.push_back(row);
  save_grid(a.out, at::cat(rows), K + 2);
  nlohmann::json j = {{"images", B}, {"samples_per_latent", K}, {"sampler", a.sampler.name}, {"by_t", report}, {"out", a.out}};
  if (a.json) {
    std::cout << j.dump() << "\n";
  } else if (!global_options().quiet) {
    for (const auto& r : report)
      std::cerr << "t = " << r["t"] << ": samples differ from the input by RMSE " << r["rmse_to_input_255"].get<double>()
                << " (0–255)\n";
    std::cerr << "rows: input, x_t, " << K << " samples of p(x0 | x_t); per image one row per t → " << a.out << "\n";
  }
}

// ---------------------------------------------------------------------------------------------------------------
struct InterpArgs : GenArgs {
  ImageInputArgs in;
  std::string ts;
  int64_t lambdas = 11;
  bool ddim_latent = false;
};

void run_interpolate(InterpArgs& a) {
  if (a.lambdas < 2) throw InvalidArgument("--lambdas must be at least 2");
  check_writable(a.out);
  auto h = load_image_model(a);
  const int64_t T = h.diffusion.timesteps, L = a.lambdas;
  auto in = load_input_images(h, a.in.images, a.in.data, a.in.index.empty() ? "0,1" : a.in.index, 2);
  if (in.size() != 2)
    throw InvalidArgument("interpolate needs exactly two images (got " + std::to_string(in.size()) + ")");
  at::Tensor pair_label;
  if (in.labels.defined() && in.labels[0].item<int64_t>() == in.labels[1].item<int64_t>()) pair_label = in.labels.slice(0, 0, 1);
  auto y = h.labels(L, a.klass, pair_label.defined() ? pair_label.expand({L}).contiguous() : at::Tensor());
  auto lam = at::linspace(0.0, 1.0, L, at::TensorOptions().dtype(at::kFloat));
  auto gen = compat::make_cpu_generator(a.seed);
  auto full = h.diffusion.make();
  std::vector<at::Tensor> rows;
  nlohmann::json j = {{"lambdas", L}, {"out", a.out}};
  SampleOptions o;
  if (y.defined()) o.y = y;
  if (a.ddim_latent) {
    // DDIM §5.3: invert both images to x_T, interpolate spherically, decode deterministically.
    const int64_t steps = a.sampler.steps.value_or(std::min<int64_t>(50, T));
    auto d = h.diffusion.respaced(steps, "ddim");
    Progress bar("interpolate (DDIM latents)", 2 * steps);
    SampleOptions enc;
    if (y.defined()) enc.y = y.slice(0, 0, 2);
    enc.progress = [&](int64_t s, int64_t) { bar.update(s); };
    auto z = ddim_invert(d, h.denoiser, in.x, enc);
    std::vector<at::Tensor> mids;
    for (int64_t l = 0; l < L; ++l) mids.push_back(slerp(z.slice(0, 0, 1), z.slice(0, 1, 2), lam[l].item<double>()));
    o.progress = [&](int64_t s, int64_t) { bar.update(steps + s); };
    auto out = ddim_sample(d, h.denoiser, at::cat(mids), 0.0, gen, o);
    bar.finish();
    rows.push_back(at::cat({in.x.slice(0, 0, 1), out, in.x.slice(0, 1, 2)}));
    j["mode"] = "ddim-latent";
    j["steps"] = steps;
    j["endpoint_rmse_255"] = {rmse_255(in.crop(out.slice(0, 0, 1)), in.crop(in.x.slice(0, 0, 1))),
                              rmse_255(in.crop(out.slice(0, L - 1, L)), in.crop(in.x.slice(0, 1, 2)))};
  } else {
    // DDPM §4.3: x̄_t = (1-λ) x_t + λ x'_t from the stochastic encoder q, decoded by the reverse process with one
    // noise for every λ. Several t give the coarse-to-fine rows of Fig. 9.
    auto ts = parse_paper_t(a.ts.empty() ? std::to_string(T / 2) : a.ts, T);
    auto grid = a.grid(h);
    int64_t total = 0;
    for (int64_t t : ts) total += static_cast<int64_t>(timesteps_up_to(grid, t).size());
    Progress bar("interpolate", total);
    int64_t done = 0;
    o.shared_noise = true;
    o.clip_denoised = true;
    for (int64_t t : ts) {
      auto x_t = full.q_sample(in.x, full_t(2, t), at::randn(in.x.sizes(), gen));
      auto l = lam.view({L, 1, 1, 1});
      auto mix = (1 - l) * x_t.slice(0, 0, 1) + l * x_t.slice(0, 1, 2);
      auto d = h.diffusion.respaced(timesteps_up_to(grid, t));
      o.progress = [&](int64_t s, int64_t) { bar.update(done + s); };
      auto out = run_sampler(a.sampler, d, h.denoiser, mix, gen, o);
      done += d.num_timesteps();
      rows.push_back(at::cat({in.x.slice(0, 0, 1), out, in.x.slice(0, 1, 2)}));
    }
    bar.finish();
    std::vector<int64_t> paper_t;
    for (int64_t t : ts) paper_t.push_back(t + 1);
    j["mode"] = "ddpm";
    j["rows_t"] = paper_t;
  }
  save_grid(a.out, at::cat(rows), L + 2);
  if (a.json) {
    std::cout << j.dump() << "\n";
  } else if (!global_options().quiet) {
    std::cerr << "columns: first image, λ = 0 … 1 in " << L << " steps, second image";
    if (j.contains("rows_t")) std::cerr << "; rows: t = " << j["rows_t"].dump();
    std::cerr << " → " << a.out << "\n";
  }
}

}  // namespace

void register_generate(CLI::App& app) {
  {
    auto a = std::make_shared<ProgressiveArgs>();
    auto* c = app.add_subcommand("progressive",
                                 "progressive generation (DDPM Fig. 6): x̂0 predicted along one sampling run, one row per sample");
    a->add(c, "progressive.png");
    c->add_option("--num,-n", a->num, "samples (rows); a conditional model gets classes 0, 1, … unless --class")
        ->capture_default_str();
    c->add_option("--snapshots", a->snapshots, "columns: steps evenly spaced from t = T to the end")->capture_default_str();
    c->add_option("--chain", a->chain, "also write the x_t the predictions were made from as a second grid");
    c->callback([a] { run_progressive(*a); });
  }
  {
    auto a = std::make_shared<SharedArgs>();
    auto* c = app.add_subcommand("shared-latent",
                                 "samples sharing x_t (DDPM Fig. 7): real images noised to x_t, then K draws of p(x0 | x_t)");
    a->add(c, "shared_latent.png");
    a->in.add(c, "which images of --data (comma-separated) [0,1]");
    c->add_option("--t", a->ts, "paper timesteps t ∈ 1..T, comma-separated [T/4, T/2, 3T/4, T]");
    c->add_option("-k", a->k, "samples per latent")->capture_default_str();
    c->callback([a] { run_shared(*a); });
  }
  {
    auto a = std::make_shared<InterpArgs>();
    auto* c = app.add_subcommand("interpolate",
                                 "interpolate two images (DDPM Fig. 8–9 in x_t, or DDIM latents with --ddim-latent)");
    a->add(c, "interpolation.png");
    a->in.add(c, "the two images of --data [0,1]");
    c->add_option("--t", a->ts, "paper timestep(s) t ∈ 1..T to interpolate at; several give coarse-to-fine rows [T/2]");
    c->add_option("--lambdas", a->lambdas, "λ values from 0 to 1")->capture_default_str();
    c->add_flag("--ddim-latent", a->ddim_latent, "invert both with DDIM to x_T, interpolate spherically, decode");
    c->callback([a] { run_interpolate(*a); });
  }
}

}  // namespace ddpm::cli
