// Private to the importers (import.cpp, import_diffusers.cpp, import_improved.cpp): filling the project's U-Net
// from a published checkpoint's tensors by a name map, and small string helpers.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ddpm/models/unet.h"

namespace ddpm::import_detail {

using Tensors = std::map<std::string, at::Tensor>;

/// "[a, b, c]"
std::string shape_text(at::IntArrayRef s);
/// "a,b,c"
std::string list_text(const std::vector<int64_t>& v);
/// Splits "a.b.c" into parts; join(parts, k) glues parts k.. back with dots.
std::vector<std::string> split(const std::string& s, char sep = '.');
std::string join(const std::vector<std::string>& p, size_t from);

/// Where one parameter of the project's U-Net comes from in the source tensors, and how.
struct From {
  enum Op { copy, to_conv1x1, qkv, null_row } op = copy;
  std::vector<std::string> names;  // the source tensor; later names are legacy spellings
  int part = 0;                    // qkv: 0 = q, 1 = k, 2 = v
  int64_t heads = 1;               // qkv: heads of the block (rows are interleaved per head)
};

/// Copies every parameter of `net` from `src` as `from` says; throws FormatError naming `what` for a missing or
/// misshapen tensor, or for source tensors left unused. Leaves the network in eval mode.
void fill(UNet& net, const Tensors& src, const std::function<From(const std::string&)>& from, const std::string& what);

}  // namespace ddpm::import_detail
