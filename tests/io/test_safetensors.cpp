// safetensors: fixture files against an independent header parse, writer
// round trips, sharded indexes, and every kind of malformed file.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/checkpoint.h"
#include "test_util.h"

using namespace diffuse;
using nlohmann::json;
namespace fs = std::filesystem;
namespace dt = diffuse::testing;

namespace {

std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Parses and returns the error (code kIo expected); empty when it parsed.
std::string parse_error(std::vector<uint8_t> bytes) {
  try {
    parse_safetensors(bytes.data(), bytes.size(), nullptr, "bad.safetensors");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo) << e.what();
    return e.what();
  }
  return "";
}

void expect_error(const std::vector<uint8_t>& bytes, std::vector<std::string> fragments) {
  std::string err = parse_error(bytes);
  ASSERT_FALSE(err.empty()) << "accepted a malformed file";
  EXPECT_NE(err.find("bad.safetensors"), std::string::npos) << err;
  for (const auto& f : fragments) EXPECT_NE(err.find(f), std::string::npos) << "'" << f << "' not in: " << err;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

}  // namespace

TEST(Safetensors, EveryFixtureLoads) {
  DIFFUSE_REQUIRE_FIXTURES();
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(dt::fixtures_dir())) {
    if (e.path().extension() != ".safetensors") continue;
    ++files;
    Checkpoint ck = load_safetensors(e.path().string());
    EXPECT_FALSE(ck.tensors.empty()) << e.path();
  }
  EXPECT_GE(files, 10);
}

TEST(Safetensors, SingleFileMatchesIndependentHeaderParse) {
  DIFFUSE_REQUIRE_FIXTURES();
  std::string path = dt::fixtures_dir() + "/sd1/single_file.safetensors";
  std::string raw = dt::read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  json header = json::parse(raw.substr(8, n));
  const char* section = raw.data() + 8 + n;

  Checkpoint ck = load_safetensors(path);
  size_t expected = header.size() - (header.contains("__metadata__") ? 1 : 0);
  ASSERT_EQ(ck.tensors.size(), expected);

  int f16_checked = 0;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const Tensor& t = ck.tensors.at(it.key());
    Shape shape = (*it)["shape"].get<Shape>();
    ASSERT_EQ(t.shape(), shape) << it.key();
    uint64_t begin = (*it)["data_offsets"][0], end = (*it)["data_offsets"][1];
    ASSERT_EQ(t.nbytes(), end - begin) << it.key();
    // Byte-exact content and zero-copy: the tensor points into the mapping.
    ASSERT_EQ(std::memcmp(t.raw_data(), section + begin, end - begin), 0) << it.key();
    if ((*it)["dtype"] == "F16" && f16_checked < 5 && t.numel() > 0) {
      ASSERT_EQ(t.dtype(), DType::kF16);
      std::vector<float> up = t.to(DType::kF32).to_f32_vector();
      for (int64_t i = 0; i < t.numel(); ++i) {
        uint16_t h;
        std::memcpy(&h, section + begin + 2 * i, 2);
        ASSERT_EQ(up[i], f16_to_f32(h)) << it.key() << "[" << i << "]";
      }
      ++f16_checked;
    }
  }
  EXPECT_EQ(f16_checked, 5);
}

TEST(Safetensors, WriterRoundTripAndPadding) {
  TensorMap m;
  m["a.weight"] = Tensor::from_vector({1.5f, -2.25f, 3.0f, 0.0f, 1e-8f, 65504.0f}, {2, 3});
  m["b"] = Tensor::from_vector({0.5f, 0.25f, -1.0f}, {3}).to(DType::kF16);
  m["c.ids"] = Tensor::from_ids({1, -7, 1LL << 40}, {3});
  m["empty"] = Tensor::zeros({0, 4}, DType::kF32);
  // A non-contiguous input is written in logical order.
  m["t"] = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}).transpose(0, 1);
  std::map<std::string, std::string> meta{{"format", "pt"}, {"note", "ünïcode"}};
  std::vector<uint8_t> bytes = serialize_safetensors(m, meta);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);

  std::string path = dt::temp_dir() + "/rt.safetensors";
  save_safetensors(path, m, meta);
  EXPECT_EQ(dt::read_file(path), std::string(bytes.begin(), bytes.end()));
  Checkpoint ck = load_safetensors(path);
  EXPECT_EQ(ck.metadata, meta);
  ASSERT_EQ(ck.tensors.size(), m.size());
  for (const auto& [name, t] : m) {
    const Tensor& r = ck.tensors.at(name);
    EXPECT_EQ(r.dtype(), t.dtype()) << name;
    EXPECT_EQ(r.shape(), t.shape()) << name;
    if (t.dtype() == DType::kI64)
      EXPECT_EQ(r.to_i64_vector(), t.to_i64_vector());
    else
      EXPECT_EQ(r.to_f32_vector(), t.to_f32_vector()) << name;
  }
}

