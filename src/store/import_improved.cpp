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

// Importing an openai/improved-diffusion checkpoint with its flags (PRETRAINED.md).
namespace ddpm {
namespace {

namespace fs = std::filesystem;
using namespace import_detail;

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


}  // namespace

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


}  // namespace ddpm
