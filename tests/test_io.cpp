#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ddpm/data/points.h"
#include "ddpm/errors.h"
#include "ddpm/io/curves.h"
#include "ddpm/io/file.h"
#include "ddpm/io/plot.h"
#include "ddpm/io/npy.h"
#include "ddpm/io/safetensors.h"
#include "support.h"

extern "C" {
unsigned char* stbi_load(const char* filename, int* x, int* y, int* channels, int desired);
void stbi_image_free(void* p);
}

using namespace ddpm;
using namespace ddpm::test;

namespace {

std::string data(const std::string& name) { return std::string(DDPM_TEST_DATA) + "/" + name; }

std::string tmp(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("ddpm_test_io_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

}  // namespace

TEST(Npy, ReadsFilesWrittenByNumpy) {
  auto a = read_npy(data("points_f32.npy"));
  ASSERT_EQ(a.scalar_type(), at::kFloat);
  EXPECT_TRUE(a.equal(at::tensor({0.5f, -1.25f, 2.0f, 3.5f, -0.125f, 7.0f}).view({3, 2})));
  auto b = read_npy(data("points_f64.npy"));
  ASSERT_EQ(b.scalar_type(), at::kDouble);
  EXPECT_EQ(b.sizes(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(b[0][0].item<double>(), 1e-3);
  auto l = read_npy(data("labels_i64.npy"));
  EXPECT_TRUE(l.equal(at::tensor({2, 0, 1}, at::TensorOptions().dtype(at::kLong))));
  auto p = load_points_npy(data("points_f32.npy"), data("labels_i64.npy"));
  EXPECT_EQ(p.num_classes, 3);
}

TEST(Npy, WriteThenReadRoundTripsEveryDtype) {
  for (auto dt : {at::kFloat, at::kDouble, at::kLong, at::kInt, at::kByte}) {
    auto t = (at::rand({4, 5}, gen(1)) * 100).to(dt);
    write_npy(tmp("rt.npy"), t);
    auto r = read_npy(tmp("rt.npy"));
    EXPECT_EQ(r.scalar_type(), dt);
    EXPECT_TRUE(r.equal(t));
  }
  // Header is padded so that the data starts on a 64-byte boundary, as NumPy writes it.
  write_npy(tmp("pad.npy"), at::zeros({3}));
  EXPECT_EQ((std::filesystem::file_size(tmp("pad.npy")) - 12) % 64, 0u);
  write_npy(tmp("scalar_vec.npy"), at::ones({1}));
  EXPECT_EQ(read_npy(tmp("scalar_vec.npy")).sizes(), (std::vector<int64_t>{1}));
}

TEST(Npy, BadFilesGiveErrorsNamingTheProblem) {
  EXPECT_THROW(read_npy(tmp("missing.npy")), IoError);
  const std::string full = read_file(data("points_f32.npy"));
  write_bytes(tmp("trunc.npy"), full.substr(0, full.size() - 5));
  try {
    read_npy(tmp("trunc.npy"));
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  write_bytes(tmp("short.npy"), full.substr(0, 20));
  EXPECT_THROW(read_npy(tmp("short.npy")), FormatError);
  write_bytes(tmp("text.npy"), "hello, not numpy at all");
  EXPECT_THROW(read_npy(tmp("text.npy")), FormatError);
  EXPECT_THROW(read_npy(data("fortran_f32.npy")), FormatError);
  EXPECT_THROW(load_points_npy(data("cube_f32.npy")), FormatError);   // not N×D
  EXPECT_THROW(load_points_npy(data("labels_i64.npy")), FormatError);  // 1-D integers
  EXPECT_THROW(load_points_npy(data("points_f32.npy"), data("points_f64.npy")), FormatError);  // bad labels
}

// Found by fuzz/fuzz_npy: an empty array copied through a null data pointer (UB), and shapes whose element count
// overflows int64 or whose digits overflow stoll.
TEST(Npy, EmptyArraysReadAndImpossibleShapesAreRefused) {
  auto header = [](const std::string& shape) {
    std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
    h.append((64 - (10 + h.size() + 1) % 64) % 64, ' ');
    h += '\n';
    return std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(h.size() & 0xff) + static_cast<char>(h.size() >> 8) + h;
  };
  write_bytes(tmp("empty.npy"), header("(0, 2, 2)"));
  const auto empty = read_npy(tmp("empty.npy"));
  EXPECT_EQ(empty.sizes(), (std::vector<int64_t>{0, 2, 2}));
  for (const char* shape : {"(4294967296, 4294967296, 4294967296)", "(99999999999999999999999,)", "(3037000500, 3037000500)"}) {
    write_bytes(tmp("huge.npy"), header(shape) + std::string(64, '\0'));
    EXPECT_THROW(read_npy(tmp("huge.npy")), FormatError) << shape;
  }
}

TEST(SafeTensors, DecodesBytesAssembledFromTheSpecification) {
  // 8-byte little-endian header size, JSON header, then the data buffer (huggingface/safetensors README).
  const std::string header =
      R"({"__metadata__":{"k":"v"},"b":{"dtype":"I64","shape":[2],"data_offsets":[8,24]},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  bytes += header;
  const float fa[2] = {1.5f, -2.0f};
  const int64_t ib[2] = {7, -9};
  bytes.append(reinterpret_cast<const char*>(fa), 8);
  bytes.append(reinterpret_cast<const char*>(ib), 16);
  auto st = decode_safetensors(bytes);
  EXPECT_EQ(st.metadata.at("k"), "v");
  EXPECT_TRUE(st.at("a").equal(at::tensor({1.5f, -2.0f})));
  EXPECT_TRUE(st.at("b").equal(at::tensor({7, -9}, at::TensorOptions().dtype(at::kLong))));
}

TEST(SafeTensors, EncodingFollowsTheSpecificationAndRoundTrips) {
  SafeTensors st;
  st.tensors = {{"w", at::randn({3, 4}, gen(2))}, {"step", at::tensor({5}, at::TensorOptions().dtype(at::kLong))},
                {"h", at::randn({2}, gen(3)).to(at::kDouble)}};
  st.metadata["config"] = R"({"a": 1})";
  const std::string bytes = encode_safetensors(st);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<unsigned char>(bytes[i])) << (8 * i);
  EXPECT_EQ(n % 8, 0u);  // header padded to 8 bytes, so the buffer is aligned
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["w"]["dtype"], "F32");
  EXPECT_EQ(header["w"]["shape"], nlohmann::json({3, 4}));
  EXPECT_EQ(header["__metadata__"]["config"], R"({"a": 1})");
  EXPECT_EQ(bytes.size(), 8 + n + 3 * 4 * 4 + 8 + 2 * 8);
  save_safetensors(tmp("m.safetensors"), st);
  auto back = load_safetensors(tmp("m.safetensors"));
  ASSERT_EQ(back.tensors.size(), 3u);
  for (const auto& [name, t] : st.tensors) EXPECT_TRUE(back.at(name).equal(t)) << name;
  EXPECT_EQ(back.metadata, st.metadata);
}

TEST(SafeTensors, RejectsMalformedFiles) {
  SafeTensors st;
  st.tensors = {{"w", at::randn({8})}};
  const std::string good = encode_safetensors(st);
  EXPECT_THROW(decode_safetensors(good.substr(0, good.size() - 1)), FormatError);  // truncated data
  EXPECT_THROW(decode_safetensors(good.substr(0, 12)), FormatError);                // truncated header
  EXPECT_THROW(decode_safetensors(good + "xx"), FormatError);                       // trailing bytes
  std::string bad_json = good;
  bad_json[9] = '!';
  EXPECT_THROW(decode_safetensors(bad_json), FormatError);
  EXPECT_THROW(load_safetensors(tmp("nope.safetensors")), IoError);
  // Found by fuzz/fuzz_safetensors: a float in a shape (undefined behaviour in the integer conversion), and a shape
  // whose element count wraps around 2^64 to match an empty byte range.
  auto raw = [](const std::string& json) {
    std::string h = json;
    h.append((8 - h.size() % 8) % 8, ' ');
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
    return out + h;
  };
  EXPECT_THROW(decode_safetensors(raw(R"({"w": {"dtype": "F32", "shape": [6.7e26], "data_offsets": [0, 0]}})")), FormatError);
  EXPECT_THROW(decode_safetensors(raw(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8.5]}})") + std::string(8, '\0')),
               FormatError);
  EXPECT_THROW(decode_safetensors(raw(R"({"w": {"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})")),
               FormatError);
  const auto empty = decode_safetensors(raw(R"({"w": {"dtype": "F32", "shape": [3, 0], "data_offsets": [0, 0]}})"));
  EXPECT_EQ(empty.at("w").sizes(), (std::vector<int64_t>{3, 0}));
}

TEST(Files, AtomicWritesReplaceWholeFilesAndReportUnwritablePaths) {
  write_file_atomic(tmp("a.txt"), "first");
  write_file_atomic(tmp("a.txt"), "second");
  EXPECT_EQ(read_file(tmp("a.txt")), "second");
  EXPECT_THROW(write_file_atomic("/proc/definitely/not/here.txt", "x"), IoError);
  EXPECT_THROW(ensure_directory("/proc/ddpm_cannot_exist"), IoError);
}

TEST(Points, ToySetsAreSeededAndShaped) {
  for (const auto& name : toy_names()) {
    auto a = make_toy(name, 500, 1), b = make_toy(name, 500, 1), c = make_toy(name, 500, 2);
    EXPECT_EQ(a.x.sizes(), (std::vector<int64_t>{500, 2})) << name;
    EXPECT_TRUE(a.x.equal(b.x)) << name;
    EXPECT_FALSE(a.x.equal(c.x)) << name;
    EXPECT_TRUE(a.x.isfinite().all().item<bool>());
  }
  auto ring = make_toy("8gaussians", 8000, 3);
  EXPECT_EQ(ring.num_classes, 8);
  // Each point lies near the mode its label names.
  auto g = toy_mixture("8gaussians");
  for (int64_t i = 0; i < 100; ++i) {
    const int64_t k = ring.labels[i].item<int64_t>();
    EXPECT_LT(std::hypot(ring.x[i][0].item<double>() - g.means[k][0], ring.x[i][1].item<double>() - g.means[k][1]), 0.6);
  }
  auto counts = at::bincount(ring.labels, {}, 8).to(at::kDouble) / 8000.0;
  EXPECT_LT((counts - 0.125).abs().max().item<double>(), 0.02);
  auto moons = make_toy("moons", 1000, 1);
  EXPECT_EQ(moons.num_classes, 2);
  auto gauss = make_toy("gaussian", 20000, 1);
  EXPECT_NEAR(gauss.x.mean().item<double>(), 0.1, 0.01);
  EXPECT_NEAR(gauss.x.std().item<double>(), 0.4, 0.01);
  auto cb = make_toy("checkerboard", 4000, 1).x;
  EXPECT_LE(cb.abs().max().item<double>(), 2.0);
  // On the checkerboard, floor(x1) + floor(x2) is always even.
  EXPECT_TRUE((at::remainder(at::floor(cb.select(1, 0)) + at::floor(cb.select(1, 1)), 2) == 0).all().item<bool>());
  EXPECT_THROW(make_toy("spiral", 10, 1), InvalidArgument);
}

TEST(Points, MixtureJson) {
  write_bytes(tmp("mix.json"), R"({"weights": [1, 3], "means": [[0, 0], [1, 1]], "stds": [0.1, 0.2]})");
  auto g = load_mixture_json(tmp("mix.json"));
  EXPECT_EQ(g.num_components(), 2);
  EXPECT_EQ(g.dim(), 2);
  write_bytes(tmp("bad.json"), R"({"weights": [1], "means": [[0, 0]], "stds": [-1]})");
  EXPECT_THROW(load_mixture_json(tmp("bad.json")), FormatError);
  write_bytes(tmp("bad2.json"), R"({"weights": [1, 2], "means": [[0, 0]]})");
  EXPECT_THROW(load_mixture_json(tmp("bad2.json")), FormatError);
}

TEST(SafeTensors, AnIndependentReaderFromTheSpecificationAcceptsOurCheckpoints) {
  if (std::system("python3 -c 'import json, struct, math' > /dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  SafeTensors st;
  st.tensors = {{"ema.w", at::randn({3, 5}, gen(4))},
                {"b", at::arange(7, at::TensorOptions().dtype(at::kLong))},
                {"d", at::randn({2, 2, 2}, gen(5)).to(at::kDouble)},
                {"u", at::full({4}, 200, at::TensorOptions().dtype(at::kByte))},
                {"empty", at::zeros({0, 3})}};
  st.metadata = {{"network", R"({"type": "mlp"})"}, {"step", "12"}};
  save_safetensors(tmp("conf.safetensors"), st);
  nlohmann::json expected = {{"__metadata_keys__", {"network", "step"}}};
  for (const auto& [name, t] : st.tensors)
    expected[name] = {{"dtype", std::string(t.scalar_type() == at::kFloat   ? "F32"
                                            : t.scalar_type() == at::kLong  ? "I64"
                                            : t.scalar_type() == at::kDouble ? "F64"
                                                                              : "U8")},
                      {"shape", t.sizes().vec()},
                      {"sum", t.to(at::kDouble).sum().item<double>()}};
  write_file_atomic(tmp("conf.json"), expected.dump());
  const std::string cmd = "python3 " + std::string(DDPM_TEST_DATA) + "/../safetensors_conformance.py " +
                          tmp("conf.safetensors") + " " + tmp("conf.json");
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  // The checker itself rejects a file that breaks the format.
  std::string bytes = read_file(tmp("conf.safetensors"));
  write_file_atomic(tmp("broken.safetensors"), bytes.substr(0, bytes.size() - 4));
  const std::string bad = "python3 " + std::string(DDPM_TEST_DATA) + "/../safetensors_conformance.py " +
                          tmp("broken.safetensors") + " " + tmp("conf.json") + " > /dev/null";
  EXPECT_NE(std::system(bad.c_str()), 0);
}

TEST(Curves, GroupsFiltersSortsAndLetsTheLaterMeasurementCount) {
  const std::string text =
      "# a comment, then a blank line\n\n"
      "{\"step\":200,\"weights\":\"ema\",\"sampler\":\"a\",\"result\":{\"fid\":4.0}}\n"
      "{\"step\":100,\"weights\":\"ema\",\"sampler\":\"a\",\"result\":{\"fid\":9.0}}\n"
      "{\"step\":100,\"weights\":\"raw\",\"sampler\":\"a\",\"result\":{\"fid\":12.0}}\n"
      "{\"step\":100,\"weights\":\"ema\",\"bits_per_dim\":{\"bits_per_dim\":2.8}}\n"
      "{\"step\":200,\"weights\":\"ema\",\"sampler\":\"a\",\"result\":{\"fid\":3.5}}\n"
      "{\"step\":300,\"weights\":\"ema\",\"sampler\":7,\"result\":{\"fid\":\"n/a\"}}\n";
  CurveSpec spec{"step", "result.fid", {"weights", "sampler"}, {}};
  auto s = curves_from_json_lines(text, spec);
  ASSERT_EQ(s.size(), 2u);  // the bits/dim line and the non-numeric FID are skipped
  EXPECT_EQ(s[0].label, "ema, a");
  EXPECT_EQ(s[0].x, (std::vector<double>{100, 200}));
  EXPECT_EQ(s[0].y, (std::vector<double>{9.0, 3.5}));  // step 200 measured twice: the later line
  EXPECT_EQ(s[1].label, "raw, a");
  EXPECT_EQ(s[1].y, (std::vector<double>{12.0}));
  spec.where = {parse_where("weights=raw")};
  s = curves_from_json_lines(text, spec);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].label, "raw, a");
  spec = CurveSpec{"step", "bits_per_dim.bits_per_dim", {}, {{"step", "100"}}};  // numbers compare as their text
  s = curves_from_json_lines(text, spec);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].label, "");
  EXPECT_EQ(s[0].y, (std::vector<double>{2.8}));
}

