// The torch.save reader against files written by PyTorch itself (scripts/golden/torch_files.py → tests/data/torch).
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "ddpm/errors.h"
#include "ddpm/io/file.h"
#include "ddpm/io/torch_file.h"
#include "support.h"

using namespace ddpm;

namespace {

std::string data(const std::string& name) { return std::string(DDPM_TEST_DATA) + "/torch/" + name; }

const at::Tensor* find(const TorchFile& f, const std::string& name) {
  for (const auto& [n, t] : f.tensors)
    if (n == name) return &t;
  return nullptr;
}

std::string message_of(const std::string& bytes) {
  try {
    decode_torch_file(bytes, "f.pt");
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(TorchFile, EveryTensorEqualsWhatPyTorchSaved) {
  auto f = load_torch_file(data("state.pt"));
  std::ifstream js(data("state.json"));
  auto ref = nlohmann::json::parse(js);
  std::vector<std::string> names;
  for (const auto& [n, t] : f.tensors) names.push_back(n);
  EXPECT_EQ(names, ref["order"].get<std::vector<std::string>>());
  for (const auto& name : ref["order"]) {
    const auto& r = ref["tensors"][name.get<std::string>()];
    const at::Tensor* t = find(f, name);
    ASSERT_NE(t, nullptr) << name;
    const std::map<std::string, std::string> dtypes = {
        {"float32", "Float"}, {"float16", "Half"}, {"bfloat16", "BFloat16"}, {"int64", "Long"}};
    EXPECT_EQ(std::string(c10::toString(t->scalar_type())), dtypes.at(r["dtype"])) << name;
    EXPECT_EQ(t->sizes().vec(), r["shape"].get<std::vector<int64_t>>()) << name;
    auto values = r["values"].get<std::vector<double>>();
    auto got = t->to(at::kDouble).contiguous();
    ASSERT_EQ(got.numel(), static_cast<int64_t>(values.size())) << name;
    for (size_t k = 0; k < values.size(); ++k) EXPECT_EQ(got.data_ptr<double>()[k], values[k]) << name << "[" << k << "]";
  }
  // Views were materialised: changing one does not change the other (they shared a storage in the file).
  auto t = *find(f, "view.t");
  auto s = *find(f, "view.slice");
  const double before = s[0][0].item<double>();
  t.fill_(0);
  EXPECT_EQ(s[0][0].item<double>(), before);
  EXPECT_EQ(f.top_keys.size(), 11u);
}

TEST(TorchFile, RefusesWhatIsNotWeights) {
  EXPECT_NE(message_of(read_file(data("hostile.pt"))).find("global 'posix.system'"), std::string::npos)
      << message_of(read_file(data("hostile.pt")));
  EXPECT_FALSE(std::filesystem::exists("/tmp/ddpm_pwned"));
  EXPECT_NE(message_of(read_file(data("legacy.pt"))).find("legacy torch.save format"), std::string::npos);
  EXPECT_NE(message_of(read_file(data("lfs.pt"))).find("git-lfs pointer"), std::string::npos);
  EXPECT_NE(message_of("hello").find("not a torch.save file"), std::string::npos);
  EXPECT_NE(message_of("").find("not a torch.save file"), std::string::npos);
  // An optimizer state reads (its tensors are moments), and shows its keys so the importer can name it.
  auto opt = load_torch_file(data("opt.pt"));
  EXPECT_EQ(opt.top_keys, (std::vector<std::string>{"state", "param_groups"}));
  EXPECT_THROW(load_torch_file(data("absent.pt")), IoError);
}

// Mutations of a real file: every truncation and many flipped bytes give either a result or one FormatError line —
// never a crash and never another exception type.
TEST(TorchFile, TruncatedAndFlippedFilesFailWithOneLine) {
  const auto bytes = read_file(data("state.pt"));
  int refused = 0, read = 0;
  auto check = [&](const std::string& b) {
    try {
      decode_torch_file(b, "f.pt");
      ++read;
    } catch (const FormatError& e) {
      ++refused;
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  };
  for (size_t n = 0; n < bytes.size(); n += 7) check(bytes.substr(0, n));
  std::mt19937 rng(3);
  for (int k = 0; k < 1500; ++k) {
    auto b = bytes;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int j = 0; j < flips; ++j) b[rng() % b.size()] ^= static_cast<char>(1 + rng() % 255);
    check(b);
  }
  EXPECT_GT(refused, 400);  // every truncation is refused
  EXPECT_GT(read, 0);       // flips inside tensor data still read
}

// A pickle hand-made to be hostile in ways torch.save never writes: an unknown opcode, a stack underflow, a view
// past its storage. Built by editing the real file's pickle (stored uncompressed in the archive).
TEST(TorchFile, HostilePicklesAreRefused) {
  auto bytes = read_file(data("state.pt"));
  auto pos = bytes.find("collections\nOrderedDict");
  ASSERT_NE(pos, std::string::npos);
  auto evil = bytes;
  evil.replace(pos, 23, std::string("posix      \nsystem     "));
  auto m = message_of(evil);
  EXPECT_NE(m.find("refuses the pickle's global 'posix      .system     '"), std::string::npos) << m;
  auto builtins = bytes;
  builtins.replace(pos, 23, std::string("builtins   \neval       "));
  EXPECT_NE(message_of(builtins).find("refuses the pickle's global"), std::string::npos);
}