TEST(Safetensors, UnpaddedHeaderAndConvertedDtypesLoad) {
  // Header of odd length: F32 data lands misaligned and must be copied, not viewed.
  double d[2] = {0.1, -3.5};
  std::vector<uint8_t> data(16 + 3 + 4);
  std::memcpy(data.data(), d, 16);
  data[16] = 0;
  data[17] = 255;
  data[18] = 7;          // U8
  data[19] = 0x81;       // I8 = -127
  data[20] = 1;          // BOOL
  data[21] = 0x38;       // F8_E4M3: exponent 7, mantissa 0 = 1.0
  data[22] = 0x3c;       // F8_E5M2 = 1.0 (f16 0x3c00)
  json h = {{"d", {{"dtype", "F64"}, {"shape", {2}}, {"data_offsets", {0, 16}}}},
            {"u", {{"dtype", "U8"}, {"shape", {3}}, {"data_offsets", {16, 19}}}},
            {"i", {{"dtype", "I8"}, {"shape", {1}}, {"data_offsets", {19, 20}}}},
            {"b", {{"dtype", "BOOL"}, {"shape", {1}}, {"data_offsets", {20, 21}}}},
            {"e4", {{"dtype", "F8_E4M3"}, {"shape", {1}}, {"data_offsets", {21, 22}}}},
            {"e5", {{"dtype", "F8_E5M2"}, {"shape", {1}}, {"data_offsets", {22, 23}}}}};
  std::string header = h.dump() + " ";  // odd total length on purpose
  if (header.size() % 2 == 0) header += " ";
  auto file = make_file(header, data);
  Checkpoint ck = parse_safetensors(file.data(), file.size(), nullptr, "x");
  EXPECT_EQ(ck.tensors.at("d").dtype(), DType::kF32);
  EXPECT_EQ(ck.tensors.at("d").to_f32_vector(), (std::vector<float>{0.1f, -3.5f}));
  EXPECT_EQ(ck.tensors.at("u").to_i64_vector(), (std::vector<int64_t>{0, 255, 7}));
  EXPECT_EQ(ck.tensors.at("i").to_i64_vector(), (std::vector<int64_t>{-127}));
  EXPECT_EQ(ck.tensors.at("b").to_i64_vector(), (std::vector<int64_t>{1}));
  EXPECT_EQ(ck.tensors.at("e4").to_f32_vector(), (std::vector<float>{1.0f}));
  EXPECT_EQ(ck.tensors.at("e5").to_f32_vector(), (std::vector<float>{1.0f}));
}

