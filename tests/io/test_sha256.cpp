#include <gtest/gtest.h>

#include <algorithm>
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

// NIST's long-message vector (FIPS 180-2 example, "SHA Test Vectors for Hashing
// Byte-Oriented Messages"): a 64-byte pattern repeated 2^24 times, 1 GiB, streamed
// in uneven pieces so that updates straddle block boundaries.
TEST(Sha256, OneGibibyteInUnevenPieces) {
  const std::string pattern = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno";
  std::string chunk;
  for (int i = 0; i < 16384; ++i) chunk += pattern;  // 1 MiB
  Sha256 h;
  const size_t total = size_t{1} << 30;
  size_t done = 0;
  for (size_t piece = 1; done < total; piece = piece * 5 % 1048573 + 1) {
    const size_t n = std::min({piece, total - done, chunk.size() - done % chunk.size()});
    h.update(chunk.data() + done % chunk.size(), n);
    done += n;
  }
  EXPECT_EQ(h.hex_digest(), "50e72a0e26442fe2552dc3938ac58658228c0cbfb1d2ca872ae435266fcd055e");
}

TEST(Sha256, MovesAndRejectsUseAfterDigest) {
  Sha256 a;
  a.update("ab", 2);
  Sha256 b = std::move(a);
  b.update("c", 1);
  EXPECT_EQ(b.hex_digest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_THROW(b.update("x", 1), Error);
  EXPECT_THROW(b.hex_digest(), Error);
  b = Sha256();  // a fresh hasher in place of a finished one, as the hub's resume does
  EXPECT_EQ(b.hex_digest(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
