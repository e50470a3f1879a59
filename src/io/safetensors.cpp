#include "ddpm/io/safetensors.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "ddpm/errors.h"
#include "ddpm/io/file.h"

namespace ddpm {
namespace {

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return "F64";
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    default: throw InvalidArgument(std::string("safetensors cannot hold dtype ") + c10::toString(t));
  }
}

at::ScalarType dtype_from_name(const std::string& n, const std::string& what) {
  if (n == "F64") return at::kDouble;
  if (n == "F32") return at::kFloat;
  if (n == "F16") return at::kHalf;
  if (n == "BF16") return at::kBFloat16;
  if (n == "I64") return at::kLong;
  if (n == "I32") return at::kInt;
  if (n == "I16") return at::kShort;
  if (n == "I8") return at::kChar;
  if (n == "U8") return at::kByte;
  if (n == "BOOL") return at::kBool;
  throw FormatError(what + ": unsupported dtype '" + n + "'");
}

}  // namespace

const at::Tensor& SafeTensors::at(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  throw FormatError("tensor '" + name + "' is missing");
}

bool SafeTensors::contains(const std::string& name) const {
  for (const auto& kv : tensors)
    if (kv.first == name) return true;
  return false;
}

std::string encode_safetensors(const SafeTensors& st) {
  nlohmann::ordered_json header;
  if (!st.metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : st.metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : st.tensors) {
    if (name == "__metadata__" || header.contains(name)) throw InvalidArgument("duplicate tensor name '" + name + "'");
    auto t = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype_name(t.scalar_type())}, {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(t);
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += h;
  out.reserve(out.size() + offset);
  for (const auto& t : data) out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  return out;
}

SafeTensors decode_safetensors(const std::string& bytes, const std::string& what) {
  auto bad = [&](const std::string& why) { return FormatError(what + " is not a valid safetensors file: " + why); };
  if (bytes.size() < 8) throw bad("shorter than its 8-byte header length");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (n > bytes.size() - 8) throw bad("header length " + std::to_string(n) + " exceeds the file (truncated?)");
  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const nlohmann::json::exception&) {
    throw bad("its header is not JSON");
  }
  if (!header.is_object()) throw bad("its header is not a JSON object");
  const size_t base = 8 + n, buffer = bytes.size() - base;
  SafeTensors st;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  try {
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        for (auto m = it.value().begin(); m != it.value().end(); ++m) st.metadata[m.key()] = m.value().get<std::string>();
        continue;
      }
      const auto& e = it.value();
      const auto dtype = dtype_from_name(e.at("dtype").get<std::string>(), what);
      // Whole numbers only: nlohmann converts 6.7e26 to an integer with undefined behaviour (found by fuzz_safetensors).
      auto whole = [&](const char* key) {
        const auto& a = e.at(key);
        if (!a.is_array()) throw bad("tensor '" + it.key() + "' has a '" + key + "' that is not a list");
        for (const auto& v : a)
          if (!v.is_number_integer()) throw bad("tensor '" + it.key() + "' has a '" + key + "' that is not whole numbers");
        return a;
      };
      const auto shape = whole("shape").get<std::vector<int64_t>>();
      const auto offs = whole("data_offsets").get<std::vector<uint64_t>>();
      if (offs.size() != 2 || offs[0] > offs[1] || offs[1] > buffer)
        throw bad("tensor '" + it.key() + "' has data outside the file (truncated?)");
      uint64_t numel = 1;
      for (auto s : shape) {
        if (s < 0) throw bad("tensor '" + it.key() + "' has a negative dimension");
        if (s != 0 && numel > (uint64_t{1} << 40) / static_cast<uint64_t>(s))  // no wrap-around to a small count
          throw bad("tensor '" + it.key() + "' has an impossibly large shape");
        numel *= static_cast<uint64_t>(s);
      }
      if (numel * c10::elementSize(dtype) != offs[1] - offs[0])
        throw bad("tensor '" + it.key() + "' has a byte range that does not match its shape");
      auto t = at::empty(shape, at::TensorOptions().dtype(dtype));
      if (numel) std::memcpy(t.data_ptr(), bytes.data() + base + offs[0], offs[1] - offs[0]);
      st.tensors.emplace_back(it.key(), t);
      ranges.emplace_back(offs[0], offs[1]);
    }
  } catch (const nlohmann::json::exception& e) {
    throw bad(std::string("malformed header entry (") + e.what() + ")");
  }
  // The format requires the byte ranges to tile the buffer exactly, without holes or overlaps.
  std::sort(ranges.begin(), ranges.end());
  uint64_t cursor = 0;
  for (const auto& [b, e] : ranges) {
    if (b != cursor) throw bad("tensor byte ranges overlap or leave holes");
    cursor = e;
  }
  if (cursor != buffer) throw bad("trailing bytes after the last tensor");
  return st;
}

void save_safetensors(const std::string& path, const SafeTensors& st) { write_file_atomic(path, encode_safetensors(st)); }

SafeTensors load_safetensors(const std::string& path) { return decode_safetensors(read_file(path), "'" + path + "'"); }

}  // namespace ddpm
