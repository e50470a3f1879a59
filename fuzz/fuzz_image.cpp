// Image files as `--images` and the server's `image`/`mask` fields read them (stb behind decode_image), then as
// the model takes them: either a typed ddpm::Error or an image of the size the header promised.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "ddpm/data/images.h"
#include "ddpm/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const ddpm::ImageSet set = ddpm::decode_image(bytes, "fuzz");
    const auto& x = set.images;
    if (x.dim() != 4 || x.size(0) != 1 || x.size(2) < 1 || x.size(3) < 1) std::abort();
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{1, 32, 32}, std::vector<int64_t>{3, 32, 32}}) {
      try {
        const auto in = ddpm::images_for_model(set, shape, "fuzz");
        if (in.x.size(1) != shape[0] || in.x.size(2) != 32 || in.x.size(3) != 32) std::abort();
        (void)ddpm::mask_from_image(set, x.size(2), x.size(3), "fuzz");
      } catch (const ddpm::Error&) {
      }
    }
  } catch (const ddpm::Error&) {
  }
  return 0;
}
