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

namespace ddpm {
namespace {

namespace fs = std::filesystem;
using Tensors = std::map<std::string, at::Tensor>;

std::string shape_text(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// ---------------------------------------------------------------------------------------------------------------
// Filling the project's U-Net from source tensors: for each of its parameters, where it comes from and how.

struct From {
  enum Op { copy, to_conv1x1, qkv, null_row } op = copy;
  std::vector<std::string> names;  // the source tensor; later names are legacy spellings
  int part = 0;                    // qkv: 0 = q, 1 = k, 2 = v
  int64_t heads = 1;               // qkv: heads of the block (rows are interleaved per head)
};

void fill(UNet& net, const Tensors& src, const std::function<From(const std::string&)>& from, const std::string& what) {
  std::set<std::string> used;
  at::NoGradGuard g;
  for (auto& kv : net.named_parameters()) {
    const From f = from(kv.key());
    const std::string* name = nullptr;
    for (const auto& n : f.names)
      if (src.count(n)) {
        name = &n;
        break;
      }
    if (!name)
      throw FormatError(what + " lacks the tensor '" + f.names.front() + "' (the config and the weights disagree)");
    used.insert(*name);
    at::Tensor t = src.at(*name).to(at::kFloat);
    auto& p = kv.value();
    switch (f.op) {
      case From::copy: break;
      case From::to_conv1x1:  // Linear [C, C] or Conv1d [C, C, 1] → Conv2d [C, C, 1, 1]; biases unchanged
        if (p.dim() == 4 && t.numel() == p.numel()) t = t.reshape(p.sizes());
        break;
      case From::qkv: {  // rows [3hd, 3hd+d) = q_h, then k_h, then v_h (improved-diffusion's QKVAttention)
        const int64_t C3 = t.size(0), C = C3 / 3, d = C / f.heads;
        if (C3 % 3 != 0 || C % f.heads != 0)
          throw FormatError(what + ": '" + *name + "' has shape " + shape_text(t.sizes()) +
                            ", which does not split into q, k, v of " + std::to_string(f.heads) + " heads");
        auto rest = t.sizes().slice(1).vec();
        std::vector<int64_t> shape = {f.heads, 3, d};
        shape.insert(shape.end(), rest.begin(), rest.end());
        t = t.reshape(shape).select(1, f.part).reshape({C, -1});
        if (p.dim() == 4) t = t.reshape(p.sizes());
        else t = t.reshape({C});
        break;
      }
      case From::null_row:  // the class embedding gains the null label's row (zero: the source never learned one)
        if (t.dim() == 2) t = at::cat({t, at::zeros({1, t.size(1)}, t.options())}, 0);
        break;
    }
    if (!t.sizes().equals(p.sizes()))
      throw FormatError(what + ": '" + *name + "' has shape " + shape_text(src.at(*name).sizes()) + ", the network needs " +
                        shape_text(p.sizes()) + " for it (the config and the weights disagree)");
    p.copy_(t);
  }
  std::vector<std::string> unused;
  for (const auto& [n, t] : src)
    if (!used.count(n)) unused.push_back(n);
  if (!unused.empty())
    throw FormatError(what + ": " + std::to_string(unused.size()) + " tensor(s) that the network has no place for, e.g. '" +
                      unused.front() + "' (the config and the weights disagree)");
  net.eval();
}

// Splits "a.b.c" into parts.
std::vector<std::string> split(const std::string& s, char sep = '.') {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

std::string join(const std::vector<std::string>& p, size_t from) {
  std::string out;
  for (size_t i = from; i < p.size(); ++i) out += (i > from ? "." : "") + p[i];
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// diffusers

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw IoError("cannot read '" + p.string() + "'");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    throw FormatError("'" + p.string() + "' is not valid JSON");
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

// ---------------------------------------------------------------------------------------------------------------
// improved-diffusion

struct Flags {
  std::map<std::string, std::string> given;
  std::map<std::string, std::string> value;  // given or improved-diffusion's default
  std::string str(const std::string& k) const { return value.at(k); }
  bool boolean(const std::string& k) const {
    std::string v = value.at(k);
    for (auto& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (v == "true" || v == "t" || v == "yes" || v == "y" || v == "1") return true;
    if (v == "false" || v == "f" || v == "no" || v == "n" || v == "0") return false;
    throw InvalidArgument("--" + k + " " + value.at(k) + ": expected True or False", k);
  }
  int64_t integer(const std::string& k) const {
    try {
      size_t pos = 0;
      const int64_t v = std::stoll(value.at(k), &pos);
      if (pos == value.at(k).size()) return v;
    } catch (const std::exception&) {
    }
    throw InvalidArgument("--" + k + " " + value.at(k) + ": expected an integer", k);
  }
  bool has(const std::string& k) const { return given.count(k) > 0; }
};

Flags parse_improved_flags(const std::string& s) {
  // script_util.model_and_diffusion_defaults() of openai/improved-diffusion.
  Flags f;
  f.value = {{"image_size", "64"},      {"num_channels", "128"},       {"num_res_blocks", "2"},
             {"num_heads", "4"},        {"num_heads_upsample", "-1"},  {"attention_resolutions", "16,8"},
             {"dropout", "0.0"},        {"learn_sigma", "False"},      {"sigma_small", "False"},
             {"class_cond", "False"},   {"diffusion_steps", "1000"},   {"noise_schedule", "linear"},
             {"timestep_respacing", ""}, {"use_kl", "False"},          {"predict_xstart", "False"},
             {"rescale_timesteps", "True"}, {"rescale_learned_sigmas", "True"}, {"use_checkpoint", "False"},
             {"use_scale_shift_norm", "True"}};
  // Training and sampling flags of the README's command lines: accepted, no effect on the network.
  static const std::set<std::string> ignored = {
      "lr", "batch_size", "microbatch", "ema_rate", "log_interval", "save_interval", "resume_checkpoint", "use_fp16",
      "fp16_scale_growth", "weight_decay", "lr_anneal_steps", "schedule_sampler", "data_dir", "num_samples",
      "use_ddim", "model_path", "clip_denoised"};
  static const std::set<std::string> guided = {"num_head_channels", "resblock_updown", "use_new_attention_order",
                                               "channel_mult", "large_size", "small_size"};
  std::istringstream in(s);
  std::vector<std::string> tok;
  for (std::string t; in >> t;) tok.push_back(t);
  for (size_t i = 0; i < tok.size(); ++i) {
    std::string t = tok[i];
    if (t.rfind("--", 0) != 0) throw InvalidArgument("--flags: expected --name value, got '" + t + "'", "flags");
    t = t.substr(2);
    std::string v;
    auto eq = t.find('=');
    if (eq != std::string::npos) {
      v = t.substr(eq + 1);
      t = t.substr(0, eq);
    } else {
      if (i + 1 >= tok.size()) throw InvalidArgument("--flags: --" + t + " has no value", "flags");
      v = tok[++i];
    }
    if (guided.count(t))
      throw InvalidArgument("--flags: --" + t + " is a guided-diffusion flag; guided-diffusion checkpoints are not "
                            "supported yet (their resblock_updown and attention layout differ)",
                            "flags");
    if (ignored.count(t)) continue;
    if (!f.value.count(t)) throw InvalidArgument("--flags: unknown improved-diffusion flag --" + t, "flags");
    f.value[t] = v;
    f.given[t] = v;
  }
  return f;
}

struct ImprovedLayout {
  int64_t in_channels = 0, ch = 0, out_channels = 0, res_blocks = 0, num_classes = 0;
  std::vector<int64_t> mult;
  std::vector<int64_t> attn_levels;
  bool scale_shift = false;
};

ImprovedLayout infer_improved(const Tensors& w, const std::string& what) {
  auto need = [&](const std::string& n) -> const at::Tensor& {
    auto it = w.find(n);
    if (it == w.end())
      throw FormatError(what + " lacks '" + n + "': not an improved-diffusion UNetModel state_dict");
    return it->second;
  };
  ImprovedLayout l;
  const auto& conv_in = need("input_blocks.0.0.weight");
  if (conv_in.dim() != 4) throw FormatError(what + ": input_blocks.0.0.weight is not a convolution");
  l.ch = conv_in.size(0);
  l.in_channels = conv_in.size(1);
  l.out_channels = need("out.2.weight").size(0);
  if (w.count("label_emb.weight")) l.num_classes = w.at("label_emb.weight").size(0);
  for (const auto& [n, t] : w)
    if (n.rfind("output_blocks.", 0) == 0 &&
        (n.find(".1.in_layers.") != std::string::npos || n.find(".2.in_layers.") != std::string::npos))
      throw FormatError(what + ": resampling ResBlocks (resblock_updown, guided-diffusion) are not supported yet");
  // The input blocks in order: ResBlocks, each maybe with attention, and a Downsample (".0.op") between levels.
  int64_t level_blocks = 0, cur = l.ch;
  bool level_attn = false;
  auto close_level = [&] {
    if (level_blocks == 0) throw FormatError(what + ": a level without ResBlocks");
    if (l.res_blocks == 0) l.res_blocks = level_blocks;
    if (level_blocks != l.res_blocks) throw FormatError(what + ": levels with different numbers of ResBlocks");
    if (cur % l.ch != 0) throw FormatError(what + ": level channels are not a multiple of the base channels");
    l.mult.push_back(cur / l.ch);
    if (level_attn) l.attn_levels.push_back(static_cast<int64_t>(l.mult.size()) - 1);
    level_blocks = 0;
    level_attn = false;
  };
  for (int64_t k = 1;; ++k) {
    const std::string b = "input_blocks." + std::to_string(k) + ".";
    if (w.count(b + "0.op.weight")) {
      close_level();
      continue;
    }
    if (!w.count(b + "0.in_layers.0.weight")) break;
    const auto& out_conv = need(b + "0.out_layers.3.weight");
    cur = out_conv.size(0);
    if (k == 1) l.scale_shift = need(b + "0.emb_layers.1.weight").size(0) == 2 * cur;
    if (w.count(b + "1.qkv.weight")) {
      if (level_blocks > 0 && !level_attn) throw FormatError(what + ": attention on only some blocks of a level");
      level_attn = true;
    }
    ++level_blocks;
  }
  close_level();
  return l;
}

From improved_from(const std::string& name, const ImprovedLayout& l, int64_t heads, int64_t heads_up) {
  auto p = split(name);
  const int64_t R = l.res_blocks, L = static_cast<int64_t>(l.mult.size());
  auto res = [](const std::string& prefix, const std::string& rest) {
    static const std::map<std::string, std::string> m = {{"norm1", "in_layers.0"},  {"conv1", "in_layers.2"},
                                                         {"temb_proj", "emb_layers.1"}, {"norm2", "out_layers.0"},
                                                         {"conv2", "out_layers.3"}, {"nin_shortcut", "skip_connection"}};
    auto parts = split(rest);
    return From{From::copy, {prefix + m.at(parts[0]) + "." + parts[1]}};
  };
  auto attn = [](const std::string& prefix, const std::string& rest, int64_t h) {
    auto parts = split(rest);
    if (parts[0] == "norm") return From{From::copy, {prefix + "norm." + parts[1]}};
    if (parts[0] == "proj_out") return From{From::to_conv1x1, {prefix + "proj_out." + parts[1]}};
    From f{From::qkv, {prefix + "qkv." + parts[1]}};
    f.part = parts[0] == "q" ? 0 : parts[0] == "k" ? 1 : 2;
    f.heads = h;
    return f;
  };
  const std::string& top = p[0];
  if (top == "temb_dense0") return {From::copy, {"time_embed.0." + p[1]}};
  if (top == "temb_dense1") return {From::copy, {"time_embed.2." + p[1]}};
  if (top == "class_emb") return {From::null_row, {"label_emb." + p[1]}};
  if (top == "conv_in") return {From::copy, {"input_blocks.0.0." + p[1]}};
  if (top == "norm_out") return {From::copy, {"out.0." + p[1]}};
  if (top == "conv_out") return {From::copy, {"out.2." + p[1]}};
  if (top == "mid") {
    if (p[1] == "attn1") return attn("middle_block.1.", join(p, 2), heads);
    return res(std::string("middle_block.") + (p[1] == "block1" ? "0." : "2."), join(p, 2));
  }
  const int64_t i = std::stoll(p[1]);
  const bool attn_level = std::find(l.attn_levels.begin(), l.attn_levels.end(), i) != l.attn_levels.end();
  if (top == "down") {
    const int64_t base = 1 + i * (R + 1);
    if (p[2] == "downsample") return {From::copy, {"input_blocks." + std::to_string(base + R) + ".0.op." + p[3]}};
    const std::string b = "input_blocks." + std::to_string(base + std::stoll(p[3])) + ".";
    if (p[2] == "block") return res(b + "0.", join(p, 4));
    return attn(b + "1.", join(p, 4), heads);
  }
  const int64_t base = (L - 1 - i) * (R + 1);
  if (p[2] == "upsample")
    return {From::copy, {"output_blocks." + std::to_string(base + R) + (attn_level ? ".2" : ".1") + ".conv." + p[3]}};
  const std::string b = "output_blocks." + std::to_string(base + std::stoll(p[3])) + ".";
  if (p[2] == "block") return res(b + "0.", join(p, 4));
  return attn(b + "1.", join(p, 4), heads_up);
}

std::string list_text(const std::vector<int64_t>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
  return out;
}

}  // namespace

ImportedModel import_diffusers(const std::string& dir) {
  const auto f = locate(dir);
  const auto config_path = f.unet_dir / "config.json";
  const auto config = read_json(config_path);
  ImportedModel m;
  m.source = {{"format", "diffusers"}, {"path", dir}, {"config", config}, {"notes", nlohmann::json::array()}};
  auto opts = diffusers_unet(config, config_path.string(), m.source["notes"]);
  nlohmann::json sched = nlohmann::json::object();
  if (!f.scheduler.empty()) {
    sched = read_json(f.scheduler);
    m.source["scheduler"] = sched;
  } else {
    m.source["notes"].push_back("no scheduler_config.json: DDPMScheduler's defaults (linear, T = 1000, fixed_small)");
  }
  m.diffusion = diffusers_scheduler(sched, f.scheduler.empty() ? "scheduler defaults" : f.scheduler.string(), m.source);
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

ImportedModel import_improved(const std::string& file, const std::string& flag_string) {
  const auto flags = parse_improved_flags(flag_string);
  auto tf = load_torch_file(file);
  for (const auto& k : tf.top_keys)
    if (k == "param_groups" || k == "state")
      throw FormatError("'" + file + "' is an optimizer state (opt*.pt: Adam moments), not model weights; import "
                        "ema_0.9999_*.pt (or model*.pt) from the same folder");
  Tensors w;
  for (auto& [n, t] : tf.tensors) w[n] = t;
  const auto l = infer_improved(w, "'" + file + "'");
  auto contradict = [&](const std::string& flag, const std::string& tensor, const std::string& tells) {
    throw InvalidArgument("--flags: --" + flag + " " + flags.given.at(flag) + " contradicts the weights: " + tensor +
                              " " + tells,
                          flag);
  };
  auto shape_of = [&](const std::string& n) { return shape_text(w.at(n).sizes()); };
  if (flags.has("num_channels") && flags.integer("num_channels") != l.ch)
    contradict("num_channels", "input_blocks.0.0.weight", "is " + shape_of("input_blocks.0.0.weight") +
                                                             " (num_channels " + std::to_string(l.ch) + ")");
  if (flags.has("num_res_blocks") && flags.integer("num_res_blocks") != l.res_blocks)
    contradict("num_res_blocks", "input_blocks.*", "hold " + std::to_string(l.res_blocks) + " ResBlocks per level");
  const bool learn_sigma = flags.boolean("learn_sigma");
  if (l.out_channels != l.in_channels && l.out_channels != 2 * l.in_channels)
    throw FormatError("'" + file + "': out.2.weight has " + std::to_string(l.out_channels) + " outputs for " +
                      std::to_string(l.in_channels) + " input channels");
  const bool weights_sigma = l.out_channels == 2 * l.in_channels;
  if (flags.has("learn_sigma") && learn_sigma != weights_sigma)
    contradict("learn_sigma", "out.2.weight", "is " + shape_of("out.2.weight"));
  const bool class_cond = flags.boolean("class_cond");
  if (flags.has("class_cond") && class_cond != (l.num_classes > 0))
    contradict("class_cond", "label_emb.weight", l.num_classes > 0 ? "is present" : "is absent");
  const bool ss = flags.boolean("use_scale_shift_norm");
  if (flags.has("use_scale_shift_norm") && ss != l.scale_shift)
    contradict("use_scale_shift_norm", "input_blocks.1.0.emb_layers.1.weight", "is " + shape_of("input_blocks.1.0.emb_layers.1.weight"));
  const int64_t image_size = flags.integer("image_size");
  if (image_size < 1) throw InvalidArgument("--flags: --image_size must be positive", "image_size");
  // improved-diffusion fixes channel_mult by image size; the weights must agree when the size is one of those.
  const std::map<int64_t, std::vector<int64_t>> standard = {{32, {1, 2, 2, 2}}, {64, {1, 2, 3, 4}},
                                                            {256, {1, 1, 2, 2, 4, 4}}};
  if (flags.has("image_size") && standard.count(image_size) && standard.at(image_size) != l.mult)
    contradict("image_size", "input_blocks.*", "give channel_mult " + list_text(l.mult) + ", not improved-diffusion's " +
                                                   list_text(standard.at(image_size)) + " for that size");
  // Attention: improved-diffusion places it at downsampling rates image_size / resolution.
  std::vector<int64_t> resolutions;
  for (int64_t lv : l.attn_levels) resolutions.push_back(image_size >> lv);
  if (flags.has("attention_resolutions")) {
    std::set<int64_t> want;
    std::stringstream ss_res(flags.str("attention_resolutions"));
    for (std::string item; std::getline(ss_res, item, ',');) {
      try {
        const int64_t r = std::stoll(item);
        if (r < 1) throw std::invalid_argument("r");
        for (int64_t lv = 0; lv < static_cast<int64_t>(l.mult.size()); ++lv)
          if (image_size / r == (int64_t{1} << lv)) want.insert(lv);
      } catch (const std::exception&) {
        throw InvalidArgument("--flags: --attention_resolutions " + flags.str("attention_resolutions") +
                                  ": expected numbers separated by commas",
                              "attention_resolutions");
      }
    }
    if (want != std::set<int64_t>(l.attn_levels.begin(), l.attn_levels.end()))
      contradict("attention_resolutions", "input_blocks.*.1.qkv.weight",
                 "place attention at resolutions " + list_text(resolutions));
  }
  const int64_t T = flags.integer("diffusion_steps");
  if (T < 1) throw InvalidArgument("--flags: --diffusion_steps must be at least 1", "diffusion_steps");

  UNetOptions o;
  o.in_channels = l.in_channels;
  o.image_size = image_size;
  o.base_channels = l.ch;
  o.channel_mult = l.mult;
  o.num_res_blocks = l.res_blocks;
  o.attention_resolutions = resolutions;
  o.dropout = std::stod(flags.str("dropout"));
  o.groups = 32;
  o.learn_sigma = weights_sigma;
  o.num_classes = l.num_classes;
  o.flip_sin_to_cos = true;
  o.freq_shift = 0;
  o.norm_eps = 1e-5;
  o.num_heads = flags.integer("num_heads");
  o.num_heads_upsample = flags.integer("num_heads_upsample");
  o.scale_shift_norm = l.scale_shift;
  o.timestep_scale = flags.boolean("rescale_timesteps") ? 1000.0 / static_cast<double>(T) : 1.0;

  ImportedModel m;
  m.source = {{"format", "improved-diffusion"}, {"path", file}, {"weights", file}, {"flags", flag_string},
              {"config", flags.value}, {"notes", nlohmann::json::array()}, {"clip_sample", true}};
  if (l.num_classes > 0) m.source["notes"].push_back("class embedding: a zero row appended as the null label (no guidance)");
  if (!flags.str("timestep_respacing").empty())
    m.source["timestep_respacing"] = flags.str("timestep_respacing");
  m.diffusion.timesteps = T;
  const auto schedule = flags.str("noise_schedule");
  if (schedule == "linear") m.diffusion.schedule = BetaSchedule::linear;
  else if (schedule == "cosine") m.diffusion.schedule = BetaSchedule::cosine;
  else throw InvalidArgument("--flags: --noise_schedule " + schedule + ": linear or cosine", "noise_schedule");
  m.diffusion.mean_type = flags.boolean("predict_xstart") ? MeanType::x0 : MeanType::eps;
  m.diffusion.var_type = weights_sigma ? VarType::learned_range
                                       : (flags.boolean("sigma_small") ? VarType::fixed_small : VarType::fixed_large);
  try {
    m.network = std::make_shared<UNet>(o);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument("--flags: " + std::string(e.what()), e.field());
  }
  const int64_t up_heads = o.num_heads_upsample > 0 ? o.num_heads_upsample : o.num_heads;
  fill(*m.network, w, [&](const std::string& n) { return improved_from(n, l, o.num_heads, up_heads); },
       "'" + file + "'");
  return m;
}

void save_imported(const ImportedModel& m, const std::string& path, const std::string& command) {
  TrainState st;
  for (const auto& kv : m.network->named_parameters()) st.tensors.emplace_back("ema." + kv.key(), kv.value().detach().contiguous());
  st.meta = {{"network", m.network->config()}, {"diffusion", m.diffusion}, {"step", 0}, {"imported", m.source}};
  save_checkpoint(path, st, {{"command", command}, {"contents", "ema-only"}});
}

}  // namespace ddpm
