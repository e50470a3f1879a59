// Safetensors bytes (checkpoints, imported weights, classifiers): a typed ddpm::Error or tensors that lie inside the
// buffer, whatever the header claims.
#include <cstdint>
#include <string>

#include "ddpm/errors.h"
#include "ddpm/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const auto st = ddpm::decode_safetensors(bytes, "fuzz");
    for (const auto& kv : st.tensors) (void)kv.second.sum();  // touch every element
  } catch (const ddpm::Error&) {
  }
  return 0;
}
