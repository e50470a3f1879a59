#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "ddpm/data/images.h"
#include "ddpm/errors.h"
#include "support.h"

extern "C" {
unsigned char* stbi_load(const char* filename, int* x, int* y, int* channels, int desired);
void stbi_image_free(void* p);
}

using namespace ddpm;
using namespace ddpm::test;

namespace {

namespace fs = std::filesystem;

std::string tmp(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("ddpm_test_images_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

/// An IDX file written from its format description (big-endian magic and sizes, then bytes), gzip-compressed.
void write_idx_gz(const std::string& path, const std::string& body) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, body.data(), static_cast<unsigned>(body.size()));
  gzclose(f);
}

}  // namespace

TEST(Images, ReadsIdxFilesPlainAndGzipped) {
  std::string img = be32(2051) + be32(3) + be32(2) + be32(4);
  for (int i = 0; i < 24; ++i) img += static_cast<char>(i * 10);
  std::string lab = be32(2049) + be32(3) + std::string("\x07\x00\x02", 3);
  write_idx_gz(tmp("img.gz"), img);
  std::ofstream(tmp("lab.idx"), std::ios::binary) << lab;
  auto s = read_idx(tmp("img.gz"), tmp("lab.idx"));
  EXPECT_EQ(s.images.sizes(), (std::vector<int64_t>{3, 1, 2, 4}));
  EXPECT_EQ(s.images[1][0][1][2].item<uint8_t>(), (8 + 4 + 2) * 10);
  EXPECT_TRUE(s.labels.equal(at::tensor(std::vector<int64_t>{7, 0, 2})));
  write_idx_gz(tmp("short.gz"), img.substr(0, img.size() - 3));
  EXPECT_THROW(read_idx(tmp("short.gz")), FormatError);
  write_idx_gz(tmp("magic.gz"), be32(2049) + img.substr(4));
  EXPECT_THROW(read_idx(tmp("magic.gz")), FormatError);
  std::ofstream(tmp("lab2.idx"), std::ios::binary) << be32(2049) + be32(2) + std::string("\x01\x02", 2);
  EXPECT_THROW(read_idx(tmp("img.gz"), tmp("lab2.idx")), FormatError);  // 2 labels for 3 images
  EXPECT_THROW(read_idx(tmp("missing.gz")), IoError);
  // Sizes whose product wraps past 64 bits (2^31 · 2^31 · 4 ≡ 0) must not pass for the zero bytes present (found
  // by fuzz_idx; fuzz/corpus/fuzz_idx/regress-header-overflow).
  write_idx_gz(tmp("wrap.gz"), be32(2051) + be32(0x80000000u) + be32(0x80000000u) + be32(4));
  EXPECT_THROW(read_idx(tmp("wrap.gz")), FormatError);
  // Images without pixels, in a count whose product with a side overflows (fuzz_idx:
  // regress-empty-dimension-overflow).
  write_idx_gz(tmp("empty.gz"), be32(2051) + be32(0xffffffffu) + be32(0xffffffffu) + be32(0));
  EXPECT_THROW(read_idx(tmp("empty.gz")), FormatError);
  // No images, but of sides no tensor can hold (fuzz_idx: regress-no-images-of-huge-side).
  write_idx_gz(tmp("huge.gz"), be32(2051) + be32(0) + be32(0xffffffffu) + be32(0xffffffffu));
  EXPECT_THROW(read_idx(tmp("huge.gz")), FormatError);
}

