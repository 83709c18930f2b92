// libzip reads the archive through a source we implement over the caller's
// buffer (zip_source_function_create). That source also records where each
// read begins, which is how a stored entry's data is found for a zero-copy
// view: libzip has no public call for an entry's offset in the archive
// (zip_stat_t carries none), but reading the entry's first and last byte
// through libzip makes it read exactly there. Anything unexpected falls back
// to a copy made by libzip, so the view is an optimisation, never a guess.
#include "io/zip_reader.h"

#include <algorithm>
#include <cstring>

#include <zip.h>

#include "core/error.h"

namespace diffuse {
namespace {

// Deflate cannot expand better than ~1032:1 (a 258-byte match costs at least
// 2 bits), so a larger declared ratio is a lie. The slack covers tiny entries.
constexpr uint64_t kMaxDeflateRatio = 1032, kRatioSlack = 1024;
constexpr size_t kEndRecordSize = 22;  // the smallest zip: one end-of-central-directory record
constexpr uint64_t kNoRead = UINT64_MAX;

// Frees a zip_error_t when it goes out of scope.
struct ZipError {
  zip_error_t e;
  ZipError() { zip_error_init(&e); }
  ~ZipError() { zip_error_fini(&e); }
  ZipError(const ZipError&) = delete;
  ZipError& operator=(const ZipError&) = delete;
};

struct FileCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};
using ZipFile = std::unique_ptr<zip_file_t, FileCloser>;

std::string libzip_message(zip_error_t* e) { return std::string(" (libzip: ") + zip_error_strerror(e) + ")"; }

}  // namespace

struct ZipReader::Archive {
  const uint8_t* data;
  uint64_t size;
  uint64_t pos = 0;
  uint64_t last_read = kNoRead;  // where the latest read began
  zip_error_t error;
  zip_t* zip = nullptr;

  Archive(const uint8_t* d, uint64_t n) : data(d), size(n) { zip_error_init(&error); }
  ~Archive() {
    if (zip) zip_discard(zip);  // read-only: discard is close without writing
    zip_error_fini(&error);
  }

  // The zip_source_callback: a seekable, read-only view of the buffer.
  static zip_int64_t serve(void* self, void* out, zip_uint64_t len, zip_source_cmd_t cmd) {
    Archive& a = *static_cast<Archive*>(self);
    switch (cmd) {
      case ZIP_SOURCE_OPEN:
        a.pos = 0;
        return 0;
      case ZIP_SOURCE_READ: {
        const uint64_t n = std::min<uint64_t>(len, a.size - std::min(a.pos, a.size));
        if (n > 0) std::memcpy(out, a.data + a.pos, n);
        a.last_read = a.pos;
        a.pos += n;
        return static_cast<zip_int64_t>(n);
      }
      case ZIP_SOURCE_CLOSE:
      case ZIP_SOURCE_FREE:  // the buffer is the caller's; ~Archive cleans up
        return 0;
      case ZIP_SOURCE_STAT: {
        zip_stat_t* st = ZIP_SOURCE_GET_ARGS(zip_stat_t, out, len, &a.error);
        if (!st) return -1;
        zip_stat_init(st);
        st->size = a.size;
        st->valid |= ZIP_STAT_SIZE;
        return sizeof(zip_stat_t);
      }
      case ZIP_SOURCE_ERROR:
        return zip_error_to_data(&a.error, out, len);
      case ZIP_SOURCE_SEEK: {
        const zip_int64_t to = zip_source_seek_compute_offset(a.pos, a.size, out, len, &a.error);
        if (to < 0) return -1;
        a.pos = static_cast<uint64_t>(to);
        return 0;
      }
      case ZIP_SOURCE_TELL:
        return static_cast<zip_int64_t>(a.pos);
      case ZIP_SOURCE_SUPPORTS:
        return ZIP_SOURCE_SUPPORTS_SEEKABLE;
      default:
        zip_error_set(&a.error, ZIP_ER_OPNOTSUPP, 0);
        return -1;
    }
  }
};

