#include "ddpm/data/images.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>

#include "ddpm/errors.h"
#include "ddpm/io/file.h"
#include "ddpm/io/plot.h"
#include "ddpm/resources.h"

extern "C" {
unsigned char* stbi_load_from_memory(const unsigned char* buffer, int len, int* x, int* y, int* channels, int desired);
int stbi_info_from_memory(const unsigned char* buffer, int len, int* x, int* y, int* comp);
void stbi_image_free(void* p);
const char* stbi_failure_reason(void);
}

namespace ddpm {
namespace {

namespace fs = std::filesystem;

/// Reads a whole file, decompressing gzip transparently (zlib's gzread passes plain files through).
std::string read_maybe_gz(const std::string& path) {
  if (!fs::exists(path)) throw IoError("file not found: '" + path + "'");
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw IoError("cannot open '" + path + "'");
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  int err = 0;
  const char* msg = gzerror(f, &err);
  const bool failed = n < 0 || (err != Z_OK && err != Z_STREAM_END);
  const std::string why = failed ? msg : "";
  gzclose(f);
  if (failed) throw FormatError("'" + path + "' is a damaged gzip file: " + why);
  return out;
}

uint32_t be32(const std::string& s, size_t at) {
  return (uint32_t(uint8_t(s[at])) << 24) | (uint32_t(uint8_t(s[at + 1])) << 16) | (uint32_t(uint8_t(s[at + 2])) << 8) |
         uint32_t(uint8_t(s[at + 3]));
}

}  // namespace

ImageSet read_idx(const std::string& images_path, const std::string& labels_path) {
  const std::string b = read_maybe_gz(images_path);
  auto bad = [&](const std::string& p, const std::string& why) { return FormatError("'" + p + "' is not an IDX file: " + why); };
  if (b.size() < 16 || be32(b, 0) != 2051) throw bad(images_path, "expected magic 2051 (unsigned byte, 3 dimensions)");
  const int64_t n = be32(b, 4), h = be32(b, 8), w = be32(b, 12);
  if (h == 0 || w == 0 || h > kMaxImageSide || w > kMaxImageSide)
    throw bad(images_path, "its images are " + std::to_string(h) + "×" + std::to_string(w) + " pixels (sides 1 to " +
                               std::to_string(kMaxImageSide) + ")");
  // The header's product can exceed 64 bits; the bytes present bound every real file.
  if (bytes_of(n, h, w) != b.size() - 16)
    throw bad(images_path, "truncated (" + std::to_string(b.size()) + " bytes for " + std::to_string(n) + " images)");
  ImageSet s;
  s.images = at::empty({n, 1, h, w}, at::TensorOptions().dtype(at::kByte));
  if (n > 0) std::memcpy(s.images.data_ptr(), b.data() + 16, b.size() - 16);  // (an empty tensor has no data)
  if (!labels_path.empty()) {
    const std::string l = read_maybe_gz(labels_path);
    if (l.size() < 8 || be32(l, 0) != 2049) throw bad(labels_path, "expected magic 2049 (labels)");
    if (be32(l, 4) != static_cast<uint32_t>(n) || l.size() != static_cast<size_t>(8 + n))
      throw bad(labels_path, "holds " + std::to_string(be32(l, 4)) + " labels for " + std::to_string(n) + " images");
    auto lab = at::empty({n}, at::TensorOptions().dtype(at::kByte));
    if (n > 0) std::memcpy(lab.data_ptr(), l.data() + 8, static_cast<size_t>(n));
    s.labels = lab.to(at::kLong);
    s.num_classes = n ? s.labels.max().item<int64_t>() + 1 : 0;
  }
  return s;
}

ImageSet read_cifar10_batches(const std::vector<std::string>& files) {
  std::vector<at::Tensor> imgs, labs;
  for (const auto& f : files) {
    const std::string b = read_maybe_gz(f);
    const size_t rec = 1 + 3072;
    if (b.empty() || b.size() % rec != 0)
      throw FormatError("'" + f + "' is not a CIFAR-10 binary batch (size not a multiple of 3073 bytes)");
    const int64_t n = static_cast<int64_t>(b.size() / rec);
    auto raw = at::empty({n, static_cast<int64_t>(rec)}, at::TensorOptions().dtype(at::kByte));
    std::memcpy(raw.data_ptr(), b.data(), b.size());
    labs.push_back(raw.select(1, 0).to(at::kLong));
    imgs.push_back(raw.slice(1, 1).reshape({n, 3, 32, 32}).clone());
  }
  ImageSet s;
  s.images = at::cat(imgs);
  s.labels = at::cat(labs);
  s.num_classes = 10;
  s.class_names = known_class_names("cifar10");
  if (s.labels.max().item<int64_t>() > 9) throw FormatError("CIFAR-10 labels must be 0..9");
  return s;
}

namespace {

struct Decoded {
  int w = 0, h = 0, c = 0;
  std::vector<uint8_t> pixels;
};

/// One encoded PNG/JPEG/BMP; the size is read from the header and checked before any pixel is decoded.
Decoded decode_one(const std::string& bytes, const std::string& name) {
  if (bytes.empty()) throw FormatError("'" + name + "' is empty, not an image");
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw FormatError("'" + name + "' is too large to be an image");
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const int len = static_cast<int>(bytes.size());
  Decoded d;
  if (!stbi_info_from_memory(data, len, &d.w, &d.h, &d.c))
    throw FormatError("cannot decode '" + name + "': " + stbi_failure_reason() + " (give a PNG, JPEG or BMP image)");
  if (d.w < 1 || d.h < 1 || d.w > kMaxImageSide || d.h > kMaxImageSide)
    throw FormatError("'" + name + "' is " + std::to_string(d.w) + "×" + std::to_string(d.h) + "; images may have at most " +
                      std::to_string(kMaxImageSide) + " pixels a side");
  unsigned char* p = stbi_load_from_memory(data, len, &d.w, &d.h, &d.c, 0);
  if (!p) throw FormatError("cannot decode '" + name + "': " + stbi_failure_reason());
  d.pixels.assign(p, p + static_cast<size_t>(d.w) * d.h * d.c);
  stbi_image_free(p);
  return d;
}

/// Decoded images of one size into [N, C, H, W]: grey stays 1 channel only if every image is grey; alpha is dropped.
ImageSet stack_decoded(const std::vector<Decoded>& images, const std::vector<std::string>& names) {
  int c_max = 1;
  for (size_t i = 0; i < images.size(); ++i) {
    const auto& d = images[i];
    if (d.w != images[0].w || d.h != images[0].h)
      throw FormatError("'" + names[i] + "' is " + std::to_string(d.w) + "×" + std::to_string(d.h) + ", but the first image is " +
                        std::to_string(images[0].w) + "×" + std::to_string(images[0].h) + " (all images must have one size)");
    c_max = std::max(c_max, d.c >= 3 ? 3 : 1);
  }
  const int64_t N = static_cast<int64_t>(images.size()), C = c_max, h0 = images[0].h, w0 = images[0].w;
  ImageSet s;
  s.images = at::empty({N, C, h0, w0}, at::TensorOptions().dtype(at::kByte));
  auto out = s.images.accessor<uint8_t, 4>();
  for (int64_t i = 0; i < N; ++i) {
    const int c = images[i].c;
    for (int64_t y = 0; y < h0; ++y)
      for (int64_t x = 0; x < w0; ++x) {
        const uint8_t* px = &images[i].pixels[(static_cast<size_t>(y) * w0 + x) * c];
        for (int64_t ch = 0; ch < C; ++ch) out[i][ch][y][x] = c >= 3 ? px[ch] : px[0];  // grey (+alpha) → copies
      }
  }
  return s;
}

}  // namespace

ImageSet read_image_files(const std::vector<std::string>& files) {
  if (files.empty()) throw InvalidArgument("no image files given");
  std::vector<Decoded> images;
  for (const auto& f : files) {
    if (!fs::is_regular_file(f)) throw IoError("image not found: '" + f + "'");
    images.push_back(decode_one(read_file(f), f));
    if (images.size() == 1) {
      // Every image has the first one's size: the decoded pixels and the stacked set need twice its bytes per file.
      const auto& d = images.front();
      require_memory(bytes_of(files.size(), static_cast<uint64_t>(d.w) * d.h, 2 * std::max(d.c, 3)),
                     "reading " + std::to_string(files.size()) + " images of " + std::to_string(d.w) + "×" +
                         std::to_string(d.h),
                     "use fewer or smaller images", "data");
    }
  }
  return stack_decoded(images, files);
}

ImageSet decode_image(const std::string& bytes, const std::string& name) {
  return stack_decoded({decode_one(bytes, name)}, {name});
}

ImageSet read_image_folder(const std::string& dir) {
  if (!fs::is_directory(dir)) throw IoError("image folder not found: '" + dir + "'");
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
    if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) throw IoError("no PNG or JPEG images in '" + dir + "'");
  std::map<std::string, int64_t> classes;
  for (const auto& f : files) {
    auto rel = fs::relative(f.parent_path(), dir).string();
    if (rel != ".") classes.emplace(rel, 0);
  }
  int64_t k = 0;
  for (auto& [name, id] : classes) id = k++;
  const bool labelled = !classes.empty();
  std::vector<std::string> names;
  std::vector<int64_t> labels;
  for (const auto& f : files) {
    names.push_back(f.string());
    if (labelled) {
      auto rel = fs::relative(f.parent_path(), dir).string();
      labels.push_back(rel == "." ? -1 : classes[rel]);
    }
  }
  ImageSet s = read_image_files(names);
  if (labelled) {
    if (std::find(labels.begin(), labels.end(), -1) != labels.end())
      throw FormatError("'" + dir + "' mixes images in sub-folders (classes) with images at its top level");
    s.labels = at::tensor(labels, at::TensorOptions().dtype(at::kLong));
    s.num_classes = static_cast<int64_t>(classes.size());
    for (const auto& kv : classes) s.class_names.push_back(kv.first);
  }
  return s;
}

