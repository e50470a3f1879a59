#include "ddpm/models/torchscript.h"

#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "ddpm/errors.h"
#include "ddpm/io/file.h"
#include "ddpm/models/network.h"
#include "ddpm/models/unet.h"

namespace ddpm {

TorchScriptModel load_torchscript(const std::string& path, int64_t null_label, at::Device device) {
  if (!std::filesystem::is_regular_file(path)) throw IoError("TorchScript file not found: '" + path + "'");
  auto module = std::make_shared<torch::jit::Module>();
  try {
    *module = torch::jit::load(path, device);
  } catch (const c10::Error& e) {
    throw FormatError("'" + path + "' is not a TorchScript file (save one with torch.jit.save(torch.jit.script(net), "
                      "path) or torch.jit.trace)");
  }
  module->eval();
  if (!module->find_method("forward"))
    throw InvalidArgument("'" + path + "' has no forward method; ddpm needs forward(x, t) or forward(x, t, y)");
  const auto& args = module->get_method("forward").function().getSchema().arguments();
  const int64_t n = static_cast<int64_t>(args.size()) - 1;  // without self
  int64_t required = 0;
  for (size_t i = 1; i < args.size(); ++i)
    if (!args[i].default_value()) ++required;
  if (n < 2 || n > 3 || required < 2) {
    std::string sig;
    for (size_t i = 1; i < args.size(); ++i) sig += (i > 1 ? ", " : "") + args[i].name();
    throw InvalidArgument("'" + path + "' has forward(" + sig + "); ddpm needs forward(x, t) or forward(x, t, y)");
  }
  TorchScriptModel m;
  m.arity = n;
  m.path = path;
  m.denoiser = [module, n, null_label, path](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
    std::vector<torch::jit::IValue> in = {x, t};
    if (n == 3) in.emplace_back(y.defined() ? y : at::full({x.size(0)}, null_label, t.options()));
    torch::jit::IValue out;
    try {
      out = module->forward(in);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      // The interpreter's message ends with the Python-side error (e.g. "RuntimeError: ..."): keep that line.
      std::string what = e.what(), last;
      std::istringstream lines(what);
      for (std::string l; std::getline(lines, l);)
        if (l.find_first_not_of(" \t\"") != std::string::npos) last = l;
      if (last.size() > 1 && last.back() == '"') last.pop_back();
      throw InvalidArgument("TorchScript model '" + path + "' failed on input " + std::string(c10::str(x.sizes())) +
                            ": " + last);
    }
    if (!out.isTensor()) throw InvalidArgument("TorchScript model '" + path + "' must return one tensor");
    return out.toTensor();
  };
  return m;
}

namespace {

std::string num(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

/// Generates TorchScript source for the networks of this project, parameter by parameter.
class Writer {
 public:
  explicit Writer(std::ostringstream& os) : os_(os) {}
  void line(const std::string& s) { os_ << "    " << s << "\n"; }
  static std::string p(const std::string& name) {
    std::string s = name;
    for (auto& c : s)
      if (c == '.') c = '_';
    return "self." + s;
  }
  static std::string lin(const std::string& x, const std::string& name) {
    return "torch.linear(" + x + ", " + p(name + ".weight") + ", " + p(name + ".bias") + ")";
  }
  static std::string conv(const std::string& x, const std::string& name, int64_t stride = 1, int64_t pad = 1) {
    return "torch.conv2d(" + x + ", " + p(name + ".weight") + ", " + p(name + ".bias") + ", [" + std::to_string(stride) +
           ", " + std::to_string(stride) + "], [" + std::to_string(pad) + ", " + std::to_string(pad) + "])";
  }
  static std::string gn(const std::string& x, const std::string& name, int64_t groups, double eps = 1e-6) {
    return "torch.group_norm(" + x + ", " + std::to_string(groups) + ", " + p(name + ".weight") + ", " +
           p(name + ".bias") + ", " + num(eps) + ", False)";
  }
  /// The sinusoidal embedding of ddpm/models/embedding.h into variable `out`.
  void timestep_embedding(const std::string& out, int64_t dim, bool flip = false, int64_t shift = 1,
                          double scale = 1.0) {
    const int64_t half = dim / 2;
    line("freqs = torch.exp(torch.arange(" + std::to_string(half) + ", dtype=x.dtype, device=x.device) * " +
         num(-std::log(10000.0) / static_cast<double>(half - shift)) + ")");
    if (scale != 1.0)
      line("args = (t.to(x.dtype) * " + num(scale) + ").unsqueeze(1) * freqs.unsqueeze(0)");
    else
      line("args = t.to(x.dtype).unsqueeze(1) * freqs.unsqueeze(0)");
    if (flip)
      line(out + " = torch.cat([torch.cos(args), torch.sin(args)], 1)");
    else
      line(out + " = torch.cat([torch.sin(args), torch.cos(args)], 1)");
  }

 private:
  std::ostringstream& os_;
};

std::string mlp_source(const nlohmann::json& c) {
  std::ostringstream os;
  Writer w(os);
  const bool cond = c.value("num_classes", 0) > 0;
  os << "def forward(self, x, t" << (cond ? ", y" : "") << "):\n";
  w.timestep_embedding("emb", c.at("time_dim").get<int64_t>());
  w.line("temb = " + Writer::lin("torch.silu(" + Writer::lin("emb", "time_fc1") + ")", "time_fc2"));
  if (cond) w.line("temb = temb + torch.embedding(" + Writer::p("class_emb.weight") + ", y)");
  w.line("act = torch.silu(temb)");
  w.line("h = " + Writer::lin("x", "in_proj"));
  for (int64_t b = 0; b < c.at("blocks").get<int64_t>(); ++b) {
    const std::string k = std::to_string(b);
    w.line("u = " + Writer::lin("torch.silu(h)", "fc1." + k) + " + " + Writer::lin("act", "temb_proj." + k));
    w.line("h = h + " + Writer::lin("torch.silu(u)", "fc2." + k));
  }
  w.line("return " + Writer::lin("torch.silu(h)", "out_proj"));
  return os.str();
}

std::string unet_source(const nlohmann::json& c) {
  std::ostringstream os;
  Writer w(os);
  const auto o = UNetOptions::from_json(c);
  const int64_t ch = o.base_channels, groups = o.groups, size = o.image_size, nrb = o.num_res_blocks;
  const double eps = o.norm_eps;
  const auto& mult = o.channel_mult;
  const auto& attn_res = o.attention_resolutions;
  const bool cond = o.num_classes > 0;
  const int64_t L = static_cast<int64_t>(mult.size());
  auto has_attn = [&](int64_t level) {
    return std::find(attn_res.begin(), attn_res.end(), size >> level) != attn_res.end();
  };
  // Helpers: a residual block's two halves and an attention block.
  auto res = [&](const std::string& out, const std::string& in, const std::string& name, bool shortcut) {
    w.line("r = " + Writer::conv("torch.silu(" + Writer::gn(in, name + ".norm1", groups, eps) + ")", name + ".conv1"));
    if (o.scale_shift_norm) {
      w.line("e = " + Writer::lin("act", name + ".temb_proj") + ".unsqueeze(-1).unsqueeze(-1)");
      w.line("sc, sh = torch.chunk(e, 2, 1)");
      w.line("r = " + Writer::gn("r", name + ".norm2", groups, eps) + " * (1.0 + sc) + sh");
      w.line("r = " + Writer::conv("torch.silu(r)", name + ".conv2"));
    } else {
      w.line("r = r + " + Writer::lin("act", name + ".temb_proj") + ".unsqueeze(-1).unsqueeze(-1)");
      w.line("r = " + Writer::conv("torch.silu(" + Writer::gn("r", name + ".norm2", groups, eps) + ")", name + ".conv2"));
    }
    w.line(out + " = " + (shortcut ? Writer::conv(in, name + ".nin_shortcut", 1, 0) : in) + " + r");
  };
  auto attn = [&](const std::string& var, const std::string& name, int64_t channels, bool up) {
    const int64_t heads = UNet::heads_for(o, channels, up), d = channels / heads;
    w.line("a = " + Writer::gn(var, name + ".norm", groups, eps));
    w.line("B, C, H, W = a.size(0), a.size(1), a.size(2), a.size(3)");
    const std::string shape = heads > 1 ? "[B * " + std::to_string(heads) + ", " + std::to_string(d) + ", H * W]"
                                        : std::string("[B, C, H * W]");
    w.line("q = " + Writer::conv("a", name + ".q", 1, 0) + ".reshape(" + shape + ")");
    w.line("k = " + Writer::conv("a", name + ".k", 1, 0) + ".reshape(" + shape + ")");
    w.line("v = " + Writer::conv("a", name + ".v", 1, 0) + ".reshape(" + shape + ")");
    w.line("wt = torch.softmax(torch.bmm(q.transpose(1, 2), k) * " + num(1.0 / std::sqrt(static_cast<double>(d))) +
           ", -1)");
    w.line("o = torch.bmm(v, wt.transpose(1, 2)).reshape([B, C, H, W])");
    w.line(var + " = " + var + " + " + Writer::conv("o", name + ".proj_out", 1, 0));
  };
  os << "def forward(self, x, t" << (cond ? ", y" : "") << "):\n";
  w.timestep_embedding("emb", ch, o.flip_sin_to_cos, o.freq_shift, o.timestep_scale);
  w.line("temb = " + Writer::lin("torch.silu(" + Writer::lin("emb", "temb_dense0") + ")", "temb_dense1"));
  if (cond) w.line("temb = temb + torch.embedding(" + Writer::p("class_emb.weight") + ", y)");
  w.line("act = torch.silu(temb)");
  std::vector<std::pair<std::string, int64_t>> skips;  // variable, channels
  int64_t n = 0, cur = ch;
  auto fresh = [&] { return "s" + std::to_string(n++); };
  {
    auto v = fresh();
    w.line(v + " = " + Writer::conv("x", "conv_in"));
    skips.push_back({v, cur});
  }
  for (int64_t i = 0; i < L; ++i) {
    const int64_t out = ch * mult[i];
    for (int64_t j = 0; j < nrb; ++j) {
      const std::string name = "down." + std::to_string(i) + ".block." + std::to_string(j);
      auto v = fresh();
      res(v, skips.back().first, name, cur != out);
      cur = out;
      if (has_attn(i)) attn(v, "down." + std::to_string(i) + ".attn." + std::to_string(j), cur, false);
      skips.push_back({v, cur});
    }
    if (i != L - 1) {
      auto v = fresh();
      const std::string name = "down." + std::to_string(i) + ".downsample";
      if (o.downsample_padding == DownsamplePadding::tf_same)
        w.line(v + " = " + Writer::conv("torch.constant_pad_nd(" + skips.back().first + ", [0, 1, 0, 1], 0.0)", name, 2, 0));
      else
        w.line(v + " = " + Writer::conv(skips.back().first, name, 2, 1));
      skips.push_back({v, cur});
    }
  }
  res("h", skips.back().first, "mid.block1", false);
  if (o.mid_attention) attn("h", "mid.attn1", cur, false);
  res("h", "h", "mid.block2", false);
  for (int64_t i = L - 1; i >= 0; --i) {
    const int64_t out = ch * mult[i];
    for (int64_t j = 0; j < nrb + 1; ++j) {
      auto [sv, sc] = skips.back();
      skips.pop_back();
      w.line("h = torch.cat([h, " + sv + "], 1)");
      res("h", "h", "up." + std::to_string(i) + ".block." + std::to_string(j), cur + sc != out);
      cur = out;
      if (has_attn(i)) attn("h", "up." + std::to_string(i) + ".attn." + std::to_string(j), cur, true);
    }
    if (i != 0) {
      const auto& sv = skips.back().first;
      w.line("h = torch.upsample_nearest2d(h, [" + sv + ".size(2), " + sv + ".size(3)])");
      w.line("h = " + Writer::conv("h", "up." + std::to_string(i) + ".upsample"));
    }
  }
  w.line("return " + Writer::conv("torch.silu(" + Writer::gn("h", "norm_out", groups, eps) + ")", "conv_out"));
  return os.str();
}

}  // namespace

void export_torchscript(const Network& net, const std::string& path) {
  const auto config = net.config();
  const std::string type = config.value("type", std::string());
  std::string source;
  if (type == "unet")
    source = unet_source(config);
  else if (type == "mlp")
    source = mlp_source(config);
  else
    throw InvalidArgument("cannot export a network of type '" + type + "' to TorchScript");
  torch::jit::Module m("ddpm_" + type);
  for (const auto& kv : net.named_parameters(true)) {
    std::string name = kv.key();
    for (auto& c : name)
      if (c == '.') c = '_';
    m.register_parameter(name, kv.value().detach().to(at::kCPU).clone(), false);
  }
  m.register_attribute("ddpm_config", c10::StringType::get(), config.dump());
  m.define(source);
  m.eval();
  std::ostringstream out;
  m.save(out);
  write_file_atomic(path, out.str());
}

}  // namespace ddpm
