// The body of POST /v1/generations — what any client of `ddpm serve` can send: JSON parsed as the server parses it,
// then bound to a job by parse_generation against a catalog of the shipped models (DDPM_FUZZ_MODELS, default the
// repository's models/), images and masks in base64 included. A typed ddpm::Error (ApiError with a status of 400 or
// 404), or a job whose numbers lie in the limits.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "ddpm/errors.h"
#include "ddpm/serve/api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto catalog = [] {
    const char* dir = std::getenv("DDPM_FUZZ_MODELS");
    return ddpm::serve::Catalog::scan(dir ? dir : DDPM_SOURCE_DIR "/models");
  }();
  static const ddpm::serve::ServiceOptions limits;
  const auto body = nlohmann::json::parse(reinterpret_cast<const char*>(data), reinterpret_cast<const char*>(data) + size,
                                          nullptr, false);
  if (body.is_discarded()) return 0;
  try {
    const auto job = ddpm::serve::parse_generation(body, *catalog, limits);
    const auto& r = job.request;
    if (r.num < 1 || r.num > limits.max_batch) std::abort();
  } catch (const ddpm::serve::ApiError& e) {
    if (e.status() != 400 && e.status() != 404) std::abort();
  } catch (const ddpm::Error&) {
  }
  return 0;
}
