// What one forward pass of the U-Net costs, counted from its structure: parameters, multiply-add FLOPs per image by
// kind, and every convolution's shape (the shapes a benchmark measures the machine's peak at).
#pragma once

#include <cstdint>
#include <vector>

#include "ddpm/models/unet.h"

namespace ddpm {

/// One convolution layer as it runs on an image of the model's side.
struct ConvShape {
  int64_t in_channels, out_channels, kernel, stride;
  int64_t in_side, out_side;  ///< square feature maps
  double flops() const;       ///< 2 · MACs per image
};

struct UNetCost {
  int64_t parameters = 0;
  double conv_flops = 0;       ///< every convolution (3×3, 1×1 and the resampling ones), per image
  double attention_flops = 0;  ///< the two batched matrix products of each attention block, per image
  double linear_flops = 0;     ///< timestep MLP and the per-block timestep projections, per image
  double total_flops() const { return conv_flops + attention_flops + linear_flops; }
  std::vector<ConvShape> convs;  ///< in execution order
  double skip_floats = 0;        ///< the down path's outputs kept for the up path's concatenations, per image
  double largest_floats = 0;     ///< the largest tensor a layer reads or writes (a concatenation included), per image
  double attention_scores = 0;   ///< the largest attention score matrix (tokens² · heads), per image
  double activation_floats = 0;  ///< every convolution's input and output, summed: what autograd keeps, roughly
  /// Bytes one image needs during a forward pass without gradients (sampling): the skips, a few tensors of the
  /// largest size alive at once in a block, and two score matrices (scores, softmax).
  double inference_bytes() const { return 4.0 * (skip_floats + 6.0 * largest_floats + 2.0 * attention_scores); }
  /// Bytes one image needs in a training step: the activations autograd saves (about every convolution's input
  /// and output; the normalisations' and SiLUs' share them or are fused), the score matrices, and the gradients
  /// flowing back, of one forward pass's size. Measured against peak memory in docs/RESULTS.md (Reliability).
  double training_bytes() const { return 4.0 * (activation_floats + 2.0 * attention_scores) + inference_bytes(); }
};

/// The cost of UNet(options) on square images of `side` pixels (GroupNorm, SiLU, softmax and adds, being O(size),
/// are not counted).
UNetCost unet_cost(const UNetOptions& options, int64_t side);

}  // namespace ddpm
