// ddpm encode | decode: deterministic DDIM inversion of images to x_T and back (DDIM §5.4).
#include <cmath>
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "ddpm/compat.h"
#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/io/file.h"
#include "ddpm/io/npy.h"
#include "ddpm/samplers.h"

namespace ddpm::cli {
namespace {

/// Where the labels of a latents file live: latents.npy → latents.labels.npy.
std::string labels_path(const std::string& latents) {
  std::filesystem::path p(latents);
  return (p.parent_path() / (p.stem().string() + ".labels.npy")).string();
}

struct EncodeArgs {
  std::string model, images, data = "fashion-mnist:test", index, out, plot, sweep;
  int64_t num = 16, steps = 50;
  int refine = 0;
  std::optional<int64_t> klass;
  bool json = false;
  DiffusionFlags diffusion;
};

void run_encode(EncodeArgs& a) {
  if (a.refine < 0) throw InvalidArgument("--refine must be ≥ 0");
  check_writable(a.out);
  check_writable(a.plot);
  auto h = open_cli_model(a.model, a.diffusion);
  auto in = load_input_images(h, a.images, a.data, a.index, a.num);
  auto y = h.labels(in.size(), a.klass, in.labels);
  std::vector<int64_t> counts = a.sweep.empty() ? std::vector<int64_t>{a.steps} : parse_int_list(a.sweep, "--sweep");
  if (std::find(counts.begin(), counts.end(), a.steps) == counts.end()) counts.push_back(a.steps);
  int64_t total = 0;
  for (int64_t s : counts) total += 2 * s;
  Progress bar("encode+decode", total);
  int64_t done = 0;
  auto gen = compat::make_cpu_generator(0);  // DDIM with η = 0 draws nothing
  nlohmann::json table = nlohmann::json::array();
  at::Tensor latents, recon;
  for (int64_t s : counts) {
    auto d = h.diffusion.respaced(s, "ddim");
    SampleOptions o;
    if (y.defined()) o.y = y;
    o.progress = [&](int64_t k, int64_t) { bar.update(done + k); };
    auto z = ddim_invert(d, h.denoiser, in.x, o, a.refine);
    done += s;
    o.progress = [&](int64_t k, int64_t) { bar.update(done + k); };
    auto back = ddim_sample(d, h.denoiser, z, 0.0, gen, o);
    done += s;
    const double rmse = rmse_255(in.crop(back), in.crop(in.x));
    table.push_back({{"steps", s}, {"rmse_255", rmse}, {"latent_std", z.std().item<double>()}});
    if (s == a.steps) latents = z, recon = back;
  }
  bar.finish();
  if (!a.out.empty()) {
    write_npy(a.out, latents);
    if (y.defined()) write_npy(labels_path(a.out), y);
  }
  if (!a.plot.empty()) {
    // Pairs of rows: the inputs, then their reconstructions.
    const int64_t n = in.size(), cols = std::min<int64_t>(n, 8);
    std::vector<at::Tensor> rows;
    for (int64_t r = 0; r < n; r += cols) {
      rows.push_back(in.x.slice(0, r, std::min(n, r + cols)));
      rows.push_back(recon.slice(0, r, std::min(n, r + cols)));
    }
    save_grid(a.plot, at::cat(rows), cols);
  }
  nlohmann::json j = {{"images", in.size()}, {"refine", a.refine}, {"reconstruction", table}};
  if (!a.out.empty()) j["latents"] = a.out;
  if (a.json) {
    std::cout << j.dump() << "\n";
  } else if (!global_options().quiet) {
    std::cerr << "DDIM steps   reconstruction RMSE (0–255)   latent std\n";
    for (const auto& r : table) {
      char line[96];
      std::snprintf(line, sizeof line, "%10lld   %28.3f   %10.4f\n", static_cast<long long>(r["steps"].get<int64_t>()),
                    r["rmse_255"].get<double>(), r["latent_std"].get<double>());
      std::cerr << line;
    }
    if (!a.out.empty()) std::cerr << "latents (x_T at " << a.steps << " steps) → " << a.out << "\n";
  }
}

struct DecodeArgs {
  std::string model, latents, out = "decoded.png", out_npy, png_dir;
  int64_t steps = 50;
  std::optional<int64_t> klass;
  bool json = false;
  DiffusionFlags diffusion;
};

void run_decode(DecodeArgs& a) {
  check_writable(a.out);
  check_writable(a.out_npy);
  auto h = open_cli_model(a.model, a.diffusion);
  auto z = read_npy(a.latents);
  if (!z.is_floating_point()) throw FormatError("'" + a.latents + "' must hold floating-point values");
  z = z.to(at::kFloat);
  std::vector<int64_t> want = {z.dim() > 0 ? z.size(0) : 0};
  want.insert(want.end(), h.item_shape.begin(), h.item_shape.end());
  if (!z.sizes().equals(want) || z.size(0) < 1) {
    want[0] = -1;
    throw FormatError("'" + a.latents + "' has shape " + std::string(c10::str(z.sizes())) + "; the model's latents are " +
                      std::string(c10::str(at::IntArrayRef(want))) + " (-1 = any count)");
  }
  at::Tensor stored;
  if (!a.klass && h.num_classes > 0 && std::filesystem::exists(labels_path(a.latents))) {
    stored = read_npy(labels_path(a.latents)).to(at::kLong);
    if (stored.dim() != 1 || stored.size(0) != z.size(0)) throw FormatError("'" + labels_path(a.latents) + "' does not match the latents");
  }
  auto y = h.labels(z.size(0), a.klass, stored);
  auto d = h.diffusion.respaced(a.steps, "ddim");
  SampleOptions o;
  if (y.defined()) o.y = y;
  Progress bar("decode " + std::to_string(a.steps) + " DDIM steps", a.steps);
  o.progress = [&](int64_t k, int64_t) { bar.update(k); };
  auto gen = compat::make_cpu_generator(0);
  auto x = ddim_sample(d, h.denoiser, z, 0.0, gen, o);
  bar.finish();
  if (h.item_shape.size() == 3) {
    if (!a.out.empty()) save_grid(a.out, x, static_cast<int64_t>(std::ceil(std::sqrt(x.size(0)))));
    if (!a.png_dir.empty()) {
      ensure_directory(a.png_dir);
      save_images(a.png_dir + "/decoded_", x);
    }
  }
  if (!a.out_npy.empty()) write_npy(a.out_npy, x);
  if (a.json) std::cout << nlohmann::json({{"num", x.size(0)}, {"steps", a.steps}}).dump() << "\n";
  else if (!global_options().quiet) std::cerr << "decoded " << x.size(0) << " latents → " << a.out << "\n";
}

}  // namespace

void register_latents(CLI::App& app) {
  {
    auto a = std::make_shared<EncodeArgs>();
    auto* c = app.add_subcommand("encode",
                                 "DDIM inversion: images → x_T (.npy), with the reconstruction RMSE of decoding them back");
    c->add_option("--model,-m", a->model, "CHECKPOINT.safetensors of an image model")->required();
    a->diffusion.add(c, false);
    add_input_image_flags(c, a->images, a->data, a->index, a->num);
    c->add_option("--steps", a->steps, "DDIM steps of the inversion")->capture_default_str();
    c->add_option("--refine", a->refine, "fixed-point iterations per step (exact inversion)")->capture_default_str();
    c->add_option("--sweep", a->sweep, "also measure the round trip at these step counts, e.g. 10,20,50,100");
    c->add_option("--class", a->klass, "class label (default: the data's labels, else the null label)");
    c->add_option("--out,-o", a->out, "write x_T here (.npy; labels beside it as NAME.labels.npy)");
    c->add_option("--plot", a->plot, "PNG: rows of inputs, each followed by its reconstruction");
    c->add_flag("--json", a->json, "print the reconstruction table as JSON");
    c->callback([a] { run_encode(*a); });
  }
  {
    auto a = std::make_shared<DecodeArgs>();
    auto* c = app.add_subcommand("decode", "DDIM decoding: x_T (.npy from encode, or any Gaussian latents) → images");
    c->add_option("--model,-m", a->model, "CHECKPOINT.safetensors")->required();
    a->diffusion.add(c, false);
    c->add_option("--latents", a->latents, "x_T as .npy [N, C, H, W]")->required();
    c->add_option("--steps", a->steps, "DDIM steps (use encode's)")->capture_default_str();
    c->add_option("--class", a->klass, "class label (default: NAME.labels.npy beside the latents, else the null label)");
    c->add_option("--out", a->out, "PNG grid of the decoded images")->capture_default_str();
    c->add_option("--out-npy,-o", a->out_npy, "also write the images as .npy");
    c->add_option("--png-dir", a->png_dir, "also write each image as its own PNG into this folder");
    c->add_flag("--json", a->json, "print a JSON summary");
    c->callback([a] { run_decode(*a); });
  }
}

}  // namespace ddpm::cli
