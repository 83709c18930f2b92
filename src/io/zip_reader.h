// Zip archives of PyTorch checkpoints (torch.save writes an uncompressed zip,
// zip64 past 4 GB), read with libzip from a buffer the caller keeps alive.
//
// libzip parses the archive (end records, zip64, central directory, local
// headers, consistency between them: ZIP_CHECKCONS) and inflates; around it we
// keep our own limits: how many entries, stored entries whose two sizes agree,
// only stored and deflate, no encryption, entries whose declared size exceeds
// what deflate can produce from their compressed size (zip bombs), a cap on
// the total inflated bytes per archive, and inflated data that must end at the
// declared size and pass its CRC-32.
//
// Stored entries are returned as views of the buffer (no copy): multi-GB
// checkpoints become tensors without a second copy in memory.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace diffuse {

struct ZipEntry {
  std::string name;     // raw bytes of the name as stored
  uint16_t method = 0;  // 0 stored, 8 deflate
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t index = 0;  // position in the central directory
};

// Bytes of one entry: either a view into the archive or owned memory.
struct ZipBytes {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::shared_ptr<std::vector<uint8_t>> owned;  // set when inflated (or copied)
};

class ZipReader {
 public:
  // 16 GiB of inflated data per archive: far above any real checkpoint that
  // uses deflate at all (torch never does), far below what a bomb asks for.
  static constexpr uint64_t kDefaultMaxInflated = 16ull << 30;
  // A real checkpoint has a few thousand entries (one per storage).
  static constexpr uint64_t kMaxEntries = 1u << 20;

  // Opens the archive and checks every entry. `name` prefixes error messages. Throws Error(kIo).
  ZipReader(const uint8_t* data, size_t size, std::string name, uint64_t max_inflated = kDefaultMaxInflated);
  ~ZipReader();
  ZipReader(const ZipReader&) = delete;
  ZipReader& operator=(const ZipReader&) = delete;

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& entry_name) const;
  // Reads an entry (stored: a view; deflate: inflated and CRC-checked).
  ZipBytes read(const ZipEntry& entry);

  // True when the buffer starts with a local file header ("PK\3\4").
  static bool has_zip_magic(const uint8_t* data, size_t size);

 private:
  struct Archive;  // libzip's handle and the buffer source it reads (zip_reader.cpp)
  [[noreturn]] void fail(const std::string& what) const;
  const uint8_t* stored_view(const ZipEntry& entry);
  std::shared_ptr<std::vector<uint8_t>> read_through_libzip(const ZipEntry& entry);

  const uint8_t* data_;
  size_t size_;
  std::string name_;
  uint64_t max_inflated_;
  uint64_t inflated_total_ = 0;
  std::unique_ptr<Archive> archive_;
  std::vector<ZipEntry> entries_;
};

}  // namespace diffuse
