#include "ddpm/store/import.h"

#include <c10/core/GradMode.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "ddpm/errors.h"
#include "ddpm/io/file.h"
#include "ddpm/io/safetensors.h"
#include "ddpm/io/torch_file.h"
#include "ddpm/store/checkpoint.h"
#include "import_support.h"

// Importing a diffusers UNet2DModel folder (PRETRAINED.md).
namespace ddpm {
namespace {

namespace fs = std::filesystem;
using namespace import_detail;

// ---------------------------------------------------------------------------------------------------------------
// diffusers

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw IoError("cannot read '" + p.string() + "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    throw FormatError("'" + p.string() + "' is not valid JSON");
  }
  if (!j.is_object()) throw FormatError("'" + p.string() + "' must hold a JSON object of settings");
  return j;
}

/// Runs `f` on a configuration, reporting a value of the wrong JSON type as a FormatError naming the file.
template <class F>
auto typed(const std::string& file, F&& f) {
  try {
    return f();
  } catch (const nlohmann::json::exception& e) {
    throw FormatError("'" + file + "': a value of the wrong type (" + std::string(e.what()) + ")");
  }
}

std::string value_text(const nlohmann::json& v) { return v.dump(); }

struct DiffusersFolder {
  fs::path unet_dir;
  fs::path scheduler;  // empty when none was found
};

DiffusersFolder locate(const std::string& dir) {
  fs::path d(dir);
  if (!fs::is_directory(d)) throw IoError("'" + dir + "' is not a folder (give the model's folder)");
  // A Hugging Face cache entry: models--ORG--NAME/snapshots/HASH.
  if (fs::is_directory(d / "snapshots") && !fs::exists(d / "config.json") && !fs::exists(d / "model_index.json")) {
    std::vector<fs::path> snaps;
    for (const auto& e : fs::directory_iterator(d / "snapshots"))
      if (e.is_directory()) snaps.push_back(e.path());
    if (snaps.size() != 1)
      throw InvalidArgument("'" + dir + "' is a Hugging Face cache entry with " + std::to_string(snaps.size()) +
                                " snapshots; name one: " + (d / "snapshots" / "HASH").string(),
                            "model");
    d = snaps.front();
  }
  DiffusersFolder f;
  if (fs::exists(d / "model_index.json") && fs::is_directory(d / "unet")) {
    auto idx = read_json(d / "model_index.json");
    if (idx.contains("unet") && idx["unet"].is_array() && idx["unet"].size() == 2 && idx["unet"][1] != "UNet2DModel")
      throw InvalidArgument("'" + (d / "model_index.json").string() + "': the pipeline's unet is " +
                                idx["unet"][1].dump() + "; only UNet2DModel (DDPM pipelines) can be imported",
                            "model");
    f.unet_dir = d / "unet";
    if (fs::exists(d / "scheduler" / "scheduler_config.json")) f.scheduler = d / "scheduler" / "scheduler_config.json";
  } else if (fs::exists(d / "config.json")) {
    f.unet_dir = d;
    if (fs::exists(d / "scheduler_config.json"))
      f.scheduler = d / "scheduler_config.json";
    else if (fs::exists(d.parent_path() / "scheduler" / "scheduler_config.json"))
      f.scheduler = d.parent_path() / "scheduler" / "scheduler_config.json";
  } else {
    throw FormatError("'" + dir + "' is not a diffusers model folder (no model_index.json with unet/, no config.json)");
  }
  return f;
}

bool is_lfs_pointer(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  char buf[24] = {};
  in.read(buf, sizeof buf);
  return std::string(buf, static_cast<size_t>(in.gcount())).rfind("version https://git-lfs", 0) == 0;
}

Tensors read_weights(const fs::path& unet_dir, std::string& file) {
  for (const char* name : {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                           "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin"}) {
    const auto p = unet_dir / name;
    if (!fs::exists(p)) continue;
    file = p.string();
    if (is_lfs_pointer(p))
      throw FormatError("'" + file + "' is a git-lfs pointer, not the weights: fetch the file itself (git lfs pull, "
                        "or the hub's download link)");
    Tensors out;
    if (p.extension() == ".safetensors") {
      for (auto& [n, t] : load_safetensors(file).tensors) out[n] = t;
    } else {
      for (auto& [n, t] : load_torch_file(file).tensors) out[n] = t;
    }
    return out;
  }
  if (fs::exists(unet_dir / "diffusion_pytorch_model.safetensors.index.json"))
    throw FormatError("'" + unet_dir.string() + "' holds sharded weights, which DDPM-sized models never need; not supported");
  throw IoError("'" + unet_dir.string() + "' has no diffusion_pytorch_model.safetensors or .bin");
}

[[noreturn]] void refuse_key(const std::string& file, const std::string& key, const nlohmann::json& v,
                             const std::string& why) {
  throw InvalidArgument("'" + file + "': " + key + " = " + value_text(v) + " is not supported (" + why + ")", key);
}

std::string strip_block(std::string t) {
  if (t.rfind("UNetRes", 0) == 0) t = t.substr(7);  // old diffusers names, which diffusers itself strips
  return t;
}

// config.json of a UNet2DModel → UNetOptions. Every key is honoured or refused.
UNetOptions diffusers_unet(const nlohmann::json& c, const std::string& file, nlohmann::json& notes) {
  auto has = [&](const char* k) { return c.contains(k) && !c[k].is_null(); };
  auto get_int = [&](const char* k, int64_t def) { return has(k) ? c[k].get<int64_t>() : def; };
  static const std::set<std::string> known = {
      "_class_name", "_diffusers_version", "_name_or_path", "_use_default_values", "in_channels", "out_channels",
      "sample_size", "block_out_channels", "layers_per_block", "down_block_types", "up_block_types", "mid_block_type",
      "add_attention", "attention_head_dim", "norm_num_groups", "attn_norm_num_groups", "norm_eps", "flip_sin_to_cos",
      "freq_shift", "downsample_padding", "downsample_type", "upsample_type", "time_embedding_type",
      "time_embedding_dim", "act_fn", "resnet_time_scale_shift", "mid_block_scale_factor", "center_input_sample",
      "class_embed_type", "num_class_embeds", "dropout", "num_train_timesteps"};
  for (auto it = c.begin(); it != c.end(); ++it)
    if (!known.count(it.key())) refuse_key(file, it.key(), it.value(), "a key this importer does not know");
  if (has("_class_name") && c["_class_name"] != "UNet2DModel")
    refuse_key(file, "_class_name", c["_class_name"], "only UNet2DModel, the DDPM network, is imported");

  UNetOptions o;
  o.in_channels = get_int("in_channels", 3);
  const int64_t out = get_int("out_channels", 3);
  if (out == 2 * o.in_channels) o.learn_sigma = true;
  else if (out != o.in_channels) refuse_key(file, "out_channels", c["out_channels"], "must be in_channels or twice it");
  if (!has("sample_size")) refuse_key(file, "sample_size", nullptr, "the image side must be known");
  if (c["sample_size"].is_array()) {
    auto s = c["sample_size"].get<std::vector<int64_t>>();
    if (s.size() != 2 || s[0] != s[1]) refuse_key(file, "sample_size", c["sample_size"], "only square images");
    o.image_size = s[0];
  } else {
    o.image_size = c["sample_size"].get<int64_t>();
  }
  std::vector<int64_t> boc = has("block_out_channels") ? c["block_out_channels"].get<std::vector<int64_t>>()
                                                      : std::vector<int64_t>{224, 448, 672, 896};
  if (boc.empty()) refuse_key(file, "block_out_channels", c["block_out_channels"], "needs at least one level");
  o.base_channels = boc[0];
  o.channel_mult.clear();
  for (int64_t b : boc) {
    if (b % boc[0] != 0) refuse_key(file, "block_out_channels", c["block_out_channels"], "each must be a multiple of the first");
    o.channel_mult.push_back(b / boc[0]);
  }
  const int64_t L = static_cast<int64_t>(boc.size());
  o.num_res_blocks = get_int("layers_per_block", 2);
  auto down = has("down_block_types") ? c["down_block_types"].get<std::vector<std::string>>()
                                      : std::vector<std::string>{"DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                                                                 "AttnDownBlock2D"};
  auto up = has("up_block_types") ? c["up_block_types"].get<std::vector<std::string>>()
                                  : std::vector<std::string>{"AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D",
                                                             "UpBlock2D"};
  if (static_cast<int64_t>(down.size()) != L || static_cast<int64_t>(up.size()) != L)
    refuse_key(file, "down_block_types", c.value("down_block_types", nlohmann::json()),
               "needs one block type per entry of block_out_channels, down and up");
  o.attention_resolutions.clear();
  for (int64_t i = 0; i < L; ++i) {
    const auto d = strip_block(down[i]), u = strip_block(up[L - 1 - i]);
    if (d != "DownBlock2D" && d != "AttnDownBlock2D")
      refuse_key(file, "down_block_types", c["down_block_types"], "only DownBlock2D and AttnDownBlock2D");
    if (u != "UpBlock2D" && u != "AttnUpBlock2D")
      refuse_key(file, "up_block_types", c["up_block_types"], "only UpBlock2D and AttnUpBlock2D");
    if ((d == "AttnDownBlock2D") != (u == "AttnUpBlock2D"))
      refuse_key(file, "up_block_types", c["up_block_types"],
                 "attention must sit at the same levels of the down and up paths");
    if (d == "AttnDownBlock2D") o.attention_resolutions.push_back(o.image_size >> i);
  }
  if (c.contains("mid_block_type") && c["mid_block_type"] != "UNetMidBlock2D")
    refuse_key(file, "mid_block_type", c["mid_block_type"], "only UNetMidBlock2D");
  o.mid_attention = c.value("add_attention", true);
  if (has("attention_head_dim")) o.head_channels = c["attention_head_dim"].get<int64_t>();  // else one head
  if (c.contains("norm_num_groups") && c["norm_num_groups"].is_null())
    refuse_key(file, "norm_num_groups", nullptr, "GroupNorm everywhere is needed");
  o.groups = get_int("norm_num_groups", 32);
  if (has("attn_norm_num_groups") && c["attn_norm_num_groups"].get<int64_t>() != o.groups)
    refuse_key(file, "attn_norm_num_groups", c["attn_norm_num_groups"], "must equal norm_num_groups");
  o.norm_eps = has("norm_eps") ? c["norm_eps"].get<double>() : 1e-5;
  o.flip_sin_to_cos = has("flip_sin_to_cos") ? c["flip_sin_to_cos"].get<bool>() : true;
  o.freq_shift = get_int("freq_shift", 0);
  if (o.freq_shift != 0 && o.freq_shift != 1) refuse_key(file, "freq_shift", c["freq_shift"], "only 0 or 1");
  const int64_t pad = get_int("downsample_padding", 1);
  if (pad == 0) o.downsample_padding = DownsamplePadding::tf_same;
  else if (pad == 1) o.downsample_padding = DownsamplePadding::symmetric;
  else refuse_key(file, "downsample_padding", c["downsample_padding"], "only 0 (TensorFlow SAME) or 1");
  for (const char* k : {"downsample_type", "upsample_type"})
    if (has(k) && c[k] != "conv") refuse_key(file, k, c[k], "only \"conv\" resampling");
  if (has("time_embedding_type") && c["time_embedding_type"] != "positional")
    refuse_key(file, "time_embedding_type", c["time_embedding_type"], "only \"positional\"");
  if (has("time_embedding_dim") && c["time_embedding_dim"].get<int64_t>() != 4 * o.base_channels)
    refuse_key(file, "time_embedding_dim", c["time_embedding_dim"], "only 4 × block_out_channels[0]");
  if (has("act_fn") && c["act_fn"] != "silu" && c["act_fn"] != "swish")
    refuse_key(file, "act_fn", c["act_fn"], "only silu");
  const std::string shift = c.value("resnet_time_scale_shift", std::string("default"));
  if (shift == "scale_shift") {
    o.scale_shift_norm = true;
    // diffusers' UNetMidBlock2D then gives its attention no GroupNorm unless attn_norm_num_groups is set.
    if (o.mid_attention && !has("attn_norm_num_groups"))
      refuse_key(file, "resnet_time_scale_shift", c["resnet_time_scale_shift"],
                 "with attn_norm_num_groups null diffusers drops the middle attention's GroupNorm, which this network "
                 "does not express");
  }
  else if (shift != "default") refuse_key(file, "resnet_time_scale_shift", c["resnet_time_scale_shift"], "only default or scale_shift");
  if (has("mid_block_scale_factor") && c["mid_block_scale_factor"].get<double>() != 1.0)
    refuse_key(file, "mid_block_scale_factor", c["mid_block_scale_factor"], "only 1");
  if (has("center_input_sample") && c["center_input_sample"].get<bool>())
    refuse_key(file, "center_input_sample", c["center_input_sample"], "inputs are taken in [-1, 1]");
  if (has("class_embed_type")) refuse_key(file, "class_embed_type", c["class_embed_type"], "only null (a label table)");
  if (has("num_class_embeds")) o.num_classes = c["num_class_embeds"].get<int64_t>();
  o.dropout = has("dropout") ? c["dropout"].get<double>() : 0.0;
  if (o.num_classes > 0) notes.push_back("class embedding: a zero row appended as the null label (no guidance)");
  return o;
}

// scheduler_config.json (DDPMScheduler and relatives) → DiffusionConfig.
DiffusionConfig diffusers_scheduler(const nlohmann::json& s, const std::string& file, nlohmann::json& source) {
  auto has = [&](const char* k) { return s.contains(k) && !s[k].is_null(); };
  DiffusionConfig d;
  d.timesteps = has("num_train_timesteps") ? s["num_train_timesteps"].get<int64_t>() : 1000;
  const int64_t T = d.timesteps;
  if (T < 1) refuse_key(file, "num_train_timesteps", s["num_train_timesteps"], "must be at least 1");
  const std::string sched = has("beta_schedule") ? s["beta_schedule"].get<std::string>() : "linear";
  const double b0 = has("beta_start") ? s["beta_start"].get<double>() : 1e-4;
  const double b1 = has("beta_end") ? s["beta_end"].get<double>() : 0.02;
  auto linspace = [&](double a, double b) {
    std::vector<double> v(T);
    for (int64_t i = 0; i < T; ++i) v[i] = T == 1 ? a : a + (b - a) * static_cast<double>(i) / static_cast<double>(T - 1);
    return v;
  };
  if (has("trained_betas")) {
    d.betas = s["trained_betas"].get<std::vector<double>>();
    if (static_cast<int64_t>(d.betas.size()) != T)
      refuse_key(file, "trained_betas", "[...]", "needs num_train_timesteps values");
  } else if (sched == "linear") {
    // The project's linear schedule scales its endpoints by 1000/T; diffusers' does not. Named only when equal.
    if (!(T == 1000 && b0 == 1e-4 && b1 == 0.02)) d.betas = linspace(b0, b1);
  } else if (sched == "scaled_linear") {
    d.betas = linspace(std::sqrt(b0), std::sqrt(b1));
    for (auto& b : d.betas) b *= b;
  } else if (sched == "squaredcos_cap_v2") {
    d.schedule = BetaSchedule::cosine;
  } else if (sched == "sigmoid") {  // GeoDiff's: sigmoid(linspace(−6, 6)) · (end − start) + start
    d.betas = linspace(-6, 6);
    for (auto& b : d.betas) b = 1.0 / (1.0 + std::exp(-b)) * (b1 - b0) + b0;
  } else {
    refuse_key(file, "beta_schedule", s["beta_schedule"], "linear, scaled_linear, squaredcos_cap_v2 or sigmoid");
  }
  const std::string var = has("variance_type") ? s["variance_type"].get<std::string>() : "fixed_small";
  if (var == "fixed_small" || var == "fixed_small_log") d.var_type = VarType::fixed_small;
  else if (var == "fixed_large" || var == "fixed_large_log") d.var_type = VarType::fixed_large;
  else if (var == "learned_range") d.var_type = VarType::learned_range;
  else if (var == "learned")
    refuse_key(file, "variance_type", s["variance_type"],
               "diffusers reads that output as a variance, this project as a log-variance");
  else refuse_key(file, "variance_type", s["variance_type"], "fixed_small, fixed_large or learned_range");
  const std::string pred = has("prediction_type") ? s["prediction_type"].get<std::string>() : "epsilon";
  if (pred == "epsilon") d.mean_type = MeanType::eps;
  else if (pred == "sample") d.mean_type = MeanType::x0;
  else if (pred == "v_prediction") d.mean_type = MeanType::v;
  else refuse_key(file, "prediction_type", s["prediction_type"], "epsilon, sample or v_prediction");
  if (has("clip_sample_range") && s["clip_sample_range"].get<double>() != 1.0)
    refuse_key(file, "clip_sample_range", s["clip_sample_range"], "only 1 (x̂0 clipped to [-1, 1])");
  if (has("thresholding") && s["thresholding"].get<bool>())
    refuse_key(file, "thresholding", s["thresholding"], "dynamic thresholding is not implemented");
  if (has("rescale_betas_zero_snr") && s["rescale_betas_zero_snr"].get<bool>())
    refuse_key(file, "rescale_betas_zero_snr", s["rescale_betas_zero_snr"], "not implemented");
  source["clip_sample"] = has("clip_sample") ? s["clip_sample"].get<bool>() : true;
  if (has("timestep_spacing")) source["timestep_spacing"] = s["timestep_spacing"];
  try {
    d.validate();
  } catch (const InvalidArgument& e) {
    throw InvalidArgument("'" + file + "': " + e.what(), "beta_schedule");
  }
  return d;
}

// project parameter name → diffusers tensor name(s).
From diffusers_from(const std::string& name, int64_t L) {
  auto p = split(name);
  auto res = [](const std::string& prefix, const std::string& rest) {
    static const std::map<std::string, std::string> m = {{"temb_proj", "time_emb_proj"},
                                                         {"nin_shortcut", "conv_shortcut"}};
    auto parts = split(rest);
    if (m.count(parts[0])) parts[0] = m.at(parts[0]);
    return From{From::copy, {prefix + join(parts, 0)}};
  };
  auto attn = [](const std::string& prefix, const std::string& rest) {
    auto parts = split(rest);  // q.weight
    const std::string leaf = parts.back();
    static const std::map<std::string, std::pair<std::string, std::string>> m = {
        {"norm", {"group_norm", "group_norm"}}, {"q", {"to_q", "query"}}, {"k", {"to_k", "key"}},
        {"v", {"to_v", "value"}}, {"proj_out", {"to_out.0", "proj_attn"}}};
    const auto& [now, legacy] = m.at(parts[0]);
    From f{parts[0] == "norm" ? From::copy : From::to_conv1x1, {prefix + now + "." + leaf, prefix + legacy + "." + leaf}};
    return f;
  };
  const std::string& top = p[0];
  if (top == "conv_in" || top == "conv_out") return {From::copy, {name}};
  if (top == "temb_dense0") return {From::copy, {"time_embedding.linear_1." + p[1]}};
  if (top == "temb_dense1") return {From::copy, {"time_embedding.linear_2." + p[1]}};
  if (top == "class_emb") return {From::null_row, {"class_embedding." + p[1]}};
  if (top == "norm_out") return {From::copy, {"conv_norm_out." + p[1]}};
  if (top == "mid") {
    if (p[1] == "attn1") return attn("mid_block.attentions.0.", join(p, 2));
    return res(std::string("mid_block.resnets.") + (p[1] == "block1" ? "0." : "1."), join(p, 2));
  }
  const int64_t i = std::stoll(p[1]);
  const bool is_down = top == "down";
  const std::string blocks = is_down ? "down_blocks." + std::to_string(i) + "." : "up_blocks." + std::to_string(L - 1 - i) + ".";
  if (p[2] == "block") return res(blocks + "resnets." + p[3] + ".", join(p, 4));
  if (p[2] == "attn") return attn(blocks + "attentions." + p[3] + ".", join(p, 4));
  if (p[2] == "downsample") return {From::copy, {blocks + "downsamplers.0.conv." + p[3]}};
  if (p[2] == "upsample") return {From::copy, {blocks + "upsamplers.0.conv." + p[3]}};
  return {From::copy, {name}};
}


}  // namespace

ImportedModel import_diffusers(const std::string& dir) {
  const auto f = locate(dir);
  const auto config_path = f.unet_dir / "config.json";
  const auto config = read_json(config_path);
  ImportedModel m;
  m.source = {{"format", "diffusers"}, {"path", dir}, {"config", config}, {"notes", nlohmann::json::array()}};
  auto opts = typed(config_path.string(), [&] { return diffusers_unet(config, config_path.string(), m.source["notes"]); });
  nlohmann::json sched = nlohmann::json::object();
  if (!f.scheduler.empty()) {
    sched = read_json(f.scheduler);
    m.source["scheduler"] = sched;
  } else {
    m.source["notes"].push_back("no scheduler_config.json: DDPMScheduler's defaults (linear, T = 1000, fixed_small)");
  }
  const std::string sched_file = f.scheduler.empty() ? "scheduler defaults" : f.scheduler.string();
  m.diffusion = typed(sched_file, [&] { return diffusers_scheduler(sched, sched_file, m.source); });
  if (opts.learn_sigma != learns_variance(m.diffusion.var_type))
    throw InvalidArgument("'" + config_path.string() + "': out_channels " + std::to_string(opts.in_channels * (opts.learn_sigma ? 2 : 1)) +
                              " does not match the scheduler's variance_type " + name_of(m.diffusion.var_type),
                          "variance_type");
  try {
    m.network = std::make_shared<UNet>(opts);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument("'" + config_path.string() + "': " + e.what(), e.field());
  }
  std::string weights;
  const auto tensors = read_weights(f.unet_dir, weights);
  m.source["weights"] = weights;
  const int64_t L = static_cast<int64_t>(opts.channel_mult.size());
  fill(*m.network, tensors, [&](const std::string& n) { return diffusers_from(n, L); }, "'" + weights + "'");
  return m;
}


}  // namespace ddpm