TEST(Safetensors, ShardedIndex) {
  std::string dir = dt::temp_dir();
  TensorMap a{{"x", Tensor::from_vector({1, 2}, {2})}}, b{{"y", Tensor::from_vector({3}, {1})}};
  save_safetensors(dir + "/m-00001-of-00002.safetensors", a);
  save_safetensors(dir + "/m-00002-of-00002.safetensors", b);
  json index = {{"metadata", {{"total_size", 12}}},
                {"weight_map", {{"x", "m-00001-of-00002.safetensors"}, {"y", "m-00002-of-00002.safetensors"}}}};
  std::ofstream(dir + "/m.safetensors.index.json") << index.dump();
  Checkpoint ck = load_checkpoint(dir + "/m.safetensors.index.json");
  ASSERT_EQ(ck.tensors.size(), 2u);
  EXPECT_EQ(ck.tensors.at("x").to_f32_vector(), (std::vector<float>{1, 2}));
  EXPECT_EQ(ck.tensors.at("y").to_f32_vector(), (std::vector<float>{3}));
  EXPECT_EQ(ck.metadata.at("total_size"), "12");

  index["weight_map"]["z"] = "m-00002-of-00002.safetensors";
  std::ofstream(dir + "/bad.safetensors.index.json") << index.dump();
  try {
    load_safetensors_index(dir + "/bad.safetensors.index.json");
    FAIL() << "missing tensor accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'z'"), std::string::npos) << e.what();
  }
  index["weight_map"]["z"] = "../../etc/passwd";
  std::ofstream(dir + "/evil.safetensors.index.json") << index.dump();
  EXPECT_THROW(load_safetensors_index(dir + "/evil.safetensors.index.json"), Error);
}

TEST(Safetensors, LoadCheckpointDispatchesByContent) {
  std::string path = dt::temp_dir() + "/really_safetensors.ckpt";
  save_safetensors(path, {{"w", Tensor::from_vector({4, 5}, {2})}});
  Checkpoint ck = load_checkpoint(path);
  EXPECT_EQ(ck.tensors.at("w").to_f32_vector(), (std::vector<float>{4, 5}));
}

TEST(SafetensorsHostile, TruncatedAndEmpty) {
  std::vector<uint8_t> good = serialize_safetensors({{"x.weight", Tensor::from_vector({1, 2, 3, 4}, {4})}});
  std::vector<uint8_t> cut(good.begin(), good.end() - 3);
  expect_error(cut, {"x.weight", "[0, 16]", "exceed the data section (13 bytes)"});
  expect_error({}, {"0 bytes", "too short"});
  expect_error({1, 2, 3}, {"3 bytes"});
  std::string err = parse_error({});
  EXPECT_FALSE(err.empty());
  // Missing file through the path API: kNotFound naming the path.
  try {
    load_safetensors("/nonexistent/model.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.safetensors"), std::string::npos);
  }
}

TEST(SafetensorsHostile, HeaderLengthBeyondFile) {
  auto f = make_file("{}", {});
  f[0] = 0xff;
  f[5] = 0x01;
  expect_error(f, {"header length", "exceeds"});
  auto huge = make_file("{}", {});
  for (int i = 0; i < 8; ++i) huge[i] = 0xff;  // 2^64-1: must not wrap around
  expect_error(huge, {"header length 18446744073709551615"});
}

TEST(SafetensorsHostile, NonJsonAndNonObjectHeaders) {
  expect_error(make_file("{\"a\": [1, 2", {}), {"not valid JSON"});
  expect_error(make_file("\xff\xfe garbage", {}), {"not valid JSON"});
  expect_error(make_file("[1, 2, 3]", {}), {"not an object"});
  expect_error(make_file(R"({"x": 5})", {}), {"'x'", "not a JSON object"});
  expect_error(make_file(R"({"__metadata__": {"a": 1}})", {}), {"__metadata__", "'a'"});
  expect_error(make_file(R"({"__metadata__": [1]})", {}), {"__metadata__"});
}

TEST(SafetensorsHostile, OverlappingRanges) {
  std::vector<uint8_t> data(16);
  json h = {{"a.weight", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
            {"b.weight", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}}}};
  expect_error(make_file(h.dump(), data), {"b.weight", "[4, 12]", "overlap", "a.weight", "[0, 8]"});
}

