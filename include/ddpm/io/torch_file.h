// A safe reader for files written by PyTorch's torch.save (the zip format of PyTorch ≥ 1.6): the archive through
// LibTorch's PyTorchStreamReader, and a small pickle interpreter that builds only dicts, lists, tuples, numbers,
// strings and tensors. It accepts a fixed whitelist of globals (collections.OrderedDict, torch._utils's tensor and
// parameter rebuilders, the typed storage classes) and refuses every other one before anything runs — a pickle can
// name any Python callable, so a general unpickler executes code.
//
// (LibTorch's own torch::pickle_load cannot be used: in 1.13 every collections.OrderedDict, i.e. every state_dict,
// comes back as None.)
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace ddpm {

struct TorchFile {
  /// Every tensor of the pickled object in pickle order, nested dicts flattened with '.' ("a.b.weight"), list and
  /// tuple items named by their index. Tensors keep their stored dtype and shape (views are materialised).
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  /// Keys of the top-level dict, tensors or not (to recognise e.g. an optimizer state: "state", "param_groups").
  std::vector<std::string> top_keys;
};

/// Decodes the bytes of a torch.save zip archive. `what` names it in messages. Throws FormatError with one line for
/// anything else: a git-lfs pointer, the pre-1.6 (non-zip) format, a damaged archive, a pickle opcode or global
/// outside the whitelist (the global is named), a tensor view outside its storage.
TorchFile decode_torch_file(const std::string& bytes, const std::string& what = "torch file");
/// Reads PATH and decodes it; IoError when it cannot be read.
TorchFile load_torch_file(const std::string& path);

}  // namespace ddpm
