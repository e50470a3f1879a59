// Models from and for Python: TorchScript files as denoisers, and export of this project's networks to TorchScript.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "ddpm/diffusion.h"

namespace ddpm {

class Network;

/// A TorchScript module seen as a Denoiser.
struct TorchScriptModel {
  Denoiser denoiser;
  int64_t arity = 2;  ///< 2: forward(x, t); 3: forward(x, t, y)
  std::string path;
};

/// Loads a TorchScript file (torch.jit.trace or torch.jit.script of a network) whose forward is (x, t) → output
/// or (x, t, y) → output; t holds the original timestep indices (int64 [B]) and y the labels (int64 [B]). A call
/// without labels passes `null_label` to a three-argument model. Throws IoError / FormatError (not TorchScript) or
/// InvalidArgument (another signature) with a message naming the file.
TorchScriptModel load_torchscript(const std::string& path, int64_t null_label, at::Device device = at::kCPU);

/// Writes `net` (a U-Net or an MLP of this project) as a self-contained TorchScript module for Python users:
/// torch.jit.load(path)(x, t) — or (x, t, y) when the network is class-conditional (y = num_classes is the null
/// label). The module is generated TorchScript code over the network's weights, parameters named as in the
/// checkpoint with '.' replaced by '_'. Throws InvalidArgument for a network type it cannot export, IoError on
/// write failure.
void export_torchscript(const Network& net, const std::string& path);

}  // namespace ddpm