ZipReader::ZipReader(const uint8_t* data, size_t size, std::string name, uint64_t max_inflated)
    : data_(data), size_(size), name_(std::move(name)), max_inflated_(max_inflated) {
  if (size_ < kEndRecordSize) fail("file of " + std::to_string(size_) + " bytes is too short for a zip archive");
  archive_ = std::make_unique<Archive>(data_, size_);
  ZipError err;
  zip_source_t* src = zip_source_function_create(&Archive::serve, archive_.get(), &err.e);
  if (!src) fail("cannot create a libzip source" + libzip_message(&err.e));
  archive_->zip = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &err.e);
  if (!archive_->zip) {
    zip_source_free(src);  // still ours when the open fails
    switch (zip_error_code_zip(&err.e)) {
      case ZIP_ER_NOZIP:  // also what libzip says when the end record points at no valid central directory
        fail("no end-of-central-directory record that leads to a valid central directory (truncated or not a zip)");
      case ZIP_ER_INCONS:
        fail("the central directory does not match the " + std::to_string(size_) + "-byte file or its local headers" +
             libzip_message(&err.e));
      case ZIP_ER_MULTIDISK:
        fail("multi-disk archives are not supported");
      default:
        fail("cannot open the archive" + libzip_message(&err.e));
    }
  }

  const zip_int64_t count = zip_get_num_entries(archive_->zip, 0);
  if (count < 0 || static_cast<uint64_t>(count) > kMaxEntries)
    fail(std::to_string(count) + " entries is more than the " + std::to_string(kMaxEntries) + " a checkpoint may have");
  entries_.reserve(static_cast<size_t>(count));
  for (zip_uint64_t i = 0; i < static_cast<zip_uint64_t>(count); ++i) {
    zip_stat_t st;
    constexpr zip_uint64_t kNeeded = ZIP_STAT_NAME | ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_CRC |
                                     ZIP_STAT_COMP_METHOD | ZIP_STAT_ENCRYPTION_METHOD;
    if (zip_stat_index(archive_->zip, i, ZIP_FL_ENC_RAW, &st) != 0 || (st.valid & kNeeded) != kNeeded)
      fail("cannot read central directory entry " + std::to_string(i) + libzip_message(zip_get_error(archive_->zip)));
    ZipEntry en;
    en.name = st.name;
    en.method = st.comp_method;
    en.crc32 = st.crc;
    en.compressed_size = st.comp_size;
    en.uncompressed_size = st.size;
    en.index = i;
    if (st.encryption_method != ZIP_EM_NONE) fail("entry '" + en.name + "' is encrypted");
    if (en.compressed_size > size_)
      fail("entry '" + en.name + "' declares " + std::to_string(en.compressed_size) + " compressed bytes, more than the " +
           std::to_string(size_) + "-byte file");
    if (en.method == ZIP_CM_STORE && en.compressed_size != en.uncompressed_size)
      fail("stored entry '" + en.name + "' declares " + std::to_string(en.uncompressed_size) + " bytes but holds " +
           std::to_string(en.compressed_size));
    if (en.method != ZIP_CM_STORE && en.method != ZIP_CM_DEFLATE)
      fail("entry '" + en.name + "' uses compression method " + std::to_string(en.method) +
           " (only stored and deflate are supported)");
    if (en.method == ZIP_CM_DEFLATE && en.uncompressed_size > en.compressed_size * kMaxDeflateRatio + kRatioSlack)
      fail("entry '" + en.name + "' declares " + std::to_string(en.uncompressed_size) + " bytes from " +
           std::to_string(en.compressed_size) + " compressed bytes, beyond deflate's maximum ratio (zip bomb?)");
    entries_.push_back(std::move(en));
  }
}

ZipReader::~ZipReader() = default;

bool ZipReader::has_zip_magic(const uint8_t* data, size_t size) { return size >= 4 && std::memcmp(data, "PK\3\4", 4) == 0; }

void ZipReader::fail(const std::string& what) const { throw_error(ErrorCode::kIo, name_ + ": zip: " + what); }

