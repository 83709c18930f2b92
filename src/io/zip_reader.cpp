// Zip parsing per PKWARE APPNOTE.TXT: end of central directory (4.3.16),
// zip64 end of central directory record and locator (4.3.14-15), central
// directory headers (4.3.12), local file headers (4.3.7), zip64 extended
// information extra field (4.5.3).
#include "io/zip_reader.h"

#include <algorithm>
#include <cstring>

#include <zlib.h>

#include "core/error.h"

namespace diffuse {
namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kEndSize = 22, kCentralHeaderSize = 46, kLocalHeaderSize = 30;
// Deflate cannot expand better than ~1032:1 (a 258-byte match costs at least
// 2 bits), so a larger declared ratio is a lie. The slack covers tiny entries.
constexpr uint64_t kMaxDeflateRatio = 1032, kRatioSlack = 1024;

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24); }
uint64_t rd64(const uint8_t* p) { return uint64_t(rd32(p)) | (uint64_t(rd32(p + 4)) << 32); }

std::string at(uint64_t offset) { return " at byte " + std::to_string(offset); }

}  // namespace

ZipReader::ZipReader(const uint8_t* data, size_t size, std::string name, uint64_t max_inflated)
    : data_(data), size_(size), name_(std::move(name)), max_inflated_(max_inflated) {
  parse();
}

bool ZipReader::has_zip_magic(const uint8_t* data, size_t size) {
  return size >= 4 && rd32(data) == kLocalHeaderSig;
}

void ZipReader::fail(const std::string& what) const { throw_error(ErrorCode::kIo, name_ + ": zip: " + what); }

void ZipReader::parse() {
  if (size_ < kEndSize) fail("file of " + std::to_string(size_) + " bytes is too short for a zip archive");
  // The end record sits in the last 22 + 65535 (max comment) bytes.
  size_t lowest = size_ >= kEndSize + 0xffff ? size_ - kEndSize - 0xffff : 0;
  size_t end = SIZE_MAX;
  for (size_t pos = size_ - kEndSize + 1; pos-- > lowest;) {
    if (rd32(data_ + pos) == kEndSig && pos + kEndSize + rd16(data_ + pos + 20) <= size_) {
      end = pos;
      break;
    }
  }
  if (end == SIZE_MAX) fail("no end-of-central-directory record (truncated or not a zip)");
  const uint8_t* e = data_ + end;
  uint64_t count = rd16(e + 10);
  uint64_t cd_size = rd32(e + 12);
  uint64_t cd_offset = rd32(e + 16);
  if (count == 0xffff || cd_size == 0xffffffffu || cd_offset == 0xffffffffu) {
    if (end < 20 || rd32(data_ + end - 20) != kZip64LocatorSig) fail("zip64 end record locator missing" + at(end));
    uint64_t z64 = rd64(data_ + end - 20 + 8);
    if (z64 > size_ || size_ - z64 < 56 || rd32(data_ + z64) != kZip64EndSig)
      fail("zip64 end-of-central-directory offset " + std::to_string(z64) + " is invalid");
    count = rd64(data_ + z64 + 32);
    cd_size = rd64(data_ + z64 + 40);
    cd_offset = rd64(data_ + z64 + 48);
  }
  if (cd_offset > size_ || cd_size > size_ - cd_offset)
    fail("central directory [" + std::to_string(cd_offset) + ", +" + std::to_string(cd_size) +
         ") lies outside the " + std::to_string(size_) + "-byte file");
  if (count > cd_size / kCentralHeaderSize)
    fail(std::to_string(count) + " entries cannot fit a " + std::to_string(cd_size) + "-byte central directory");

  entries_.reserve(count);
  uint64_t pos = cd_offset, cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_end - pos < kCentralHeaderSize || rd32(data_ + pos) != kCentralHeaderSig)
      fail("bad central directory header" + at(pos));
    const uint8_t* h = data_ + pos;
    ZipEntry en;
    uint16_t flags = rd16(h + 8);
    en.method = rd16(h + 10);
    en.crc32 = rd32(h + 16);
    en.compressed_size = rd32(h + 20);
    en.uncompressed_size = rd32(h + 24);
    uint16_t name_len = rd16(h + 28), extra_len = rd16(h + 30), comment_len = rd16(h + 32);
    en.local_header_offset = rd32(h + 42);
    uint64_t var_len = uint64_t(name_len) + extra_len + comment_len;
    if (cd_end - pos - kCentralHeaderSize < var_len) fail("central directory header overruns the directory" + at(pos));
    en.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_len);
    if (flags & 1) fail("entry '" + en.name + "' is encrypted");
    // zip64 extra field: 8-byte values for whichever 32-bit fields are saturated, in this order.
    const uint8_t* x = h + kCentralHeaderSize + name_len;
    const uint8_t* x_end = x + extra_len;
    while (x_end - x >= 4) {
      uint16_t id = rd16(x), len = rd16(x + 2);
      if (x_end - x - 4 < len) fail("entry '" + en.name + "' has a truncated extra field");
      if (id == 0x0001) {
        const uint8_t* f = x + 4;
        const uint8_t* f_end = f + len;
        auto take = [&](uint64_t* v) {
          if (*v != 0xffffffffu) return;
          if (f_end - f < 8) fail("entry '" + en.name + "' has a short zip64 extra field");
          *v = rd64(f);
          f += 8;
        };
        take(&en.uncompressed_size);
        take(&en.compressed_size);
        take(&en.local_header_offset);
      }
      x += 4 + len;
    }
    pos += kCentralHeaderSize + var_len;

    uint64_t lh = en.local_header_offset;
    if (lh > size_ || size_ - lh < kLocalHeaderSize || rd32(data_ + lh) != kLocalHeaderSig)
      fail("entry '" + en.name + "' local header offset " + std::to_string(lh) + " is invalid");
    en.data_offset = lh + kLocalHeaderSize + rd16(data_ + lh + 26) + rd16(data_ + lh + 28);
    if (en.data_offset > size_ || en.compressed_size > size_ - en.data_offset)
      fail("entry '" + en.name + "' data [" + std::to_string(en.data_offset) + ", +" +
           std::to_string(en.compressed_size) + ") lies outside the " + std::to_string(size_) + "-byte file");
    if (en.method == 0 && en.compressed_size != en.uncompressed_size)
      fail("stored entry '" + en.name + "' declares " + std::to_string(en.uncompressed_size) + " bytes but holds " +
           std::to_string(en.compressed_size));
    if (en.method != 0 && en.method != 8)
      fail("entry '" + en.name + "' uses compression method " + std::to_string(en.method) +
           " (only stored and deflate are supported)");
    if (en.method == 8 && en.uncompressed_size > en.compressed_size * kMaxDeflateRatio + kRatioSlack)
      fail("entry '" + en.name + "' declares " + std::to_string(en.uncompressed_size) + " bytes from " +
           std::to_string(en.compressed_size) + " compressed bytes, beyond deflate's maximum ratio (zip bomb?)");
    entries_.push_back(std::move(en));
  }
}