TEST(Images, FashionMnistFromDebian) {
  if (!fs::exists(fashion_mnist_dir() + "/train-images-idx3-ubyte.gz")) GTEST_SKIP() << "dataset-fashion-mnist absent";
  auto train = load_image_dataset("fashion-mnist");
  EXPECT_EQ(train.images.sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  auto counts = at::bincount(train.labels);
  EXPECT_EQ(counts.min().item<int64_t>(), 6000);
  EXPECT_EQ(counts.max().item<int64_t>(), 6000);
  EXPECT_EQ(train.class_names.at(9), "Ankle boot");
  auto test = load_image_dataset("fashion-mnist:test");
  EXPECT_EQ(test.size(), 10000);
  EXPECT_THROW(load_image_dataset("fashion-mnist:valid"), InvalidArgument);
}

TEST(Images, ReadsCifar10Batches) {
  std::string rec;
  for (int r = 0; r < 2; ++r) {
    rec += static_cast<char>(r == 0 ? 3 : 9);
    for (int i = 0; i < 3072; ++i) rec += static_cast<char>((i + r) % 256);
  }
  std::ofstream(tmp("data_batch_x.bin"), std::ios::binary) << rec;
  auto s = read_cifar10_batches({tmp("data_batch_x.bin")});
  EXPECT_EQ(s.images.sizes(), (std::vector<int64_t>{2, 3, 32, 32}));
  EXPECT_TRUE(s.labels.equal(at::tensor(std::vector<int64_t>{3, 9})));
  EXPECT_EQ(s.images[1][2][0][5].item<uint8_t>(), (2 * 1024 + 5 + 1) % 256);  // channel-major rows of 32
  std::ofstream(tmp("bad.bin"), std::ios::binary) << rec.substr(0, 3000);
  EXPECT_THROW(read_cifar10_batches({tmp("bad.bin")}), FormatError);
  EXPECT_THROW(load_image_dataset("cifar10:" + tmp("nowhere")), IoError);
}

TEST(Images, FolderRoundTripWithClassesFromSubfolders) {
  auto imgs = at::randint(0, 256, {4, 3, 5, 6}, gen(1), at::TensorOptions().dtype(at::kByte));
  auto as_float = imgs.to(at::kFloat) / 127.5 - 1;
  fs::create_directories(tmp("folder/cat"));
  fs::create_directories(tmp("folder/dog"));
  save_images(tmp("folder/cat/a_"), as_float.slice(0, 0, 2));
  save_images(tmp("folder/dog/b_"), as_float.slice(0, 2, 4));
  auto s = read_image_folder(tmp("folder"));
  EXPECT_TRUE(s.images.equal(imgs));
  EXPECT_TRUE(s.labels.equal(at::tensor(std::vector<int64_t>{0, 0, 1, 1})));
  EXPECT_EQ(s.class_names, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_THROW(read_image_folder(tmp("nothing_here")), IoError);
}

TEST(Images, ScalingPaddingAndGrids) {
  auto u8 = at::full({1, 1, 28, 28}, 255, at::TensorOptions().dtype(at::kByte));
  u8[0][0][0][0] = 0;
  auto x = to_model_range(u8, 32);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{1, 1, 32, 32}));
  EXPECT_EQ(x[0][0][2][2].item<float>(), -1.0f);  // the original (0, 0) pixel, after a 2-pixel pad
  EXPECT_EQ(x[0][0][2][3].item<float>(), 1.0f);
  EXPECT_EQ(x[0][0][0][10].item<float>(), -1.0f);  // padding is black
  EXPECT_EQ(x[0][0][31][31].item<float>(), -1.0f);
  save_image_grid(tmp("grid.png"), at::zeros({10, 1, 8, 8}), 4);
  int w, h, c;
  unsigned char* p = stbi_load(tmp("grid.png").c_str(), &w, &h, &c, 0);
  ASSERT_NE(p, nullptr);
  stbi_image_free(p);
  EXPECT_EQ(w, 4 * 10 + 2);  // 4 columns of 8 pixels with 2-pixel borders
  EXPECT_EQ(h, 3 * 10 + 2);
  // Zoomed: every pixel a 3×3 square. The first image's top-left pixel white, the rest black.
  auto img = at::full({1, 1, 8, 8}, -1.0);
  img[0][0][0][0] = 1.0;
  save_image_grid(tmp("zoom.png"), img, 1, 3);
  unsigned char* z = stbi_load(tmp("zoom.png").c_str(), &w, &h, &c, 1);
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(w, 3 * (8 + 4));
  EXPECT_EQ(h, 3 * (8 + 4));
  auto at_ = [&](int x, int y) { return int(z[y * w + x]); };
  for (int y = 6; y < 9; ++y)
    for (int x = 6; x < 9; ++x) EXPECT_EQ(at_(x, y), 255) << x << "," << y;  // pixel (0,0) after the 2-px border
  EXPECT_EQ(at_(9, 6), 0);
  EXPECT_EQ(at_(6, 9), 0);
  stbi_image_free(z);
  EXPECT_THROW(save_image_grid(tmp("bad.png"), img, 1, 0), InvalidArgument);
}