std::string fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

bool is_image_spec(const std::string& spec) {
  return spec.rfind("fashion-mnist", 0) == 0 || spec.rfind("idx:", 0) == 0 || spec.rfind("cifar10:", 0) == 0 ||
         spec.rfind("folder:", 0) == 0 || (fs::is_directory(spec) && spec.rfind("toy:", 0) != 0);
}

ImageSet load_image_dataset(const std::string& spec) {
  auto split_of = [&](std::string& rest) {
    std::string split = "train";
    const auto colon = rest.rfind(':');
    if (colon != std::string::npos) {
      const std::string tail = rest.substr(colon + 1);
      if (tail == "train" || tail == "test") {
        split = tail;
        rest = rest.substr(0, colon);
      }
    }
    return split;
  };
  if (spec.rfind("fashion-mnist", 0) == 0) {
    std::string rest = spec;
    const std::string split = split_of(rest);
    if (rest != "fashion-mnist") throw InvalidArgument("unknown data set '" + spec + "' (fashion-mnist, fashion-mnist:test)");
    const std::string d = fashion_mnist_dir(), p = split == "train" ? "train" : "t10k";
    if (!fs::exists(d + "/" + p + "-images-idx3-ubyte.gz"))
      throw IoError("Fashion-MNIST is not installed: run 'apt-get install dataset-fashion-mnist' (or scripts/setup.sh)");
    auto s = read_idx(d + "/" + p + "-images-idx3-ubyte.gz", d + "/" + p + "-labels-idx1-ubyte.gz");
    s.class_names = known_class_names("fashion-mnist");
    s.num_classes = 10;
    return s;
  }
  if (spec.rfind("idx:", 0) == 0) {
    const std::string rest = spec.substr(4);
    const auto comma = rest.find(',');
    return read_idx(rest.substr(0, comma), comma == std::string::npos ? "" : rest.substr(comma + 1));
  }
  if (spec.rfind("cifar10:", 0) == 0) {
    std::string rest = spec.substr(8);
    const std::string split = split_of(rest);
    std::vector<std::string> files;
    if (split == "train")
      for (int i = 1; i <= 5; ++i) files.push_back(rest + "/data_batch_" + std::to_string(i) + ".bin");
    else
      files.push_back(rest + "/test_batch.bin");
    for (const auto& f : files)
      if (!fs::exists(f)) throw IoError("CIFAR-10 batch not found: '" + f + "' (give the cifar-10-batches-bin folder)");
    return read_cifar10_batches(files);
  }
  if (spec.rfind("folder:", 0) == 0) return read_image_folder(spec.substr(7));
  if (fs::is_directory(spec)) return read_image_folder(spec);
  throw InvalidArgument("unknown image data '" + spec + "' (fashion-mnist[:test], idx:IMAGES[,LABELS], cifar10:DIR[:test], folder:DIR)");
}

