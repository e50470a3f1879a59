#include "ddpm/io/torch_file.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <map>
#include <memory>
#include <sstream>

#include "ddpm/errors.h"
#include "ddpm/io/file.h"

namespace ddpm {
namespace {

// One pickle value. Containers are shared (pickle's memo hands out references that later opcodes mutate).
struct Node;
using Value = std::shared_ptr<Node>;
struct Node {
  enum Kind { none, boolean, integer, real, string, tuple, list, dict, global, storage, tensor, mark } kind = none;
  int64_t i = 0;
  double f = 0;
  std::string s;                                // string; global: "module.name"; storage: its record key
  std::vector<Value> items;                     // tuple, list
  std::vector<std::pair<Value, Value>> pairs;   // dict
  at::Tensor t;                                 // storage (flat, stored dtype), tensor
};

Value make(Node::Kind k) {
  auto v = std::make_shared<Node>();
  v->kind = k;
  return v;
}

struct StorageType {
  const char* name;
  at::ScalarType dtype;
};
constexpr StorageType kStorages[] = {
    {"torch.FloatStorage", at::kFloat},   {"torch.DoubleStorage", at::kDouble}, {"torch.HalfStorage", at::kHalf},
    {"torch.BFloat16Storage", at::kBFloat16}, {"torch.LongStorage", at::kLong}, {"torch.IntStorage", at::kInt},
    {"torch.ShortStorage", at::kShort},   {"torch.CharStorage", at::kChar},     {"torch.ByteStorage", at::kByte},
    {"torch.BoolStorage", at::kBool}};

// A name from the file, safe to put in a one-line message: control bytes escaped, at most 80 characters.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 80)) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return s.size() > 80 ? out + "…" : out;
}

bool is_allowed_global(const std::string& g) {
  if (g == "collections.OrderedDict" || g == "torch._utils._rebuild_tensor_v2" ||
      g == "torch._utils._rebuild_parameter")
    return true;
  for (const auto& st : kStorages)
    if (g == st.name) return true;
  return false;
}

class Unpickler {
 public:
  Unpickler(const std::string& data, caffe2::serialize::PyTorchStreamReader& zip, std::string what)
      : d_(data), zip_(zip), what_(std::move(what)) {}

