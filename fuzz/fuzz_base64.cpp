// Base64 as the server decodes request images: a decoded input re-encodes to itself (the decoder is strict, so
// there is exactly one spelling of each byte string), and a refused one never writes half an answer.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "serve/base64.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  std::string out;
  if (ddpm::serve::base64_decode(in, out)) {
    if (ddpm::serve::base64(out) != in) std::abort();
  }
  std::string round;
  if (size > 0 && (!ddpm::serve::base64_decode(ddpm::serve::base64(in), round) || round != in)) std::abort();
  return 0;
}