at::Tensor to_model_range(const at::Tensor& images, int64_t min_side) {
  auto x = images.to(at::kFloat) / 127.5 - 1.0;
  const int64_t h = x.size(2), w = x.size(3);
  if (min_side > 0 && (h < min_side || w < min_side)) {
    const int64_t ph = std::max<int64_t>(0, min_side - h), pw = std::max<int64_t>(0, min_side - w);
    x = at::constant_pad_nd(x, {pw / 2, pw - pw / 2, ph / 2, ph - ph / 2}, -1.0);
  }
  return x.contiguous();
}

namespace {

at::Tensor to_bytes(const at::Tensor& images) {
  return ((images.detach().to(at::kCPU, at::kFloat).clamp(-1, 1) + 1) * 127.5).round().to(at::kByte);
}

}  // namespace

at::Tensor ModelImages::crop(const at::Tensor& y) const {
  return y.slice(2, pad_h, y.size(2) - pad_h).slice(3, pad_w, y.size(3) - pad_w);
}

at::Tensor ModelImages::pad_mask(const at::Tensor& inner) const {
  auto mask = at::ones({inner.size(0), 1, x.size(2), x.size(3)});
  mask.narrow(2, pad_h, inner.size(2)).narrow(3, pad_w, inner.size(3)).copy_(inner);
  return mask;
}

