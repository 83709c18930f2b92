// A minimal, defensive zip reader for PyTorch checkpoints (torch.save writes
// an uncompressed zip, zip64 past 4 GB; PKWARE APPNOTE.TXT sections 4.3-4.5).
//
// Everything read from the archive is bounds-checked against the buffer.
// Stored entries are returned as views of the buffer (no copy); deflated ones
// are inflated with zlib into their own memory, refusing entries whose
// declared size exceeds what deflate can produce from their compressed size
// (zip bombs) and capping the total inflated bytes per archive.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace diffuse {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflate
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t local_header_offset = 0;
  uint64_t data_offset = 0;  // first byte of the entry's data in the archive
};

// Bytes of one entry: either a view into the archive or owned memory.
struct ZipBytes {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::shared_ptr<std::vector<uint8_t>> owned;  // set when inflated
};

class ZipReader {
 public:
  // 16 GiB of inflated data per archive: far above any real checkpoint that
  // uses deflate at all (torch never does), far below what a bomb asks for.
  static constexpr uint64_t kDefaultMaxInflated = 16ull << 30;

  // Parses the central directory. `name` prefixes error messages. Throws Error(kIo).
  ZipReader(const uint8_t* data, size_t size, std::string name, uint64_t max_inflated = kDefaultMaxInflated);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& entry_name) const;
  // Reads an entry (stored: a view; deflate: inflated and CRC-checked).
  ZipBytes read(const ZipEntry& entry);

  // True when the buffer starts with a local file header ("PK\3\4").
  static bool has_zip_magic(const uint8_t* data, size_t size);

 private:
  void parse();
  [[noreturn]] void fail(const std::string& what) const;

  const uint8_t* data_;
  size_t size_;
  std::string name_;
  uint64_t max_inflated_;
  uint64_t inflated_total_ = 0;
  std::vector<ZipEntry> entries_;
};

}  // namespace diffuse
