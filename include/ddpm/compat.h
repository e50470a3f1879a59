// The few API differences between LibTorch 1.13 (Debian) and LibTorch 2.x live here, and only here.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Logging.h>

namespace ddpm::compat {

/// A CPU generator with its own state, seeded; independent of the global default generator.
inline at::Generator make_cpu_generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

/// Serialised generator state (a uint8 tensor) and its restoration.
inline at::Tensor generator_state(const at::Generator& gen) { return gen.get_state(); }
inline void set_generator_state(at::Generator& gen, const at::Tensor& state) { gen.set_state(state); }

/// Silences LibTorch's own log lines below FATAL (c10d's socket warnings, for one): a CLI reports errors itself.
/// LibTorch 1.13 on Debian logs through glog; other builds through c10's logger.
inline void quiet_torch_logging() {
#ifdef C10_USE_GLOG
  FLAGS_minloglevel = 3;
#else
  FLAGS_caffe2_log_level = 3;
#endif
}

}  // namespace ddpm::compat