ModelImages images_for_model(const ImageSet& set, const std::vector<int64_t>& item_shape, const std::string& source) {
  if (item_shape.size() != 3) throw InvalidArgument("this model does not make images", "image");
  const int64_t C = item_shape[0], H = item_shape[1], W = item_shape[2];
  at::Tensor images = set.images;
  if (images.size(1) == 1 && C == 3) images = images.expand({images.size(0), 3, images.size(2), images.size(3)});
  if (images.size(1) == 3 && C == 1) images = images.to(at::kFloat).mean(1, true).round().to(at::kByte);
  const int64_t h0 = images.size(2), w0 = images.size(3);
  if (images.size(1) != C || h0 > H || w0 > W || (H - h0) % 2 || (W - w0) % 2 || (h0 != H && padded_side(h0) != H) ||
      (w0 != W && padded_side(w0) != W))
    throw InvalidArgument("the images of " + source + " are " + std::to_string(set.images.size(1)) + "×" +
                              std::to_string(h0) + "×" + std::to_string(w0) + " (C×H×W); the model takes " +
                              std::to_string(C) + "×" + std::to_string(H) + "×" + std::to_string(W),
                          "image");
  ModelImages b;
  b.x = to_model_range(images, H);
  b.labels = set.labels;
  b.pad_h = (H - h0) / 2;
  b.pad_w = (W - w0) / 2;
  return b;
}

