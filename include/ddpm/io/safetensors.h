// safetensors files (huggingface/safetensors format): an 8-byte little-endian header length, a JSON header
// naming every tensor's dtype, shape and byte range plus string metadata, then the raw little-endian data.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

namespace ddpm {

struct SafeTensors {
  std::vector<std::pair<std::string, at::Tensor>> tensors;  ///< in file order
  std::map<std::string, std::string> metadata;              ///< the "__metadata__" entry
  /// The tensor of that name; throws FormatError naming it when absent.
  const at::Tensor& at(const std::string& name) const;
  bool contains(const std::string& name) const;
};

/// Encodes tensors and metadata as safetensors bytes (header padded to 8 bytes).
std::string encode_safetensors(const SafeTensors& st);
/// Decodes safetensors bytes; throws FormatError on any violation of the format.
SafeTensors decode_safetensors(const std::string& bytes, const std::string& what = "safetensors data");

/// Writes atomically; throws IoError.
void save_safetensors(const std::string& path, const SafeTensors& st);
/// Reads and validates; throws IoError / FormatError naming the path.
SafeTensors load_safetensors(const std::string& path);

}  // namespace ddpm