TEST(Curves, NamesTheBadLineAndTheMisspeltPath) {
  const std::string text = "{\"step\":1,\"loss\":0.5}\n{\"step\":2,\"loss\":0.4}\n{\"step\":3,\n";
  try {
    curves_from_json_lines(text, CurveSpec{"step", "loss", {}, {}});
    FAIL() << "a truncated line was accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("line 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(curves_from_json_lines("{\"step\":1,\"loss\":0.5}\n", CurveSpec{"step", "los", {}, {}}), InvalidArgument);
  EXPECT_THROW(curves_from_json_lines("[1,2]\n", CurveSpec{"step", "loss", {}, {}}), FormatError);
  EXPECT_THROW(parse_where("weights"), InvalidArgument);
  EXPECT_THROW(parse_where("=ema"), InvalidArgument);
}

TEST(Plot, MarkersDrawEveryPointSoThatAOnePointSeriesShows) {
  // Count the pixels of the series' colour: without markers a one-point series leaves only its legend swatch.
  auto count = [](bool markers) {
    LineSeries one;
    one.x = {5}, one.y = {2};
    one.color = {200, 10, 10};
    one.label = "one";
    one.markers = markers;
    LineSeries two;
    two.x = {0, 10}, two.y = {1, 3};
    two.color = {10, 10, 200};
    const std::string path = tmp(markers ? "markers.png" : "plain.png");
    PlotOptions o;
    o.width = 300, o.height = 200;
    save_line_plot_png(path, {one, two}, o);
    int w = 0, h = 0, c = 0;
    unsigned char* p = stbi_load(path.c_str(), &w, &h, &c, 3);
    EXPECT_NE(p, nullptr);
    EXPECT_EQ(w, 300);
    int n = 0;
    for (int i = 0; p && i < w * h; ++i) n += p[3 * i] == 200 && p[3 * i + 1] == 10 && p[3 * i + 2] == 10;
    stbi_image_free(p);
    return n;
  };
  const int plain = count(false), marked = count(true);
  EXPECT_GE(marked - plain, 30) << "a radius-4 dot covers about 50 pixels";  // π·4² ≈ 50, less its antialiased rim
}