  Value run() {
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;                          // PROTO
        case 0x95: bytes(8); break;                        // FRAME (protocol 4): a length hint
        case '(': push(make(Node::mark)); break;           // MARK
        case '.': return pop();                            // STOP
        case 'N': push(make(Node::none)); break;
        case 0x88: case 0x89: {                            // NEWTRUE, NEWFALSE
          auto v = make(Node::boolean);
          v->i = op == 0x88;
          push(v);
          break;
        }
        case 'J': push_int(static_cast<int32_t>(le(4))); break;   // BININT
        case 'K': push_int(static_cast<int64_t>(le(1))); break;   // BININT1
        case 'M': push_int(static_cast<int64_t>(le(2))); break;   // BININT2
        case 0x8a: {                                              // LONG1: little-endian two's complement
          const size_t n = byte();
          if (n > 8) fail("an integer of more than 64 bits");
          uint64_t u = n ? le(n) : 0;
          if (n > 0 && n < 8 && (u >> (8 * n - 1)) & 1) u |= ~uint64_t{0} << (8 * n);
          push_int(static_cast<int64_t>(u));
          break;
        }
        case 'G': {                                               // BINFLOAT: big-endian double
          uint64_t u = 0;
          for (int k = 0; k < 8; ++k) u = (u << 8) | byte();
          auto v = make(Node::real);
          std::memcpy(&v->f, &u, 8);
          push(v);
          break;
        }
        case 'X': push_str(bytes(le(4))); break;                  // BINUNICODE
        case 0x8c: push_str(bytes(byte())); break;                // SHORT_BINUNICODE
        case 'U': push_str(bytes(byte())); break;                 // SHORT_BINSTRING
        case 'T': push_str(bytes(le(4))); break;                  // BINSTRING
        case 'C': push_str(bytes(byte())); break;                 // SHORT_BINBYTES
        case 'B': push_str(bytes(le(4))); break;                  // BINBYTES
        case ')': push(make(Node::tuple)); break;                 // EMPTY_TUPLE
        case 't': push(tuple_from(pop_mark())); break;            // TUPLE
        case 0x85: case 0x86: case 0x87: {                        // TUPLE1..3
          const size_t n = op - 0x84;
          std::vector<Value> items(n);
          for (size_t k = n; k-- > 0;) items[k] = pop();
          push(tuple_from(std::move(items)));
          break;
        }
        case ']': push(make(Node::list)); break;                  // EMPTY_LIST
        case '}': push(make(Node::dict)); break;                  // EMPTY_DICT
        case 'a': {                                               // APPEND
          auto v = pop();
          expect(top(), Node::list, "APPEND")->items.push_back(v);
          break;
        }
        case 'e': {                                               // APPENDS
          auto items = pop_mark();
          auto& l = expect(top(), Node::list, "APPENDS")->items;
          l.insert(l.end(), items.begin(), items.end());
          break;
        }
        case 's': {                                               // SETITEM
          auto v = pop();
          auto k = pop();
          expect(top(), Node::dict, "SETITEM")->pairs.emplace_back(k, v);
          break;
        }
        case 'u': {                                               // SETITEMS
          auto items = pop_mark();
          if (items.size() % 2) fail("SETITEMS with an odd number of items");
          auto& p = expect(top(), Node::dict, "SETITEMS")->pairs;
          for (size_t k = 0; k < items.size(); k += 2) p.emplace_back(items[k], items[k + 1]);
          break;
        }
        case 'q': memo_[byte()] = top(); break;                   // BINPUT
        case 'r': memo_[le(4)] = top(); break;                    // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;            // MEMOIZE
        case 'h': push(memo(byte())); break;                      // BINGET
        case 'j': push(memo(le(4))); break;                       // LONG_BINGET
        case 'c': {                                               // GLOBAL module\nname\n
          auto module = line();
          auto name = line();
          push(global(module + "." + name));
          break;
        }
        case 0x93: {                                              // STACK_GLOBAL
          auto name = pop();
          auto module = pop();
          if (module->kind != Node::string || name->kind != Node::string) fail("STACK_GLOBAL without strings");
          push(global(module->s + "." + name->s));
          break;
        }
        case 'Q': push(persistent(pop())); break;                 // BINPERSID
        case 'R': {                                               // REDUCE
          auto args = pop();
          auto callable = pop();
          push(reduce(callable, args));
          break;
        }
        case 'b': {                                               // BUILD: state of an OrderedDict (_metadata) is dropped
          pop();
          if (top()->kind != Node::dict && top()->kind != Node::tensor) fail("BUILD on an unexpected object");
          break;
        }
        default: {
          char buf[8];
          std::snprintf(buf, sizeof buf, "0x%02x", op);
          fail(std::string("pickle opcode ") + buf + " is not supported by this reader");
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& why) const { throw FormatError(what_ + ": " + why); }

  uint8_t byte() {
    if (pos_ >= d_.size()) fail("the pickle ends early (truncated file?)");
    return static_cast<uint8_t>(d_[pos_++]);
  }
  uint64_t le(size_t n) {
    uint64_t u = 0;
    for (size_t k = 0; k < n; ++k) u |= static_cast<uint64_t>(byte()) << (8 * k);
    return u;
  }
  std::string bytes(uint64_t n) {
    if (n > d_.size() - pos_) fail("the pickle ends early (truncated file?)");
    std::string s = d_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string line() {
    auto end = d_.find('\n', pos_);
    if (end == std::string::npos || end - pos_ > 256) fail("a damaged GLOBAL opcode");
    std::string s = d_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }

  void push(Value v) {
    if (stack_.size() > 1'000'000) fail("the pickle's stack grows without bound");
    stack_.push_back(std::move(v));
  }
  Value pop() {
    if (stack_.empty() || stack_.back()->kind == Node::mark) fail("the pickle's stack underflows");
    auto v = stack_.back();
    stack_.pop_back();
    return v;
  }
  const Value& top() const {
    if (stack_.empty() || stack_.back()->kind == Node::mark) fail("the pickle's stack underflows");
    return stack_.back();
  }
  std::vector<Value> pop_mark() {
    size_t k = stack_.size();
    while (k > 0 && stack_[k - 1]->kind != Node::mark) --k;
    if (k == 0) fail("a pickle opcode needs a MARK that is not there");
    std::vector<Value> items(stack_.begin() + static_cast<std::ptrdiff_t>(k), stack_.end());
    stack_.resize(k - 1);
    return items;
  }
  Value memo(uint64_t key) const {
    auto it = memo_.find(key);
    if (it == memo_.end()) fail("the pickle refers to memo entry " + std::to_string(key) + " that was never stored");
    return it->second;
  }
  const Value& expect(const Value& v, Node::Kind k, const char* op) const {
    if (v->kind != k) fail(std::string(op) + " on an object of the wrong type");
    return v;
  }
  void push_int(int64_t i) {
    auto v = make(Node::integer);
    v->i = i;
    push(v);
  }
  void push_str(std::string s) {
    auto v = make(Node::string);
    v->s = std::move(s);
    push(v);
  }
  static Value tuple_from(std::vector<Value> items) {
    auto v = make(Node::tuple);
    v->items = std::move(items);
    return v;
  }

  Value global(const std::string& name) const {
    if (!is_allowed_global(name))
      fail("refuses the pickle's global '" + printable(name) +
           "' (only tensors and dicts of tensors are read; a pickle naming other Python objects may run code)");
    auto v = make(Node::global);
    v->s = name;
    return v;
  }

  // ('storage', StorageType, key, location, numel) → the storage's bytes as a flat tensor, read once per key.
  Value persistent(const Value& pid) {
    if (pid->kind != Node::tuple || pid->items.size() != 5 || pid->items[0]->kind != Node::string ||
        pid->items[0]->s != "storage" || pid->items[1]->kind != Node::global || pid->items[2]->kind != Node::string ||
        pid->items[4]->kind != Node::integer)
      fail("a persistent id that is not a tensor storage");
    const auto& type = pid->items[1]->s;
    const auto& key = pid->items[2]->s;
    const int64_t numel = pid->items[4]->i;
    at::ScalarType dtype = at::kFloat;
    bool known = false;
    for (const auto& st : kStorages)
      if (type == st.name) dtype = st.dtype, known = true;
    if (!known) fail("'" + printable(type) + "' is not a storage type");
    auto it = storages_.find(key);
    if (it == storages_.end()) {
      const std::string record = "data/" + key;
      if (key.find('/') != std::string::npos || !zip_.hasRecord(record))
        fail("storage '" + printable(key) + "' is missing from the archive");
      const size_t elem = c10::elementSize(dtype);
      if (numel < 0) fail("storage '" + printable(key) + "' has a negative size");
      auto [ptr, size] = zip_.getRecord(record);
      if (size / elem < static_cast<uint64_t>(numel))
        fail("storage '" + printable(key) + "' holds " + std::to_string(size) + " bytes, fewer than its " +
             std::to_string(numel) + " elements need");
      auto t = at::empty({numel}, at::TensorOptions().dtype(dtype));
      if (numel > 0) std::memcpy(t.data_ptr(), ptr.get(), static_cast<size_t>(numel) * elem);
      it = storages_.emplace(key, t).first;
    }
    auto v = make(Node::storage);
    v->s = key;
    v->t = it->second;
    return v;
  }

  static bool int_tuple(const Value& v, std::vector<int64_t>& out) {
    if (v->kind != Node::tuple) return false;
    out.clear();
    for (const auto& x : v->items) {
      if (x->kind != Node::integer) return false;
      out.push_back(x->i);
    }
    return true;
  }

  Value reduce(const Value& callable, const Value& args) const {
    if (callable->kind != Node::global || args->kind != Node::tuple) fail("REDUCE of something not callable");
    const auto& g = callable->s;
    const auto& a = args->items;
    if (g == "collections.OrderedDict") {
      if (!a.empty()) fail("OrderedDict built from arguments");
      return make(Node::dict);
    }
    if (g == "torch._utils._rebuild_tensor_v2") {
      std::vector<int64_t> size, stride;
      if (a.size() < 4 || a[0]->kind != Node::storage || a[1]->kind != Node::integer || !int_tuple(a[2], size) ||
          !int_tuple(a[3], stride) || size.size() != stride.size())
        fail("a damaged tensor record");
      const int64_t offset = a[1]->i, numel = a[0]->t.numel();
      // The view must stay inside its storage: offset + Σ (size−1)·stride < numel, nothing negative.
      int64_t last = offset, count = 1;
      bool ok = offset >= 0;
      for (size_t k = 0; k < size.size() && ok; ++k) {
        if (size[k] < 0 || stride[k] < 0 || size[k] > (int64_t{1} << 40) || stride[k] > (int64_t{1} << 40)) ok = false;
        else if (size[k] == 0) count = 0;
        else last += (size[k] - 1) * stride[k];
      }
      if (!ok || (count != 0 && last >= numel)) fail("a tensor view reaches outside its storage");
      auto v = make(Node::tensor);
      v->t = count == 0 ? at::empty(size, a[0]->t.options()) : a[0]->t.as_strided(size, stride, offset).clone();
      return v;
    }
    if (g == "torch._utils._rebuild_parameter") {
      if (a.empty() || a[0]->kind != Node::tensor) fail("a damaged parameter record");
      return a[0];
    }
    fail("'" + printable(g) + "' cannot be called");
  }

  const std::string& d_;
  caffe2::serialize::PyTorchStreamReader& zip_;
  std::string what_;
  size_t pos_ = 0;
  std::vector<Value> stack_;
  std::map<uint64_t, Value> memo_;
  std::map<std::string, at::Tensor> storages_;
};

std::string key_text(const Value& k) {
  if (k->kind == Node::string) return k->s;
  if (k->kind == Node::integer) return std::to_string(k->i);
  return "?";
}

void flatten(const Value& v, const std::string& prefix, int depth, TorchFile& out, const std::string& what) {
  if (depth > 32) throw FormatError(what + ": containers nested more than 32 deep");
  auto name = [&](const std::string& k) { return prefix.empty() ? k : prefix + "." + k; };
  switch (v->kind) {
    case Node::tensor: out.tensors.emplace_back(prefix, v->t); break;
    case Node::dict:
      for (const auto& [k, x] : v->pairs) flatten(x, name(key_text(k)), depth + 1, out, what);
      break;
    case Node::list:
    case Node::tuple:
      for (size_t k = 0; k < v->items.size(); ++k) flatten(v->items[k], name(std::to_string(k)), depth + 1, out, what);
      break;
    default: break;
  }
}

}  // namespace

TorchFile decode_torch_file(const std::string& bytes, const std::string& what) {
  if (bytes.rfind("version https://git-lfs", 0) == 0)
    throw FormatError(what + " is a git-lfs pointer, not the weights: fetch the file itself (git lfs pull, or the "
                             "hub's download link)");
  if (bytes.size() >= 2 && static_cast<uint8_t>(bytes[0]) == 0x80 && static_cast<uint8_t>(bytes[1]) <= 5)
    throw FormatError(what + " is in the legacy torch.save format of PyTorch before 1.6; load and save it again with "
                             "a newer PyTorch (torch.save writes the zip format by default)");
  if (bytes.rfind("PK", 0) != 0) throw FormatError(what + " is not a torch.save file (no zip archive)");
  std::istringstream in(bytes);
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  std::string pickle;
  try {
    zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(&in);
    if (!zip->hasRecord("data.pkl")) throw FormatError(what + ": the archive has no data.pkl (not a torch.save file)");
    auto [ptr, size] = zip->getRecord("data.pkl");
    pickle.assign(static_cast<const char*>(ptr.get()), size);
  } catch (const c10::Error& e) {
    std::string m = e.what_without_backtrace();
    throw FormatError(what + ": damaged zip archive (" + m.substr(0, m.find('\n')) + ")");
  }
  Value root;
  try {
    root = Unpickler(pickle, *zip, what).run();
  } catch (const c10::Error& e) {
    std::string m = e.what_without_backtrace();
    throw FormatError(what + ": damaged zip archive (" + m.substr(0, m.find('\n')) + ")");
  }
  TorchFile out;
  if (root->kind == Node::dict)
    for (const auto& kv : root->pairs) out.top_keys.push_back(key_text(kv.first));
  flatten(root, "", 0, out, what);
  return out;
}

TorchFile load_torch_file(const std::string& path) { return decode_torch_file(read_file(path), path); }

}  // namespace ddpm
