// The CLI on image models, published models and plots: train → sample → evaluate end to end, presets, TorchScript,
// import, rate–distortion, ddpm plot.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ddpm/data/images.h"
#include "ddpm/models/classifier.h"
#include "ddpm/store/classifier.h"
#include "ddpm/store/checkpoint.h"
#include "ddpm/io/npy.h"
#include "ddpm/io/safetensors.h"
#include "cli_support.h"
#include "support.h"

using namespace ddpm::test;

namespace {
namespace fs = std::filesystem;
}  // namespace

TEST(Cli, ImagesTrainSampleAndEvaluateEndToEnd) {
  // A tiny labelled image folder: 8×8 grey squares, class 0 dark and class 1 bright.
  const std::string d = dir() + "/imgs";
  fs::create_directories(d + "/data/dark");
  fs::create_directories(d + "/data/bright");
  auto g = ddpm::test::gen(1);
  ddpm::save_images(d + "/data/dark/d_", at::rand({6, 1, 8, 8}, g) * 0.2 - 0.9);
  ddpm::save_images(d + "/data/bright/b_", at::rand({6, 1, 8, 8}, g) * 0.2 + 0.7);
  auto r = run("train -q --data folder:" + d + "/data --conditional --steps 6 --batch 4 --sample-every 6"
               " --channels 8 --channel-mult 1,2 --attention 4 --res-blocks 1 --groups 4 --timesteps 50 --out " + d + "/run");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(fs::exists(d + "/run/samples_6.png"));
  auto info = run("info --json " + d + "/run/checkpoint.safetensors --strip " + d + "/model.safetensors");
  ASSERT_EQ(info.code, 0) << info.output;
  EXPECT_LT(fs::file_size(d + "/model.safetensors"), fs::file_size(d + "/run/checkpoint.safetensors") / 3);
  auto from_stripped = run("sample -q -m " + d + "/model.safetensors --steps 3 -n 2 --class 1 -o " + d + "/m.npy");
  EXPECT_EQ(from_stripped.code, 0) << from_stripped.output;
  EXPECT_NE(info.output.find("\"type\":\"unet\""), std::string::npos) << info.output;
  auto s = run("sample -q -m " + d + "/run/checkpoint.safetensors --sampler ddim --steps 5 --per-class -n 3 --plot " + d +
               "/grid.png --png-dir " + d + "/pngs -o " + d + "/s.npy");
  ASSERT_EQ(s.code, 0) << s.output;
  EXPECT_EQ(ddpm::read_npy(d + "/s.npy").sizes(), (std::vector<int64_t>{6, 1, 8, 8}));
  EXPECT_TRUE(fs::exists(d + "/pngs/sample_5.png"));
  EXPECT_LE(ddpm::read_npy(d + "/s.npy").abs().max().item<float>(), 1.0f);  // clipped, as images are by default
  // Image-to-image on the same model: a grid of inputs and edits, and a strength out of range in one line.
  auto e = run("edit -q -m " + d + "/run/checkpoint.safetensors --data folder:" + d + "/data -n 2 --steps 4 --sweep 0.5 1"
               " --class 1 -o " + d + "/edit.png --png-dir " + d + "/edits");
  EXPECT_EQ(e.code, 0) << e.output;
  EXPECT_TRUE(fs::exists(d + "/edit.png"));
  EXPECT_TRUE(fs::exists(d + "/edits/edit_1.png"));
  expect_one_line_error("edit -m " + d + "/run/checkpoint.safetensors --data folder:" + d + "/data --strength 2", "strength");
  expect_one_line_error("edit -m gmm:8gaussians", "image");
  auto ip = run("inpaint -q -m " + d + "/run/checkpoint.safetensors --data folder:" + d + "/data -n 2 --steps 6 --jump 2"
                " --resample 2 --region left -o " + d + "/inpaint.png");
  EXPECT_EQ(ip.code, 0) << ip.output;
  EXPECT_TRUE(fs::exists(d + "/inpaint.png"));
  expect_one_line_error("inpaint -m " + d + "/run/checkpoint.safetensors --data folder:" + d + "/data --jump 0", "--jump");
  expect_one_line_error("inpaint -m " + d + "/run/checkpoint.safetensors --data folder:" + d + "/data --region middle", "--region");
  auto n = run("nll -q -m " + d + "/run/checkpoint.safetensors --data folder:" + d + "/data --json");
  ASSERT_EQ(n.code, 0) << n.output;
  EXPECT_NE(n.output.find("\"decoder\":\"discrete\""), std::string::npos) << n.output;
  // A seeded random subset: same seed, same images, same numbers.
  const std::string sub = "nll -q --json -m " + d + "/run/checkpoint.safetensors --data folder:" + d +
                          "/data -n 4 --subset-seed 5";
  auto n1 = run(sub), n2 = run(sub);
  ASSERT_EQ(n1.code, 0) << n1.output;
  EXPECT_NE(n1.output.find("\"count\":4"), std::string::npos) << n1.output;
  EXPECT_EQ(n1.output, n2.output);
  // The generation figures and DDIM latents on the same tiny model: files appear, numbers are sane, seeds repeat.
  const std::string m = " -m " + d + "/run/checkpoint.safetensors --data folder:" + d + "/data ";
  auto p = run("progressive -q --json -m " + d + "/run/checkpoint.safetensors -n 2 --snapshots 5 --out " + d +
               "/prog.png --chain " + d + "/chain.png");
  ASSERT_EQ(p.code, 0) << p.output;
  EXPECT_NE(p.output.find("\"columns_t\":[50,38,26,13,1]"), std::string::npos) << p.output;
  EXPECT_TRUE(fs::exists(d + "/prog.png") && fs::exists(d + "/chain.png"));
  auto sl = run("shared-latent -q --json" + m + "--index 0,7 --t 5,50 -k 3 --out " + d + "/shared.png");
  ASSERT_EQ(sl.code, 0) << sl.output;
  EXPECT_TRUE(fs::exists(d + "/shared.png"));
  auto i1 = run("interpolate -q --json" + m + "--index 0,7 --t 10,25 --lambdas 5 --out " + d + "/interp.png");
  auto i2 = run("interpolate -q --json" + m + "--index 0,7 --t 10,25 --lambdas 5 --out " + d + "/interp2.png");
  ASSERT_EQ(i1.code, 0) << i1.output;
  EXPECT_EQ(i1.output.substr(0, i1.output.find("\"out\"")), i2.output.substr(0, i2.output.find("\"out\"")));
  auto bytes = [](const std::string& f) {
    std::ifstream in(f, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(bytes(d + "/interp.png"), bytes(d + "/interp2.png"));
  auto il = run("interpolate -q --json --ddim-latent --steps 10" + m + "--index 1,2 --lambdas 3 --out " + d + "/il.png");
  ASSERT_EQ(il.code, 0) << il.output;
  auto enc = run("encode -q --json" + m + "-n 4 --steps 10 --sweep 5,10 -o " + d + "/lat.npy --plot " + d + "/rec.png");
  ASSERT_EQ(enc.code, 0) << enc.output;
  EXPECT_NE(enc.output.find("\"rmse_255\""), std::string::npos);
  EXPECT_EQ(ddpm::read_npy(d + "/lat.npy").sizes(), (std::vector<int64_t>{4, 1, 8, 8}));
  EXPECT_TRUE(fs::exists(d + "/lat.labels.npy"));
  auto dec = run("decode -q -m " + d + "/run/checkpoint.safetensors --latents " + d + "/lat.npy --steps 10 --out " + d +
                 "/dec.png -o " + d + "/dec.npy");
  ASSERT_EQ(dec.code, 0) << dec.output;
  EXPECT_EQ(ddpm::read_npy(d + "/dec.npy").sizes(), (std::vector<int64_t>{4, 1, 8, 8}));
  // The same network exported to TorchScript samples the same images (to rounding: on the CPU the library computes
  // attention's products as grouped convolutions, the export as the plain batched products).
  auto ex = run("export " + d + "/run/checkpoint.safetensors -o " + d + "/net.pt");
  ASSERT_EQ(ex.code, 0) << ex.output;
  EXPECT_TRUE(fs::exists(d + "/net.json"));
  ASSERT_EQ(run("sample -q -m " + d + "/net.pt --sampler ddim --steps 5 --per-class -n 2 -o " + d + "/ts.npy").code, 0);
  ASSERT_EQ(run("sample -q -m " + d + "/run/checkpoint.safetensors --sampler ddim --steps 5 --per-class -n 2 -o " + d +
                "/ck.npy").code, 0);
  EXPECT_LT(ddpm::test::max_abs_diff(ddpm::read_npy(d + "/ts.npy"), ddpm::read_npy(d + "/ck.npy")), 1e-4);
  expect_one_line_error("export " + d + "/run/checkpoint.safetensors -o " + d + "/net.onnx", ".pt");
  // Evaluation: a classifier on the same folder, then FID / IS / a sweep with it.
  auto ct = run("classifier train -q --data folder:" + d + "/data --test folder:" + d +
                "/data --epochs 2 --batch 4 --width 4 --feature-dim 8 -o " + d + "/cls.safetensors");
  ASSERT_EQ(ct.code, 0) << ct.output;
  const std::string cls = " -c " + d + "/cls.safetensors --ref folder:" + d + "/data ";
  auto self = run("fid -q --json" + cls + "--samples folder:" + d + "/data");
  ASSERT_EQ(self.code, 0) << self.output;
  EXPECT_LT(nlohmann::json::parse(self.output)["fid"].get<double>(), 1e-6);  // a set against itself
  auto gen_fid = run("fid -q --json" + cls + "-m " + d + "/run/checkpoint.safetensors -n 6 --steps 3 --ref-cache " + d +
                     "/ref.safetensors");
  ASSERT_EQ(gen_fid.code, 0) << gen_fid.output;
  EXPECT_TRUE(fs::exists(d + "/ref.safetensors"));
  // Generated classes are balanced (item i of class i mod 2), and the class accuracy reported is the feature
  // classifier's agreement with them, recomputed here from the samples it scored.
  auto accuracy_of = [&](const std::string& npy) {
    auto c = ddpm::load_classifier(d + "/cls.safetensors");
    auto x = ddpm::read_npy(npy);
    auto labels = at::arange(x.size(0), at::TensorOptions().dtype(at::kLong)) % 2;
    return ddpm::classifier_apply(*c, x, false).argmax(1).eq(labels).to(at::kDouble).mean().item<double>();
  };
  auto cfg = run("fid -q --json" + cls + "-m " + d + "/run/checkpoint.safetensors -n 6 --steps 3 --guidance 2 -o " + d +
                 "/cfg.npy");
  ASSERT_EQ(cfg.code, 0) << cfg.output;
  EXPECT_EQ(ddpm::read_npy(d + "/cfg.npy").sizes(), (std::vector<int64_t>{6, 1, 8, 8}));
  EXPECT_NEAR(nlohmann::json::parse(cfg.output)["accuracy"].get<double>(), accuracy_of(d + "/cfg.npy"), 1e-12);
  // Classifier guidance of the unconditional mode: at scale 0 the samples are the model's at its null label, as
  // `ddpm sample` draws them; at scale 5 the classifier moves them.
  auto nc = run("classifier train -q --noisy --data folder:" + d + "/data --test folder:" + d + "/data --like " + d +
                "/run/checkpoint.safetensors --steps 4 --batch 4 --width 8 --channel-mult 1,2 -o " + d + "/nc.safetensors");
  ASSERT_EQ(nc.code, 0) << nc.output;
  // `ddpm info` describes both kinds of classifier, with their parameter counts.
  auto count = [](torch::nn::Module& m) {
    int64_t n = 0;
    for (const auto& p : m.parameters()) n += p.numel();
    return n;
  };
  auto ci = run("info --json " + d + "/cls.safetensors"), ni = run("info --json " + d + "/nc.safetensors");
  ASSERT_EQ(ci.code, 0) << ci.output;
  ASSERT_EQ(ni.code, 0) << ni.output;
  EXPECT_EQ(nlohmann::json::parse(ci.output)["parameters"].get<int64_t>(), count(*ddpm::load_classifier(d + "/cls.safetensors")));
  EXPECT_EQ(nlohmann::json::parse(ni.output)["parameters"].get<int64_t>(),
            count(*ddpm::load_noisy_classifier(d + "/nc.safetensors").net));
  EXPECT_NE(nlohmann::json::parse(ni.output)["kind"].get<std::string>().find("noise-aware"), std::string::npos);
  expect_one_line_error("info " + d + "/nc.safetensors --strip " + d + "/x.safetensors", "is a classifier");
  const std::string guide = "fid -q --json" + cls + "-m " + d + "/run/checkpoint.safetensors -n 6 --steps 3 --guide " + d +
                            "/nc.safetensors ";
  auto g0 = run(guide + "--classifier-scale 0 -o " + d + "/g0.npy");
  auto g5 = run(guide + "--classifier-scale 5 -o " + d + "/g5.npy");
  ASSERT_EQ(g0.code, 0) << g0.output;
  ASSERT_EQ(g5.code, 0) << g5.output;
  ASSERT_EQ(run("sample -q -m " + d + "/run/checkpoint.safetensors --sampler ddim --steps 3 -n 6 --class 0 --classifier " +
                d + "/nc.safetensors --classifier-scale 0 -o " + d + "/null.npy").code, 0);
  EXPECT_LT(ddpm::test::max_abs_diff(ddpm::read_npy(d + "/g0.npy"), ddpm::read_npy(d + "/null.npy")), 1e-6);
  EXPECT_GT(ddpm::test::max_abs_diff(ddpm::read_npy(d + "/g5.npy"), ddpm::read_npy(d + "/g0.npy")), 1e-3);
  EXPECT_NEAR(nlohmann::json::parse(g5.output)["accuracy"].get<double>(), accuracy_of(d + "/g5.npy"), 1e-12);
  EXPECT_EQ(nlohmann::json::parse(g5.output)["classifier_scale"].get<double>(), 5.0);
  expect_one_line_error(guide + "--guidance 1", "not both");
  expect_one_line_error("fid" + cls + "-m " + d + "/run/checkpoint.safetensors --classifier-scale 2", "--guide");
  auto is = run("is -q --json" + cls + "-m " + d + "/run/checkpoint.safetensors -n 6 --steps 3 --splits 2 --ref-cache " +
                d + "/ref.safetensors");
  ASSERT_EQ(is.code, 0) << is.output;
  EXPECT_TRUE(nlohmann::json::parse(is.output).contains("is")) << is.output;
  // The IS of the real images equals exp(E KL(p(y|x) || p(y))) written out here over the classifier's p(y|x).
  auto isr = run("is -q --json" + cls + "--samples folder:" + d + "/data --splits 2");
  ASSERT_EQ(isr.code, 0) << isr.output;
  {
    auto c = ddpm::load_classifier(d + "/cls.safetensors");
    auto set = ddpm::load_image_dataset("folder:" + d + "/data");
    auto x = ddpm::to_model_range(set.images, ddpm::padded_side(set.images.size(2)));
    auto p = at::softmax(ddpm::classifier_apply(*c, x, false).to(at::kDouble), 1);
    const int64_t n = p.size(0);
    double mean = 0;
    for (int64_t k = 0; k < 2; ++k) {
      auto part = p.slice(0, k * n / 2, (k + 1) * n / 2);
      auto py = part.mean(0, true);
      mean += std::exp((part * (part.log() - py.log())).sum(1).mean().item<double>()) / 2;
    }
    EXPECT_NEAR(nlohmann::json::parse(isr.output)["is"].get<double>(), mean, 1e-6 * mean) << isr.output;
  }
  auto sw = run("sweep -q --json" + cls + "-m " + d + "/run/checkpoint.safetensors -n 4 --samplers ddim,dpm++ "
                "--steps-list 2,3 --csv " + d + "/sweep.csv --plot " + d + "/sweep.png");
  ASSERT_EQ(sw.code, 0) << sw.output;
  EXPECT_EQ(nlohmann::json::parse(sw.output).size(), 4u);
  EXPECT_TRUE(fs::exists(d + "/sweep.png"));
  expect_one_line_error("fid" + cls + "-m " + d + "/run/checkpoint.safetensors --samples x.npy", "one of them");
  expect_one_line_error("fid -c " + d + "/run/checkpoint.safetensors --samples folder:" + d + "/data", "not a ddpm classifier");
  ddpm::save_images(d + "/big_", at::zeros({1, 1, 16, 16}));
  expect_one_line_error("interpolate" + m + "--t 51", "--t must be in 1..50");
  expect_one_line_error("shared-latent" + m + "--t 0", "--t must be in 1..50");
  expect_one_line_error("interpolate" + m + "--index 0,99", "--index 99");
  expect_one_line_error("interpolate" + m + "--index 0,1,2", "exactly two images");
  expect_one_line_error("encode" + m.substr(0, m.find(" --data")) + " --images " + d + "/big_0.png", "16×16");
  expect_one_line_error("decode -m " + d + "/run/checkpoint.safetensors --latents " + d + "/s.npy.missing", "s.npy.missing");
  ddpm::write_npy(d + "/x3.npy", at::zeros({10, 3}));
  expect_one_line_error("decode -m " + d + "/run/checkpoint.safetensors --latents " + d + "/x3.npy", "model's latents");
  expect_one_line_error("progressive -m gmm:8gaussians", "not an image model");
  expect_one_line_error("train --data folder:" + d + "/data --hidden 3 --out " + d + "/r2", "--hidden");
  expect_one_line_error("train --resume --channels 16 --out " + d + "/run", "--channels 8");
  expect_one_line_error("train --preset imagenet --out " + d + "/r3", "unknown preset");
  expect_one_line_error("train --data fashion-mnist:valid --out " + d + "/r4", "fashion-mnist");
  expect_one_line_error("train --device tpu --out " + d + "/r5", "unknown device");
}

TEST(Cli, Cifar10PresetBuildsThePapersModelAndTrainsOnACifarFolder) {
  // Two records in the CIFAR-10 binary layout stand in for the data set (1 label byte, 3072 pixel bytes each).
  const std::string d = dir() + "/cifar";
  fs::create_directories(d);
  std::string rec;
  for (int r = 0; r < 2; ++r) {
    rec += static_cast<char>(r);
    for (int i = 0; i < 3072; ++i) rec += static_cast<char>((i * 7 + r * 50) % 256);
  }
  for (int b = 1; b <= 5; ++b) std::ofstream(d + "/data_batch_" + std::to_string(b) + ".bin", std::ios::binary) << rec;
  auto r = run("train --preset cifar10-ddpm --data cifar10:" + d + " --describe");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("\"parameters\":35746307"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"ema_decay\":0.9999"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"warmup\":5000"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"random_flip\":true"), std::string::npos) << r.output;
  auto imp = run("train --preset cifar10-improved --data cifar10:" + d + " --describe");
  ASSERT_EQ(imp.code, 0) << imp.output;
  EXPECT_NE(imp.output.find("\"learned_range\""), std::string::npos);
  EXPECT_NE(imp.output.find("\"timesteps\":4000"), std::string::npos);
  EXPECT_NE(imp.output.find("\"num_res_blocks\":3"), std::string::npos);
  // One real step of the 35.7M-parameter model on the folder.
  auto t = run("train -q --preset cifar10-ddpm --data cifar10:" + d + " --steps 1 --batch 2 --out " + d + "/run");
  ASSERT_EQ(t.code, 0) << t.output;
  EXPECT_EQ(ddpm::load_train_state(d + "/run/checkpoint.safetensors").meta.at("step"), 1);
  fs::remove_all(d + "/run");  // 570 MB of state
}

TEST(Cli, SamplesFromATorchScriptModelMadeInPython) {
  const std::string data = DDPM_TEST_DATA;
  auto r = run("sample -q -m " + data + "/ts_gaussian.pt --sampler ddim --steps 100 -n 4000 --json");
  ASSERT_EQ(r.code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  for (int k = 0; k < 2; ++k) {
    EXPECT_NEAR(j["mean"][k].get<double>(), 0.1, 0.02);
    EXPECT_NEAR(j["std"][k].get<double>(), 0.4, 0.02);  // DDIM-100's own shrinkage is 3%
  }
  const std::string d = dir();
  fs::copy_file(data + "/ts_bad.pt", d + "/bad.pt", fs::copy_options::overwrite_existing);
  expect_one_line_error("sample -m " + d + "/bad.pt", "item_shape");  // no sidecar
  std::ofstream(d + "/bad.json") << R"({"item_shape": [2]})";
  expect_one_line_error("sample -m " + d + "/bad.pt", "forward(x)");
  fs::copy_file(data + "/ts_gaussian.pt", d + "/g.pt", fs::copy_options::overwrite_existing);
  std::ofstream(d + "/g.json") << R"({"item_shape": [2], "var_type": "learned"})";
  expect_one_line_error("sample -m " + d + "/g.pt", "must return [1, 4]");
  fs::copy_file(data + "/ts_conv.pt", d + "/c.pt", fs::copy_options::overwrite_existing);
  std::ofstream(d + "/c.json") << R"({"item_shape": [1, 8, 8]})";
  expect_one_line_error("sample -m " + d + "/c.pt", "num_classes");
}

TEST(Cli, RateDistortionWritesTheCurveAndThreePlots) {
  const std::string d = dir() + "/rd";
  fs::create_directories(d);
  auto r = run("rate-distortion -q -m gaussian:mean=0.1,std=0.4,dim=2 --data toy:gaussian -n 300 --timesteps 50 --json"
               " --csv " + d + "/rd.csv --prefix " + d + "/rd");
  ASSERT_EQ(r.code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_GT(j["end_rate_bpd"].get<double>(), 0.0);
  EXPECT_LT(j["end_distortion_rmse"].get<double>(), 51.0);  // below the data's own std on the 0–255 scale
  for (const char* f : {"/rd_distortion_t.png", "/rd_rate_t.png", "/rd_distortion_rate.png", "/rd.csv"})
    EXPECT_TRUE(fs::exists(d + f)) << f;
  std::ifstream csv(d + "/rd.csv");
  EXPECT_EQ(count_lines(std::string(std::istreambuf_iterator<char>(csv), {})), 51);  // header + t = 50 … 1
  expect_one_line_error("rate-distortion -m gaussian:dim=2 --data toy:gaussian --prefix /proc/nope/rd", "/proc/nope");
}

// A published model, end to end: import, info, sample, export, and the one-line mistakes.
TEST(Cli, ImportsPublishedModelsAndSamplesThem) {
  const std::string pre = std::string(DDPM_TEST_DATA) + "/pretrained/";
  const std::string out = dir() + "/imported.safetensors";
  auto r = run("import diffusers " + pre + "ddpm_tf -o " + out);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("wrote " + out + ": 565315 parameters"), std::string::npos) << r.output;
  r = run("info " + out);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("imported    diffusers " + pre + "ddpm_tf"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"downsample_padding\":\"tf_same\""), std::string::npos) << r.output;
  r = run("sample -m " + out + " --sampler ddim --steps 5 --num 2 --seed 1 -o " + dir() + "/imp.npy");
  ASSERT_EQ(r.code, 0) << r.output;
  r = run("sample -m diffusers:" + pre + "ddpm_tf --sampler ddim --steps 5 --num 2 --seed 1 -o " + dir() + "/imp2.npy");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(ddpm::test::max_abs_diff(ddpm::read_npy(dir() + "/imp.npy"), ddpm::read_npy(dir() + "/imp2.npy")), 0.0);
  std::string flags;
  std::getline(std::ifstream(pre + "improved.flags"), flags);
  r = run("import improved " + pre + "improved.pt --flags \"" + flags + "\" -o " + dir() + "/imp3.safetensors");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("note: class embedding"), std::string::npos) << r.output;
  r = run("export " + dir() + "/imp3.safetensors -o " + dir() + "/imp3.pt");
  ASSERT_EQ(r.code, 0) << r.output;
  expect_one_line_error(("import improved " + pre + "improved.pt --flags \"--num_channels 64\" -o " + dir() + "/x.safetensors"),
                        "--num_channels 64 contradicts the weights");
  expect_one_line_error(("import improved " + std::string(DDPM_TEST_DATA) + "/torch/hostile.pt -o " + dir() + "/x.safetensors"),
                        "refuses the pickle's global 'posix.system'");
  expect_one_line_error(("import diffusers " + dir() + " -o " + dir() + "/x.safetensors"), "not a diffusers model folder");
}