const ZipEntry* ZipReader::find(const std::string& entry_name) const {
  for (const ZipEntry& e : entries_)
    if (e.name == entry_name) return &e;
  return nullptr;
}

// Where libzip reads a stored entry: the start of its first byte's read and of
// its last byte's read must be size - 1 apart and inside the buffer. Returns
// nullptr when they are not (the caller then copies).
const uint8_t* ZipReader::stored_view(const ZipEntry& entry) {
  Archive& a = *archive_;
  ZipFile f(zip_fopen_index(a.zip, entry.index, ZIP_FL_COMPRESSED));
  if (!f) return nullptr;
  auto read_at = [&](uint64_t offset) -> uint64_t {
    uint8_t byte;
    if (zip_fseek(f.get(), static_cast<zip_int64_t>(offset), SEEK_SET) != 0) return kNoRead;
    a.last_read = kNoRead;
    if (zip_fread(f.get(), &byte, 1) != 1 || a.last_read == kNoRead || a.last_read >= a.size ||
        a.data[a.last_read] != byte)
      return kNoRead;
    return a.last_read;
  };
  const uint64_t first = read_at(0);
  if (first == kNoRead || entry.uncompressed_size > a.size - first) return nullptr;
  if (entry.uncompressed_size > 1 && read_at(entry.uncompressed_size - 1) != first + entry.uncompressed_size - 1)
    return nullptr;
  return a.data + first;
}

std::shared_ptr<std::vector<uint8_t>> ZipReader::read_through_libzip(const ZipEntry& entry) {
  const std::string what = "entry '" + entry.name + "'";
  ZipFile f(zip_fopen_index(archive_->zip, entry.index, 0));
  if (!f) fail("cannot open " + what + libzip_message(zip_get_error(archive_->zip)));
  auto buf = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(entry.uncompressed_size));
  auto failed_read = [&]() {
    zip_error_t* e = zip_file_get_error(f.get());
    switch (zip_error_code_zip(e)) {
      case ZIP_ER_CRC:
        fail(what + " fails its CRC-32 check");
      case ZIP_ER_COMPRESSED_DATA:
      case ZIP_ER_ZLIB:
        fail(what + " has corrupt or truncated deflate data" + libzip_message(e));
      default:
        fail("cannot read " + what + libzip_message(e));
    }
  };
  uint64_t got = 0;
  while (got < buf->size()) {
    // At most 1 GiB per call, the size zlib counts in.
    const zip_int64_t n = zip_fread(f.get(), buf->data() + got, std::min<uint64_t>(buf->size() - got, 1u << 30));
    if (n < 0) failed_read();
    if (n == 0) break;
    got += static_cast<uint64_t>(n);
  }
  if (got != buf->size())
    fail(what + " inflates to " + std::to_string(got) + " bytes, not the declared " + std::to_string(buf->size()));
  // One more byte must be the end: libzip checks the CRC-32 when it reaches it.
  uint8_t probe;
  const zip_int64_t extra = zip_fread(f.get(), &probe, 1);
  if (extra > 0) fail(what + " inflates beyond its declared " + std::to_string(entry.uncompressed_size) + " bytes");
  if (extra < 0) failed_read();
  return buf;
}

ZipBytes ZipReader::read(const ZipEntry& entry) {
  ZipBytes out;
  out.size = static_cast<size_t>(entry.uncompressed_size);
  if (entry.method == ZIP_CM_STORE) {
    out.data = entry.uncompressed_size == 0 ? data_ : stored_view(entry);
    if (out.data) return out;
  } else {
    if (entry.uncompressed_size > max_inflated_ - std::min(max_inflated_, inflated_total_))
      fail("inflating entry '" + entry.name + "' (" + std::to_string(entry.uncompressed_size) +
           " bytes) would exceed the archive's limit of " + std::to_string(max_inflated_) + " inflated bytes");
    inflated_total_ += entry.uncompressed_size;
  }
  out.owned = read_through_libzip(entry);
  out.data = out.owned->data();
  return out;
}

}  // namespace diffuse
