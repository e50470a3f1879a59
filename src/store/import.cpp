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

namespace ddpm {
namespace import_detail {

std::string shape_text(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Filling the project's U-Net from source tensors.

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
std::vector<std::string> split(const std::string& s, char sep) {
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

std::string list_text(const std::vector<int64_t>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
  return out;
}

}  // namespace import_detail

void save_imported(const ImportedModel& m, const std::string& path, const std::string& command) {
  TrainState st;
  for (const auto& kv : m.network->named_parameters()) st.tensors.emplace_back("ema." + kv.key(), kv.value().detach().contiguous());
  st.meta = {{"network", m.network->config()}, {"diffusion", m.diffusion}, {"step", 0}, {"imported", m.source}};
  save_checkpoint(path, st, {{"command", command}, {"contents", "ema-only"}});
}


}  // namespace ddpm