TEST(Cli, PlotDrawsTheCurvesOfAJsonLinesFile) {
  const std::string d = dir() + "/plot";
  fs::create_directories(d);
  std::ofstream(d + "/m.jsonl") << "{\"step\":100,\"w\":\"ema\",\"result\":{\"fid\":9.5}}\n"
                                   "{\"step\":200,\"w\":\"ema\",\"result\":{\"fid\":4.25}}\n"
                                   "{\"step\":100,\"w\":\"raw\",\"result\":{\"fid\":12}}\n"
                                   "{\"step\":200,\"loss\":0.03}\n";
  auto r = run("plot " + d + "/m.jsonl -y result.fid --group w --log-y -o " + d + "/p.png");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output, "ema: 100=9.5 200=4.25\nraw: 100=12\n");
  EXPECT_TRUE(fs::exists(d + "/p.png"));
  r = run("plot " + d + "/m.jsonl -y loss -o " + d + "/loss.png");
  EXPECT_EQ(r.output, "loss: 200=0.03\n");
  expect_one_line_error("plot " + d + "/m.jsonl -y result.fd -o " + d + "/x.png", "'result.fd'");
  expect_one_line_error("plot " + d + "/m.jsonl -y result.fid --where w -o " + d + "/x.png", "FIELD=VALUE");
  expect_one_line_error("plot " + d + "/none.jsonl -y loss -o " + d + "/x.png", "none.jsonl");
  std::ofstream(d + "/bad.jsonl") << "{\"step\":1}\n{\"step\":\n";
  expect_one_line_error("plot " + d + "/bad.jsonl -y loss -o " + d + "/x.png", "line 2");
}
