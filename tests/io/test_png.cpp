#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/png.h"
#include "test_util.h"

using namespace diffuse;
namespace dt = diffuse::testing;

namespace {

std::vector<uint8_t> gradient(int w, int h) {
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &rgb[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<uint8_t>(x * 255 / (w - 1));
      p[1] = static_cast<uint8_t>(y * 255 / (h - 1));
      p[2] = static_cast<uint8_t>((x * 7 + y * 13) & 0xff);
    }
  return rgb;
}

// The chunk types in file order.
std::vector<std::string> chunk_types(const std::vector<uint8_t>& png) {
  std::vector<std::string> types;
  for (size_t pos = 8; pos + 12 <= png.size();) {
    uint32_t len = (uint32_t(png[pos]) << 24) | (uint32_t(png[pos + 1]) << 16) | (uint32_t(png[pos + 2]) << 8) | png[pos + 3];
    types.emplace_back(reinterpret_cast<const char*>(&png[pos + 4]), 4);
    pos += 12 + len;
  }
  return types;
}

}  // namespace

TEST(Png, RoundTripPixelsAndLatin1Parameters) {
  const int w = 37, h = 23;
  std::vector<uint8_t> rgb = gradient(w, h);
  std::string params =
      "a café, \"quoted\"\tand tab\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, "
      "CFG scale: 7, Seed: 1234, Size: 37x23";
  std::string path = dt::temp_dir() + "/out.png";
  write_png(path, w, h, rgb.data(), {{"parameters", params}});
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  std::string file = dt::read_file(path);
  std::vector<uint8_t> bytes(file.begin(), file.end());

  // Text goes right after IHDR (before IDAT) and, being Latin-1, as tEXt.
  std::vector<std::string> types = chunk_types(bytes);
  ASSERT_GE(types.size(), 4u);
  EXPECT_EQ(types[0], "IHDR");
  EXPECT_EQ(types[1], "tEXt");
  EXPECT_EQ(types.back(), "IEND");
  // é is stored as the single Latin-1 byte 0xE9.
  EXPECT_NE(file.find("a caf\xe9, "), std::string::npos);

  PngImage img = read_png(bytes.data(), bytes.size());
  EXPECT_EQ(img.width, w);
  EXPECT_EQ(img.height, h);
  EXPECT_EQ(img.rgb, rgb);
  PngText text = read_png_text(path);
  ASSERT_EQ(text.count("parameters"), 1u);
  EXPECT_EQ(text.at("parameters"), params);
}

TEST(Png, NonLatin1TextUsesItxt) {
  std::vector<uint8_t> rgb = gradient(8, 8);
  std::string params = "猫 on a 🚲, ünïcode\nSteps: 20, Sampler: Euler, CFG scale: 7.5";
  std::vector<uint8_t> png = encode_png(8, 8, rgb.data(), {{"parameters", params}, {"comment", "plain"}});
  std::vector<std::string> types = chunk_types(png);
  EXPECT_NE(std::find(types.begin(), types.end(), "iTXt"), types.end());
  EXPECT_NE(std::find(types.begin(), types.end(), "tEXt"), types.end());
  PngText text = read_png_text(png.data(), png.size());
  EXPECT_EQ(text.at("parameters"), params);
  EXPECT_EQ(text.at("comment"), "plain");
  EXPECT_EQ(read_png(png.data(), png.size()).rgb, rgb);
}

TEST(Png, RejectsBadInput) {
  std::vector<uint8_t> rgb = gradient(4, 4);
  EXPECT_THROW(encode_png(0, 4, rgb.data()), Error);
  EXPECT_THROW(encode_png(4, 4, rgb.data(), {{"", "x"}}), Error);
  EXPECT_THROW(encode_png(4, 4, rgb.data(), {{std::string(80, 'k'), "x"}}), Error);
  std::vector<uint8_t> png = encode_png(4, 4, rgb.data(), {{"parameters", "hello"}});
  std::vector<uint8_t> bad_crc = png;
  bad_crc[33 + 8 + 3] ^= 1;  // inside the tEXt body
  try {
    read_png_text(bad_crc.data(), bad_crc.size());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find("CRC"), std::string::npos) << e.what();
  }
  std::vector<uint8_t> truncated(png.begin(), png.begin() + 40);
  EXPECT_THROW(read_png_text(truncated.data(), truncated.size()), Error);
  EXPECT_THROW(read_png(truncated.data(), truncated.size()), Error);
  std::vector<uint8_t> junk{1, 2, 3};
  EXPECT_THROW(read_png_text(junk.data(), junk.size()), Error);
  EXPECT_THROW(read_png(junk.data(), junk.size()), Error);
  // Mutations never crash the text reader.
  uint32_t state = 99;
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> m = png;
    state = state * 1664525u + 1013904223u;
    m[(state >> 8) % m.size()] = static_cast<uint8_t>(state >> 24);
    try {
      read_png_text(m.data(), m.size());
    } catch (const Error&) {
    }
  }
}
