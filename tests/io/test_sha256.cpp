#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/sha256.h"
#include "test_util.h"

using namespace diffuse;

// FIPS 180-4 / NIST example vectors.
TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(sha256_hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  std::string million(1000000, 'a');
  EXPECT_EQ(sha256_hex(million.data(), million.size()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalMatchesOneShotAtEveryPaddingBoundary) {
  std::string data;
  for (int i = 0; i < 200; ++i) data.push_back(static_cast<char>(i * 7 + 3));
  for (size_t n : {0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 200}) {
    std::string one = sha256_hex(data.data(), n);
    Sha256 h;
    for (size_t i = 0; i < n; i += 3) h.update(data.data() + i, std::min<size_t>(3, n - i));
    EXPECT_EQ(h.hex_digest(), one) << n;
  }
}

TEST(Sha256, FileAndA1111Hashes) {
  std::string path = diffuse::testing::temp_dir() + "/million.bin";
  {
    std::ofstream f(path, std::ios::binary);
    std::string million(1000000, 'a');
    f << million;
  }
  EXPECT_EQ(sha256_file(path), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(a1111_short_hash(sha256_file(path)), "cdc76e5c99");
  // Legacy hash: sha256 of the 64 KiB at 1 MiB. 1,000,000 < 1 MiB, so it hashes nothing.
  EXPECT_EQ(a1111_legacy_hash(path), "e3b0c442");

  std::string big = diffuse::testing::temp_dir() + "/big.bin";
  std::string content(0x100000 + 0x10000 + 100, 'b');
  for (size_t i = 0x100000; i < 0x110000; ++i) content[i] = static_cast<char>(i & 0xff);
  std::ofstream(big, std::ios::binary) << content;
  EXPECT_EQ(a1111_legacy_hash(big), sha256_hex(content.data() + 0x100000, 0x10000).substr(0, 8));
  EXPECT_EQ(sha256_file(big), sha256_hex(content.data(), content.size()));
}

TEST(Sha256, MissingFileThrowsIo) {
  try {
    sha256_file("/nonexistent/file.safetensors");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/file.safetensors"), std::string::npos);
  }
}

// The SHA-NI block function must agree with the portable one (both are
// exercised here whichever one Sha256 picks on this CPU).
TEST(Sha256, HardwarePathMatchesPortable) {
  if (!sha256_detail::hw_available()) GTEST_SKIP() << "CPU has no SHA extensions";
  std::vector<uint8_t> data(64 * 37);
  uint32_t x = 1;
  for (auto& b : data) {
    x = x * 1103515245u + 12345u;
    b = static_cast<uint8_t>(x >> 16);
  }
  for (size_t blocks : {1, 2, 37}) {
    uint32_t a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    sha256_detail::compress_portable(a, data.data(), blocks);
    sha256_detail::compress_hw(b, data.data(), blocks);
    EXPECT_EQ(std::vector<uint32_t>(a, a + 8), std::vector<uint32_t>(b, b + 8)) << blocks;
  }
}