at::Tensor region_mask(const std::string& region, int64_t H, int64_t W) {
  auto m = at::ones({1, 1, H, W});
  if (region == "right") m.narrow(3, W / 2, W - W / 2).zero_();
  else if (region == "left") m.narrow(3, 0, W / 2).zero_();
  else if (region == "top") m.narrow(2, 0, H / 2).zero_();
  else if (region == "bottom") m.narrow(2, H / 2, H - H / 2).zero_();
  else if (region == "centre" || region == "center") m.narrow(2, H / 4, H / 2).narrow(3, W / 4, W / 2).zero_();
  else throw InvalidArgument("unknown region '" + region + "' (right, left, top, bottom, centre; or give a mask image)", "region");
  return m;
}

at::Tensor mask_from_image(const ImageSet& mask, int64_t H, int64_t W, const std::string& source) {
  const auto& m = mask.images;
  if (m.size(2) != H || m.size(3) != W)
    throw InvalidArgument("the mask " + source + " is " + std::to_string(m.size(3)) + "×" + std::to_string(m.size(2)) +
                              "; the images are " + std::to_string(W) + "×" + std::to_string(H),
                          "mask");
  return (m.narrow(0, 0, 1).to(at::kFloat).mean(1, true) > 127.5).to(at::kFloat);
}

std::vector<std::string> known_class_names(const std::string& spec) {
  if (spec.rfind("fashion-mnist", 0) == 0)
    return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  if (spec.rfind("cifar10", 0) == 0)
    return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  return {};
}

std::string encode_image_grid_png(const at::Tensor& images, int64_t ncol, int64_t zoom, int64_t pad) {
  if (zoom < 1 || zoom > 16) throw InvalidArgument("image grid zoom must be 1..16 (got " + std::to_string(zoom) + ")");
  if (pad < 0 || pad > 16) throw InvalidArgument("image grid border must be 0..16 (got " + std::to_string(pad) + ")");
  if (images.dim() != 4) throw InvalidArgument("an image grid needs [N, C, H, W] images");
  const int64_t N = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  ncol = std::max<int64_t>(1, std::min(ncol, N));
  const int64_t nrow = (N + ncol - 1) / ncol;
  const int64_t GH = nrow * (H + pad) + pad, GW = ncol * (W + pad) + pad;
  auto grid = at::full({GH, GW, 3}, 255, at::TensorOptions().dtype(at::kByte));
  auto b = to_bytes(images);
  for (int64_t i = 0; i < N; ++i) {
    const int64_t r = i / ncol, c = i % ncol;
    auto img = b[i].permute({1, 2, 0});
    if (C == 1) img = img.expand({H, W, 3});
    grid.slice(0, pad + r * (H + pad), pad + r * (H + pad) + H).slice(1, pad + c * (W + pad), pad + c * (W + pad) + W)
        .copy_(img.slice(2, 0, 3));
  }
  if (zoom > 1) grid = grid.repeat_interleave(zoom, 0).repeat_interleave(zoom, 1);  // nearest neighbour
  grid = grid.contiguous();
  return encode_png(grid.data_ptr<uint8_t>(), static_cast<int>(grid.size(1)), static_cast<int>(grid.size(0)), 3);
}

std::string encode_image_png(const at::Tensor& image) {
  if (image.dim() != 3) throw InvalidArgument("an image needs [C, H, W]");
  auto img = to_bytes(image).permute({1, 2, 0}).contiguous();
  return encode_png(img.data_ptr<uint8_t>(), static_cast<int>(img.size(1)), static_cast<int>(img.size(0)),
                    static_cast<int>(img.size(2)));
}

void save_image_grid(const std::string& path, const at::Tensor& images, int64_t ncol, int64_t zoom) {
  write_file_atomic(path, encode_image_grid_png(images, ncol, zoom));
}

void save_images(const std::string& prefix, const at::Tensor& images) {
  for (int64_t i = 0; i < images.size(0); ++i) write_file_atomic(prefix + std::to_string(i) + ".png", encode_image_png(images[i]));
}

}  // namespace ddpm