const ZipEntry* ZipReader::find(const std::string& entry_name) const {
  for (const ZipEntry& e : entries_)
    if (e.name == entry_name) return &e;
  return nullptr;
}

ZipBytes ZipReader::read(const ZipEntry& entry) {
  ZipBytes out;
  const uint8_t* src = data_ + entry.data_offset;
  if (entry.method == 0) {
    out.data = src;
    out.size = static_cast<size_t>(entry.uncompressed_size);
    return out;
  }
  if (entry.uncompressed_size > max_inflated_ - std::min(max_inflated_, inflated_total_))
    fail("inflating entry '" + entry.name + "' (" + std::to_string(entry.uncompressed_size) +
         " bytes) would exceed the archive's limit of " + std::to_string(max_inflated_) + " inflated bytes");
  inflated_total_ += entry.uncompressed_size;
  auto buf = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(entry.uncompressed_size));
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) fail("zlib inflateInit failed");
  uint64_t in_left = entry.compressed_size, out_left = entry.uncompressed_size;
  const uint8_t* in = src;
  uint8_t* outp = buf->data();
  int rc = Z_OK;
  uint8_t overflow_probe = 0;
  // zlib counts in 32-bit uInt, so feed at most 1 GiB per call.
  while (rc == Z_OK) {
    constexpr uint64_t kChunk = 1u << 30;
    if (z.avail_in == 0 && in_left > 0) {
      z.next_in = const_cast<Bytef*>(in);
      z.avail_in = static_cast<uInt>(std::min(in_left, kChunk));
      in += z.avail_in;
      in_left -= z.avail_in;
    }
    if (z.avail_out == 0) {
      if (out_left > 0) {
        z.next_out = outp;
        z.avail_out = static_cast<uInt>(std::min(out_left, kChunk));
        outp += z.avail_out;
        out_left -= z.avail_out;
      } else {
        // Declared size reached: one more byte of output means the entry lied.
        z.next_out = &overflow_probe;
        z.avail_out = 1;
      }
    }
    uInt before_in = z.avail_in, before_out = z.avail_out;
    rc = inflate(&z, Z_NO_FLUSH);
    if (z.next_out == &overflow_probe + 1) {
      inflateEnd(&z);
      fail("entry '" + entry.name + "' inflates beyond its declared " + std::to_string(entry.uncompressed_size) +
           " bytes");
    }
    if (rc == Z_BUF_ERROR && before_in == z.avail_in && before_out == z.avail_out && in_left == 0) break;
    if (rc == Z_BUF_ERROR) rc = Z_OK;
  }
  uint64_t produced = z.total_out;
  inflateEnd(&z);
  if (rc != Z_STREAM_END)
    fail("entry '" + entry.name + "' has corrupt or truncated deflate data (zlib " + std::to_string(rc) + ")");
  if (produced != entry.uncompressed_size)
    fail("entry '" + entry.name + "' inflates to " + std::to_string(produced) + " bytes, not the declared " +
         std::to_string(entry.uncompressed_size));
  uint32_t crc = 0;
  const uint8_t* p = buf->data();
  for (uint64_t left = buf->size(); left > 0;) {
    uInt n = static_cast<uInt>(std::min<uint64_t>(left, 1u << 30));
    crc = static_cast<uint32_t>(crc32(crc, p, n));
    p += n;
    left -= n;
  }
  if (crc != entry.crc32) fail("entry '" + entry.name + "' fails its CRC-32 check");
  out.data = buf->data();
  out.size = buf->size();
  out.owned = std::move(buf);
  return out;
}

}  // namespace diffuse
