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
};

/// The cost of UNet(options) on square images of `side` pixels (GroupNorm, SiLU, softmax and adds, being O(size),
/// are not counted).
UNetCost unet_cost(const UNetOptions& options, int64_t side);

}  // namespace ddpm
