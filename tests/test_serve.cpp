// The server's library layer without HTTP: generations (equal to the samplers run by hand and to `ddpm sample`'s
// bytes), cancellation within one network call, the job queue (FIFO, bounds, cancel, expiry, abandoned jobs), the
// catalog, the strict request validator and the API's status codes, headers and event streams.
#include <unistd.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "ddpm/compat.h"
#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "ddpm/serve/api.h"
#include "ddpm/serve/catalog.h"
#include "ddpm/serve/generation.h"
#include "ddpm/serve/jobs.h"
#include "../src/serve/base64.h"
#include "serve_support.h"

using namespace ddpm;
using namespace ddpm::serve;
using namespace ddpm::test;

TEST(Serve, Base64MatchesTheRfc4648Vectors) {
  const std::vector<std::pair<std::string, std::string>> v = {
      {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
  for (const auto& [in, out] : v) EXPECT_EQ(base64(in), out) << in;
  EXPECT_EQ(base64(std::string("\xff\x00\x10", 3)), "/wAQ");
}

TEST(Serve, Base64DecodesWhatItEncodesAndRefusesTheRest) {
  std::string bytes;
  for (int i = 0; i < 300; ++i) bytes += static_cast<char>((i * 37) & 0xff);
  for (size_t n : {1, 2, 3, 4, 5, 299, 300}) {
    std::string out;
    ASSERT_TRUE(base64_decode(base64(bytes.substr(0, n)), out)) << n;
    EXPECT_EQ(out, bytes.substr(0, n)) << n;
  }
  std::string out;
  EXPECT_TRUE(base64_decode("Zm9vYmE=", out));
  EXPECT_EQ(out, "fooba");
  for (const char* bad : {"", "Zg=", "Zm9", "Z===", "Zg==Zg==", "Zm9v\n", "Zm 9", "Zm9-", "=Zm9", "Zm=v",
                          "Zh==", "Zm9="})  // the last two: non-zero bits under the padding
    EXPECT_FALSE(base64_decode(bad, out)) << bad;
}

TEST(Serve, AnEventIsOneBlockWithOneDataLine) {
  EXPECT_EQ(sse_event("step", {{"step", 3}}, "3"), "event: step\nid: 3\ndata: {\"step\":3}\n\n");
  // A newline inside a value stays escaped: the data line is never split.
  EXPECT_EQ(sse_event("failed", {{"message", "a\nb"}}), "event: failed\ndata: {\"message\":\"a\\nb\"}\n\n");
}

TEST(Generation, EqualsTheSamplerRunByHand) {
  auto m = open_model("gmm:8gaussians");
  GenerationRequest r;
  r.sampler.name = "ddim";
  r.sampler.steps = 10;
  r.sampler.eta = 0.5;
  r.num = 5;
  r.seed = 3;
  auto x = generate(m, r);
  auto g = test::gen(3);
  auto x_T = at::randn({5, 2}, g);
  auto want = run_sampler(r.sampler, r.sampler.process(m.diffusion), m.denoiser, x_T, g);
  EXPECT_EQ(test::max_abs_diff(x, want), 0.0);
  // Every class, class by class, with guidance: the labels are 0,0,1,1,... and the guided denoiser is used.
  auto c = open_model(models_dir() + "/cond.safetensors");
  GenerationRequest pc;
  pc.sampler.name = "ddim";
  pc.sampler.steps = 3;
  pc.per_class = true;
  pc.num = 2;
  pc.guidance = 1.5;
  pc.seed = 4;
  auto xs = generate(c, pc);
  ASSERT_EQ(xs.size(0), 2 * c.num_classes);
  auto g2 = test::gen(4);
  auto x_T2 = at::randn(c.batch_shape(2 * c.num_classes), g2);
  SampleOptions o;
  o.clip_denoised = true;
  o.y = at::arange(c.num_classes, at::TensorOptions().dtype(at::kLong)).repeat_interleave(2);
  auto want2 = run_sampler(pc.sampler, pc.sampler.process(c.diffusion), c.guided(1.5), x_T2, g2, o);
  EXPECT_EQ(test::max_abs_diff(xs, want2), 0.0);
}

TEST(Generation, RefusesWhatTheModelCannotDo) {
  auto u = open_model(models_dir() + "/uncond.safetensors");
  auto c = open_model(models_dir() + "/cond.safetensors");
  auto field_of = [](const Model& m, GenerationRequest r) {
    try {
      validate_generation(m, r);
    } catch (const InvalidArgument& e) {
      return e.field();
    }
    return std::string("accepted");
  };
  GenerationRequest r;
  r.klass = 1;
  EXPECT_EQ(field_of(u, r), "class");
  r.klass = 10;
  EXPECT_EQ(field_of(c, r), "class");
  r.klass.reset();
  r.guidance = 2;
  EXPECT_EQ(field_of(c, r), "guidance");
  r.guidance = 0;
  r.num = 0;
  EXPECT_EQ(field_of(c, r), "num");
  r.num = 1;
  r.sampler.eta = -1;
  r.sampler.name = "ddim";
  EXPECT_EQ(field_of(c, r), "eta");
  r.sampler.eta = 0;
  EXPECT_EQ(field_of(c, r), "accepted");
}

TEST(Generation, CancelStopsWithinOneNetworkCall) {
  auto m = open_model("gmm:8gaussians");
  std::atomic<bool> cancel{false};
  int calls = 0;
  auto inner = m.denoiser;
  m.denoiser = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
    if (++calls == 3) cancel = true;  // asked while the third call runs
    return inner(x, t, y);
  };
  GenerationRequest r;
  r.sampler.name = "ddpm";
  r.sampler.steps = 50;
  GenerationCallbacks cb;
  cb.cancel = &cancel;
  EXPECT_THROW(generate(m, r, cb), Cancelled);
  EXPECT_EQ(calls, 3);
}

TEST(Generation, SampleCommandWritesTheSameBytes) {
  at::set_num_threads(1);
  auto c = open_model(models_dir() + "/cond.safetensors");
  GenerationRequest r;
  r.sampler.name = "ddim";
  r.sampler.steps = 4;
  r.sampler.eta = 0.5;
  r.klass = 7;
  r.guidance = 1.5;
  r.num = 2;
  r.seed = 9;
  auto x = generate(c, r);
  const std::string out = models_dir() + "/cli_pngs";
  std::string cmd = sample_command(models_dir() + "/cond.safetensors", r, 1, out);
  ASSERT_EQ(cmd.rfind("ddpm ", 0), 0u) << cmd;
  EXPECT_NE(cmd.find("--guidance 1.5"), std::string::npos) << cmd;
  ASSERT_EQ(shell(std::string(DDPM_CLI) + cmd.substr(4) + " -q"), 0) << cmd;
  for (int64_t i = 0; i < 2; ++i)
    EXPECT_EQ(slurp(out + "/sample_" + std::to_string(i) + ".png"), encode_image_png(x[i])) << "image " << i;
}

TEST(Catalog, ListsTheModelsOfAFolderAndLeavesOutTheRest) {
  auto c = catalog();
  ASSERT_EQ(c->entries().size(), 2u);
  EXPECT_EQ(c->entries()[0].id, "cond");
  EXPECT_EQ(c->entries()[0].num_classes, 10);
  EXPECT_EQ(c->entries()[0].class_names[9], "Ankle boot");
  EXPECT_TRUE(c->entries()[0].guidance);
  EXPECT_EQ(c->entries()[0].timesteps, 100);
  EXPECT_EQ(c->entries()[1].id, "uncond");
  EXPECT_FALSE(c->entries()[1].guidance);
  EXPECT_EQ(c->skipped().size(), 2u);  // broken.safetensors, "bad name!"
  // The noisy classifier is a classifier, fit for both models (same process, same image size).
  ASSERT_EQ(c->classifiers().size(), 1u);
  EXPECT_EQ(c->classifiers()[0].id, "guide");
  EXPECT_EQ(c->classifiers()[0].num_classes, 10);
  EXPECT_EQ(c->classifiers()[0].class_names[0], "T-shirt/top");
  EXPECT_EQ(c->entries()[0].classifiers, std::vector<std::string>{"guide"});
  EXPECT_EQ(c->entries()[1].classifiers, std::vector<std::string>{"guide"});
  EXPECT_NE(c->find_classifier("guide"), nullptr);
  EXPECT_EQ(c->find_classifier("cond"), nullptr);
  EXPECT_EQ(c->find_classifier("../guide"), nullptr);
  for (const char* id : {"../cond", "/etc/passwd", "%2e%2e%2fcond", "..", ".", "", "co\0nd", "cond/"})
    EXPECT_EQ(c->find(id), nullptr) << id;
  EXPECT_FALSE(valid_model_id(std::string("co\0nd", 5)));
  EXPECT_FALSE(c->entries()[0].to_json().contains("path"));  // ids, never paths
  // The cache hands out the same model while it stays recent.
  auto a = c->load("cond");
  EXPECT_EQ(c->load("cond").get(), a.get());
  EXPECT_THROW(c->load("nope"), InvalidArgument);
  EXPECT_THROW(Catalog::scan(models_dir() + "/missing"), IoError);
}

TEST(Generation, AnEditDrawsTheClosedFormPosteriorOfItsNoisedInput) {
  // Gaussian data N(m, s²I) and the exact denoiser: SDEdit from x_in at t0 draws x0 ~ p(x0 | x_t0) with
  // x_t0 = √a x_in + √(1-a) ε, so x0 | x_in is Gaussian with mean m + (a s²/v)(x_in - m) and variance
  // s²(1-a)(a s² + v)/v², v = a s² + 1 - a (a = ᾱ_t0). DDPM over every step up to t0; 20,000 draws.
  const double m = 0.3, s = 0.5;
  auto model = open_model("gaussian:mean=0.3,std=0.5,dim=2");
  auto full = model.diffusion.make();
  const int64_t n = 20000;
  auto x_in = at::tensor({1.5, -1.0}, at::kFloat).view({1, 2}).expand({n, 2}).contiguous();
  for (double strength : {0.2, 0.5, 0.8}) {
    GenerationRequest r;
    r.sampler.name = "ddpm";
    r.edit_from = x_in;
    r.strength = strength;
    r.seed = 21;
    auto x = generate(model, r).to(at::kDouble);
    const int64_t t0 = std::llround(strength * 1000) - 1;
    const double a = full.alphas_cumprod()[t0], v = a * s * s + 1 - a;
    const double var = s * s * (1 - a) * (a * s * s + v) / (v * v);
    for (int64_t d = 0; d < 2; ++d) {
      const double want = m + a * s * s / v * (x_in[0][d].item<double>() - m);
      const double se = std::sqrt(var / n);
      EXPECT_NEAR(x.select(1, d).mean().item<double>(), want, 5 * se) << "strength " << strength;
      // The variance's standard error is var·√(2/n) ≈ 1 % of it; the discrete sampler adds a little.
      EXPECT_NEAR(x.select(1, d).var().item<double>(), var, 0.05 * var) << "strength " << strength;
    }
  }
  // Strength 0 gives the input back, strength 1 is plain sampling with the same seed.
  GenerationRequest r;
  r.sampler.name = "ddim";
  r.sampler.steps = 10;
  r.edit_from = x_in.slice(0, 0, 4);
  r.strength = 0.0;
  EXPECT_EQ(max_abs_diff(generate(model, r), r.edit_from), 0.0);
  r.strength = 1.0;
  GenerationRequest plain = r;
  plain.edit_from = at::Tensor();
  plain.num = 4;
  EXPECT_EQ(max_abs_diff(generate(model, r), generate(model, plain)), 0.0);
  r.strength = 1.5;
  EXPECT_THROW(generate(model, r), InvalidArgument);
}

namespace {

/// Two Fashion-MNIST test images (28×28, padded to the models' 32×32) and a mask hiding their right halves.
ModelImages two_test_images() {
  auto set = load_image_dataset("fashion-mnist:test");
  set.images = set.images.slice(0, 0, 2);
  return images_for_model(set, {1, 32, 32}, "test images");
}

}  // namespace

TEST(Generation, InpaintingEqualsRepaintRunByHand) {
  auto m = open_model(models_dir() + "/cond.safetensors");
  auto in = two_test_images();
  ASSERT_EQ(in.pad_h, 2);
  auto mask = in.pad_mask(region_mask("right", 28, 28));
  // The padding is kept, and so is the left half of the image.
  EXPECT_EQ(mask.sum().item<double>(), 32.0 * 32.0 - 28.0 * 14.0);
  GenerationRequest r;
  r.sampler.name = "ddpm";
  r.sampler.steps = 6;
  r.edit_from = in.x;
  r.inpaint_mask = mask;
  r.repaint = {2, 3};
  r.klass = 4;
  r.seed = 11;
  EXPECT_EQ(r.calls(m.diffusion), 18);
  auto x = generate(m, r);
  auto g = test::gen(11);
  auto x_T = at::randn({2, 1, 32, 32}, g);
  SampleOptions o;
  o.clip_denoised = true;
  o.y = at::full({2}, 4, at::TensorOptions().dtype(at::kLong));
  auto want = repaint_sample(r.sampler.process(m.diffusion), m.denoiser, in.x, mask, x_T, g, r.repaint, o);
  EXPECT_EQ(max_abs_diff(x, want), 0.0);
  // The known part is the input, exactly (the last step puts back x_0 itself).
  EXPECT_EQ(max_abs_diff(x * mask, in.x * mask), 0.0);
  // RePaint runs over DDPM's steps and needs images and a mask of their size.
  auto wrong = r;
  wrong.sampler.name = "ddim";
  EXPECT_THROW(validate_generation(m, wrong), InvalidArgument);
  wrong = r;
  wrong.inpaint_mask = at::ones({1, 1, 16, 16});
  EXPECT_THROW(validate_generation(m, wrong), InvalidArgument);
  wrong = r;
  wrong.repaint.resample = 0;
  EXPECT_THROW(validate_generation(m, wrong), InvalidArgument);
  EXPECT_THROW(region_mask("middle", 28, 28), InvalidArgument);
}

TEST(Generation, EditAndInpaintCommandsWriteTheSameImages) {
  // The command a server job names for an edit (`ddpm edit`) or an inpainting (`ddpm inpaint`) repeats it: the
  // same images (the CLI writes them without the padding), with the classifier and the region.
  at::set_num_threads(1);
  auto m = open_model(models_dir() + "/uncond.safetensors");
  auto in = two_test_images();
  const std::string dir = models_dir() + "/edit_cli";
  fs::create_directories(dir);
  const std::string png = dir + "/input.png";
  {
    std::ofstream f(png, std::ios::binary);
    f << encode_image_png(in.crop(in.x)[0]);
  }
  auto c = open_noisy_classifier(models_dir() + "/guide.safetensors", m);
  GenerationRequest edit;
  edit.sampler.name = "ddim";
  edit.sampler.steps = 5;
  edit.edit_from = in.x.slice(0, 0, 1).repeat({2, 1, 1, 1});
  edit.strength = 0.6;
  edit.klass = 3;
  edit.classifier = c.classifier;
  edit.classifier_classes = c.num_classes;
  edit.classifier_scale = 2.0;
  edit.classifier_spec = models_dir() + "/guide.safetensors";
  edit.image_spec = png;
  edit.seed = 5;
  GenerationRequest inpaint;
  inpaint.sampler.name = "ddpm";
  inpaint.sampler.steps = 4;
  inpaint.edit_from = edit.edit_from;
  inpaint.inpaint_mask = in.pad_mask(region_mask("top", 28, 28));
  inpaint.mask_spec = "--region top";
  inpaint.repaint = {2, 2};
  inpaint.image_spec = png;
  inpaint.seed = 6;
  for (auto* r : {&edit, &inpaint}) {
    auto x = in.crop(generate(m, *r));
    const std::string out = dir + (r == &edit ? "/edit" : "/inpaint");
    const std::string cmd = sample_command(models_dir() + "/uncond.safetensors", *r, 1, out);
    EXPECT_NE(cmd.find(r == &edit ? " edit " : " inpaint "), std::string::npos) << cmd;
    ASSERT_EQ(shell("cd " + dir + " && " + std::string(DDPM_CLI) + cmd.substr(4) + " -q"), 0) << cmd;
    const std::string prefix = out + (r == &edit ? "/edit_" : "/inpaint_");
    for (int64_t i = 0; i < 2; ++i) EXPECT_EQ(slurp(prefix + std::to_string(i) + ".png"), encode_image_png(x[i])) << cmd;
  }
}

TEST(Generation, BatchesRunOnOneGeneratorAndTheFirstIsARunOfItsSize) {
  // 8gaussians' exact denoiser, DDPM (noise at every step) and DDIM η = 0 (x_T only), every class.
  auto m = open_model("gmm:8gaussians");
  for (const std::string sampler : {"ddpm", "ddim"}) {
    GenerationRequest r;
    r.sampler.name = sampler;
    r.sampler.steps = 20;
    r.per_class = true;
    r.num = 5;  // 40 items
    r.seed = 3;
    r.batch = 0;  // all at once
    const auto whole = generate(m, r);
    ASSERT_EQ(whole.size(0), 40);
    r.batch = 40;
    EXPECT_TRUE(generate(m, r).equal(whole)) << sampler << ": a batch of every item is the unbatched run";
    r.batch = 16;  // 16 + 16 + 8
    std::vector<int64_t> done;
    GenerationCallbacks cb;
    int64_t last_total = 0;
    cb.progress = [&](int64_t d, int64_t total) {
      done.push_back(d);
      last_total = total;
    };
    const auto batched = generate(m, r, cb);
    ASSERT_EQ(batched.sizes(), whole.sizes());
    EXPECT_EQ(last_total, 3 * 20);
    ASSERT_FALSE(done.empty());
    EXPECT_EQ(done.back(), 3 * 20);
    EXPECT_TRUE(std::is_sorted(done.begin(), done.end()));
    // The first batch: a run of 16 items alone, with the labels of the first 16 items (classes 0, 0, ..., 3).
    GenerationRequest alone;
    alone.sampler = r.sampler;
    alone.seed = 3;
    alone.num = 16;
    auto labels = at::arange(8, at::TensorOptions().dtype(at::kLong)).repeat_interleave(5).slice(0, 0, 16);
    at::Tensor first;
    {
      auto gen = compat::make_cpu_generator(3);
      auto x_T = at::randn({16, 2}, gen);
      SampleOptions o;
      o.y = labels;
      o.clip_denoised = false;
      first = run_sampler(r.sampler, r.sampler.process(m.diffusion), m.denoiser, x_T, gen, o);
    }
    EXPECT_TRUE(batched.slice(0, 0, 16).equal(first)) << sampler;
    // Every item is still of its class: the batches carry their slice of the labels.
    auto nearest = [&](const at::Tensor& x) {
      std::vector<float> mu;
      for (const auto& c : m.mixture->means) mu.insert(mu.end(), c.begin(), c.end());
      auto means = at::tensor(mu).reshape({8, 2});
      auto d = (x.unsqueeze(1) - means.unsqueeze(0)).pow(2).sum(-1);
      return d.argmin(1);
    };
    EXPECT_TRUE(nearest(batched).equal(at::arange(8, at::TensorOptions().dtype(at::kLong)).repeat_interleave(5)))
        << sampler;
  }
}