TEST(SafetensorsHostile, BadOffsets) {
  std::vector<uint8_t> data(16);
  auto with = [&](json offsets) {
    json h = {{"w", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", offsets}}}};
    return make_file(h.dump(), data);
  };
  expect_error(with({-8, 0}), {"'w'", "data_offsets [-8,0]", "non-negative"});
  expect_error(with({8, 0}), {"'w'", "[8, 0]", "end before they begin"});
  expect_error(with({0.5, 8.5}), {"'w'", "non-negative integers"});
  expect_error(with({0}), {"'w'", "[begin, end]"});
  expect_error(with({0, 8, 16}), {"'w'"});
  expect_error(with("0-8"), {"'w'"});
  expect_error(with({8, 24}), {"'w'", "[8, 24]", "exceed the data section (16 bytes)"});
  json missing = {{"w", {{"dtype", "F32"}, {"shape", {2}}}}};
  expect_error(make_file(missing.dump(), data), {"'w'", "missing"});
}

TEST(SafetensorsHostile, DtypeAndShapeProblems) {
  std::vector<uint8_t> data(16);
  auto with = [&](json dtype, json shape, json offsets) {
    json h = {{"w", {{"dtype", dtype}, {"shape", shape}, {"data_offsets", offsets}}}};
    return make_file(h.dump(), data);
  };
  // byte count mismatch: F16 x 2 is 4 bytes, not 8.
  expect_error(with("F16", {2}, {0, 8}), {"'w'", "[0, 8]", "hold 8 bytes", "needs 4"});
  expect_error(with("Q4_K", {2}, {0, 8}), {"'w'", "unknown dtype 'Q4_K'"});
  expect_error(with(7, {2}, {0, 8}), {"'w'", "dtype"});
  expect_error(with("F32", {-2}, {0, 8}), {"'w'", "shape [-2]", "non-negative"});
  expect_error(with("F32", {2.5}, {0, 8}), {"'w'", "shape"});
  expect_error(with("F32", 2, {0, 8}), {"'w'", "shape"});
  // 2^32 * 2^32 elements overflow 64 bits; so do 2^62 F32 elements' bytes.
  expect_error(with("F32", {1ull << 32, 1ull << 32}, {0, 8}), {"'w'", "overflows 64 bits"});
  expect_error(with("F32", {1ull << 62}, {0, 8}), {"'w'", "overflows 64 bits"});
  // A zero dimension makes any other size harmless.
  auto ok = with("F32", {0, 1ull << 62}, {0, 0});
  EXPECT_EQ(parse_error(ok), "");
}

// Byte-level mutations of a valid file never crash: each parses or throws Error.
TEST(SafetensorsHostile, MutationsNeverCrash) {
  TensorMap m{{"a", Tensor::from_vector({1, 2, 3}, {3})}, {"b", Tensor::from_vector({4}, {1}).to(DType::kF16)}};
  std::vector<uint8_t> good = serialize_safetensors(m, {{"k", "v"}});
  uint32_t state = 12345;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> f = good;
    int flips = 1 + iter % 4;
    for (int k = 0; k < flips; ++k) {
      state = state * 1664525u + 1013904223u;
      f[(state >> 8) % f.size()] = static_cast<uint8_t>(state >> 24);
    }
    if (iter % 7 == 0) f.resize((state >> 4) % f.size());
    try {
      parse_safetensors(f.data(), f.size(), nullptr, "m");
    } catch (const Error&) {
    }
  }
  SUCCEED();
}

TEST(Safetensors, MappedTensorsAreCopyOnWriteAndMisalignedDataIsCopied) {
  std::string dir = dt::temp_dir();
  // Odd header length: the F32 data starts at an odd address in the mapping.
  json h = {{"w", {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {0, 12}}}}};
  std::string header = h.dump();
  if (header.size() % 2 == 0) header += " ";
  std::vector<float> v{1.25f, -7.0f, 3.5f};
  std::vector<uint8_t> data(12);
  std::memcpy(data.data(), v.data(), 12);
  write_bytes(dir + "/odd.safetensors", make_file(header, data));
  Checkpoint odd = load_safetensors(dir + "/odd.safetensors");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(odd.tensors.at("w").raw_data()) % 4, 0u);
  EXPECT_EQ(odd.tensors.at("w").to_f32_vector(), v);

  // Writing into a loaded (mapped) tensor never reaches the file.
  std::string path = dir + "/cow.safetensors";
  save_safetensors(path, {{"w", Tensor::from_vector(v, {3})}});
  {
    Checkpoint ck = load_safetensors(path);
    ck.tensors.at("w").data<float>()[0] = 99.0f;
    EXPECT_EQ(ck.tensors.at("w").to_f32_vector()[0], 99.0f);
  }
  EXPECT_EQ(load_safetensors(path).tensors.at("w").to_f32_vector(), v);
}
