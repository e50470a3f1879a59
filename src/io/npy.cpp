#include "ddpm/io/npy.h"

#include <cstring>
#include <regex>

#include "ddpm/errors.h"
#include "ddpm/io/file.h"

namespace ddpm {
namespace {

at::ScalarType dtype_from_descr(const std::string& d, const std::string& path) {
  if (d == "<f4") return at::kFloat;
  if (d == "<f8") return at::kDouble;
  if (d == "<i8") return at::kLong;
  if (d == "<i4") return at::kInt;
  if (d == "<i2") return at::kShort;
  if (d == "|i1") return at::kChar;
  if (d == "|u1") return at::kByte;
  if (d == "|b1") return at::kBool;
  throw FormatError("'" + path + "': unsupported .npy dtype '" + d + "' (use float32, float64 or an integer type)");
}

std::string descr_from_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "<f4";
    case at::kDouble: return "<f8";
    case at::kLong: return "<i8";
    case at::kInt: return "<i4";
    case at::kShort: return "<i2";
    case at::kChar: return "|i1";
    case at::kByte: return "|u1";
    case at::kBool: return "|b1";
    default: throw InvalidArgument(std::string("cannot write dtype ") + c10::toString(t) + " to .npy");
  }
}

}  // namespace

at::Tensor read_npy(const std::string& path) {
  const std::string bytes = read_file(path);
  auto bad = [&](const std::string& why) { return FormatError("'" + path + "' is not a valid .npy file: " + why); };
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0) throw bad("missing the \\x93NUMPY magic");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw bad("truncated header");
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    offset = 12;
  } else {
    throw bad("unknown version " + std::to_string(major));
  }
  if (bytes.size() < offset + header_len) throw bad("truncated header");
  const std::string header = bytes.substr(offset, header_len);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr'\\s*:\\s*'([^']+)'"))) throw bad("no 'descr' in header");
  const at::ScalarType dtype = dtype_from_descr(m[1], path);
  if (std::regex_search(header, m, std::regex("'fortran_order'\\s*:\\s*True")))
    throw bad("Fortran-ordered arrays are not supported (save with np.ascontiguousarray)");
  if (!std::regex_search(header, m, std::regex("'shape'\\s*:\\s*\\(([^)]*)\\)"))) throw bad("no 'shape' in header");
  std::vector<int64_t> shape;
  {
    const std::string dims = m[1];
    static const std::regex number("\\d+");
    std::sregex_iterator it(dims.begin(), dims.end(), number), end;
    for (; it != end; ++it) {
      const std::string d = it->str();
      if (d.size() > 15) throw bad("dimension " + d.substr(0, 20) + " is impossibly large");
      shape.push_back(std::stoll(d));
    }
  }
  // Checked: a header may claim any shape, and only the file's size can bound it.
  uint64_t numel = 1;
  for (auto s : shape) {
    if (s != 0 && numel > (uint64_t{1} << 62) / static_cast<uint64_t>(s))
      throw bad("the shape claims more elements than any file holds");
    numel *= static_cast<uint64_t>(s);
  }
  if (numel > (uint64_t{1} << 62) / c10::elementSize(dtype)) throw bad("the shape claims more bytes than any file holds");
  const size_t data_bytes = static_cast<size_t>(numel) * c10::elementSize(dtype);
  const size_t start = offset + header_len;
  if (bytes.size() - start < data_bytes)
    throw bad("truncated data (" + std::to_string(bytes.size() - start) + " of " + std::to_string(data_bytes) +
              " bytes)");
  auto out = at::empty(shape, at::TensorOptions().dtype(dtype));
  if (data_bytes > 0) std::memcpy(out.data_ptr(), bytes.data() + start, data_bytes);  // an empty tensor has no storage
  return out;
}

void write_npy(const std::string& path, const at::Tensor& tensor) {
  auto t = tensor.detach().to(at::kCPU).contiguous();
  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i) shape += std::to_string(t.size(i)) + (t.dim() == 1 || i + 1 < t.dim() ? "," : "");
  shape += ")";
  std::string header = "{'descr': '" + descr_from_dtype(t.scalar_type()) + "', 'fortran_order': False, 'shape': " +
                       shape + ", }";
  // Pad with spaces so that magic + lengths + header is a multiple of 64, ending in a newline.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  write_file_atomic(path, out);
}

}  // namespace ddpm
