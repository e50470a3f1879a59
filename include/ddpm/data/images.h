// Image data sets: IDX files (MNIST, Fashion-MNIST; .gz read directly), CIFAR-10 binary batches, and folders of
// PNG/JPEG images; scaling to [-1, 1], padding, and PNG grids of images.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace ddpm {

struct ImageSet {
  at::Tensor images;        ///< [N, C, H, W] uint8
  at::Tensor labels;        ///< [N] int64, or undefined
  int64_t num_classes = 0;
  std::vector<std::string> class_names;
  int64_t size() const { return images.defined() ? images.size(0) : 0; }
};

/// Reads IDX images (magic 2051) and, if given, IDX labels (2049); gzip-compressed files are read directly.
ImageSet read_idx(const std::string& images_path, const std::string& labels_path = "");

/// Reads CIFAR-10 binary batches (each record: 1 label byte, 3072 pixel bytes) from the given files.
ImageSet read_cifar10_batches(const std::vector<std::string>& files);

/// Reads the given PNG/JPEG/BMP files (one size; grey read with 1 channel only if every image is grey), unlabelled.
ImageSet read_image_files(const std::vector<std::string>& files);

/// The largest width or height an image may have; larger headers are refused before anything is decoded.
constexpr int kMaxImageSide = 8192;

/// Decodes one PNG/JPEG/BMP held in memory into a set of one image ([1, C, H, W], C = 1 for grey, else 3; alpha
/// dropped). `name` is used in messages. Throws FormatError for bytes that are not such an image or are too large.
ImageSet decode_image(const std::string& bytes, const std::string& name = "image");

/// Reads every PNG/JPEG/BMP below `dir`; images in sub-folders are labelled by folder (sorted by name). All images
/// must have the same size; grey images are read with 1 channel only if every image is grey.
ImageSet read_image_folder(const std::string& dir);

/// Real images in a model's range and size, for editing and inpainting.
struct ModelImages {
  at::Tensor x;       ///< [N, C, H, W] float in [-1, 1], padded to the model's size
  at::Tensor labels;  ///< [N] int64, or undefined (files, unlabelled sets)
  int64_t pad_h = 0, pad_w = 0;  ///< padding added on each side (top/left), so metrics can crop it away
  int64_t size() const { return x.size(0); }
  /// y [N, C, H, W] without the padding.
  at::Tensor crop(const at::Tensor& y) const;
  /// A keep-mask of the unpadded images [1 or N, 1, h, w] padded to the model's size with "keep".
  at::Tensor pad_mask(const at::Tensor& inner) const;
};

/// uint8 images [N, C, h, w] as items of a C×H×W image model: of its size, or 28×28 padded to 32×32 (padded_side);
/// grey images given to a colour model are copied to three channels, colour ones given to a grey model averaged.
/// `source` names them in messages. Throws InvalidArgument (field "image") when they do not fit.
ModelImages images_for_model(const ImageSet& set, const std::vector<int64_t>& item_shape, const std::string& source);

/// A keep-mask [1, 1, H, W] (1 = keep, 0 = fill in) hiding one part of an image: right, left, top, bottom (halves)
/// or centre (the middle half of each side). Throws InvalidArgument (field "region") for another name.
at::Tensor region_mask(const std::string& region, int64_t H, int64_t W);

/// A keep-mask [1, 1, H, W] from an image of the same size: white (above mid-grey, channels averaged) = keep.
/// Throws InvalidArgument (field "mask") for another size.
at::Tensor mask_from_image(const ImageSet& mask, int64_t H, int64_t W, const std::string& source);

/// Where Debian's dataset-fashion-mnist package puts its files.
std::string fashion_mnist_dir();

/// Resolves a data spec:
///   fashion-mnist[:train|:test]   Debian's dataset-fashion-mnist (train by default)
///   idx:IMAGES[,LABELS]           any IDX pair (MNIST too)
///   cifar10:DIR[:train|:test]     a folder holding data_batch_{1..5}.bin / test_batch.bin
///   folder:DIR  (or a plain directory path)
/// Throws IoError / FormatError / InvalidArgument with a message naming what to do.
ImageSet load_image_dataset(const std::string& spec);

/// The class names of a data set named by its spec (fashion-mnist, cifar10:…); empty for other sets.
std::vector<std::string> known_class_names(const std::string& spec);

/// True if `spec` names an image data set (as opposed to toy:NAME or a .npy point file).
bool is_image_spec(const std::string& spec);

/// The side a data set is padded to for the U-Net: 28×28 (MNIST, Fashion-MNIST) becomes 32×32, so that three
/// halvings stay whole; every other side is kept (returns 0).
inline int64_t padded_side(int64_t side) { return side == 28 ? 32 : 0; }

/// uint8 [N, C, H, W] → float [-1, 1], padded with -1 (black) to at least `min_side` square (28 → 32).
at::Tensor to_model_range(const at::Tensor& images, int64_t min_side = 0);

/// [N, C, H, W] float in [-1, 1] → one PNG grid with `ncol` columns and a 2-pixel border, every pixel drawn as a
/// zoom × zoom square; throws IoError.
void save_image_grid(const std::string& path, const at::Tensor& images, int64_t ncol, int64_t zoom = 1);
/// The same grid as PNG bytes (`pad` pixels of white border); throws InvalidArgument.
std::string encode_image_grid_png(const at::Tensor& images, int64_t ncol, int64_t zoom = 1, int64_t pad = 2);
/// One [C, H, W] image in [-1, 1] as PNG bytes (grey for C = 1), exactly the bytes save_images writes.
std::string encode_image_png(const at::Tensor& image);
/// Each image of [N, C, H, W] in [-1, 1] as its own PNG: prefix + index + ".png".
void save_images(const std::string& prefix, const at::Tensor& images);

}  // namespace ddpm
