// PNG via libspng for pixels; text chunks are written and parsed here (PNG
// spec sections 5.3 chunk layout, 11.3.4 tEXt/zTXt/iTXt) so that we control
// exactly which chunk type holds the text, as PIL does.
#include "io/png.h"

#include <cstdlib>
#include <cstring>
#include <memory>

#include <spng.h>
#include <zlib.h>

#include "core/error.h"
#include "io/file_io.h"

namespace diffuse {
namespace {

constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
constexpr uint32_t kMaxDimension = 16384;
// A text chunk that inflates past this is refused (keeps zTXt bombs small).
constexpr size_t kMaxTextBytes = 64u << 20;

struct SpngFree {
  void operator()(spng_ctx* c) const { spng_ctx_free(c); }
};
using SpngCtx = std::unique_ptr<spng_ctx, SpngFree>;

uint32_t rd32be(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }
void put32be(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}

// Decodes UTF-8 into code points; false on malformed input.
bool utf8_to_latin1(const std::string& s, std::string* latin1) {
  latin1->clear();
  for (size_t i = 0; i < s.size();) {
    uint8_t c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      latin1->push_back(static_cast<char>(c));
      ++i;
    } else if ((c & 0xe0) == 0xc0 && i + 1 < s.size() && (static_cast<uint8_t>(s[i + 1]) & 0xc0) == 0x80) {
      uint32_t cp = ((c & 0x1fu) << 6) | (static_cast<uint8_t>(s[i + 1]) & 0x3fu);
      if (cp < 0x80 || cp > 0xff) return false;  // overlong, or beyond Latin-1
      latin1->push_back(static_cast<char>(cp));
      i += 2;
    } else {
      return false;
    }
  }
  return true;
}

std::string latin1_to_utf8(const uint8_t* p, size_t n) {
  std::string out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (p[i] < 0x80) {
      out.push_back(static_cast<char>(p[i]));
    } else {
      out.push_back(static_cast<char>(0xc0 | (p[i] >> 6)));
      out.push_back(static_cast<char>(0x80 | (p[i] & 0x3f)));
    }
  }
  return out;
}

void append_chunk(std::vector<uint8_t>& out, const char type[4], const std::string& body) {
  put32be(out, static_cast<uint32_t>(body.size()));
  size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), body.begin(), body.end());
  uint32_t crc = static_cast<uint32_t>(crc32(0, out.data() + start, static_cast<uInt>(out.size() - start)));
  put32be(out, crc);
}

std::string text_chunk_body(const std::string& keyword, const std::string& text, const char** type) {
  std::string latin1_key;
  DIFFUSE_CHECK_ARG(!keyword.empty() && keyword.size() < 80 * 2 && utf8_to_latin1(keyword, &latin1_key) &&
                        latin1_key.size() <= 79 && latin1_key.find('\0') == std::string::npos,
                    "[png] text keyword '" + keyword + "' must be 1-79 Latin-1 characters");
  std::string latin1_text;
  if (utf8_to_latin1(text, &latin1_text)) {
    *type = "tEXt";
    return latin1_key + '\0' + latin1_text;
  }
  // iTXt: keyword, 0, compression flag 0, method 0, empty language tag, 0,
  // empty translated keyword, 0, UTF-8 text.
  *type = "iTXt";
  return latin1_key + std::string("\0\0\0\0\0", 5) + text;
}

std::string inflate_text(const uint8_t* p, size_t n, const std::string& where) {
  z_stream z{};
  if (inflateInit(&z) != Z_OK) throw_error(ErrorCode::kIo, where + ": zlib init failed");
  std::string out;
  z.next_in = const_cast<Bytef*>(p);
  z.avail_in = static_cast<uInt>(n);
  int rc = Z_OK;
  char buf[16384];
  while (rc == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof(buf);
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - z.avail_out);
    if (out.size() > kMaxTextBytes) {
      inflateEnd(&z);
      throw_error(ErrorCode::kIo, where + ": compressed text inflates past " + std::to_string(kMaxTextBytes) + " bytes");
    }
    if (rc == Z_BUF_ERROR && z.avail_in == 0) break;
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END) throw_error(ErrorCode::kIo, where + ": corrupt compressed text");
  return out;
}

}  // namespace

std::vector<uint8_t> encode_png(int width, int height, const uint8_t* rgb, const PngText& text_chunks) {
  DIFFUSE_CHECK_ARG(width > 0 && height > 0 && static_cast<uint32_t>(width) <= kMaxDimension &&
                        static_cast<uint32_t>(height) <= kMaxDimension,
                    "[png] image size " + std::to_string(width) + "x" + std::to_string(height) + " is out of range");
  DIFFUSE_CHECK_ARG(rgb != nullptr, "[png] no pixels");
  SpngCtx ctx(spng_ctx_new(SPNG_CTX_ENCODER));
  DIFFUSE_CHECK(ctx, ErrorCode::kOutOfMemory, "[png] cannot create an encoder");
  spng_set_option(ctx.get(), SPNG_ENCODE_TO_BUFFER, 1);
  spng_ihdr ihdr{};
  ihdr.width = static_cast<uint32_t>(width);
  ihdr.height = static_cast<uint32_t>(height);
  ihdr.bit_depth = 8;
  ihdr.color_type = SPNG_COLOR_TYPE_TRUECOLOR;
  spng_set_ihdr(ctx.get(), &ihdr);
  size_t len = static_cast<size_t>(width) * height * 3;
  int err = spng_encode_image(ctx.get(), rgb, len, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
  if (err) throw_error(ErrorCode::kRuntime, std::string("[png] encode failed: ") + spng_strerror(err));
  size_t png_len = 0;
  std::unique_ptr<uint8_t, decltype(&std::free)> png(static_cast<uint8_t*>(spng_get_png_buffer(ctx.get(), &png_len, &err)),
                                                      &std::free);
  if (!png || err) throw_error(ErrorCode::kRuntime, std::string("[png] encode failed: ") + spng_strerror(err));

  // signature (8) + IHDR chunk (4 length + 4 type + 13 data + 4 crc) = 33 bytes.
  constexpr size_t kAfterIhdr = 33;
  DIFFUSE_CHECK(png_len > kAfterIhdr, ErrorCode::kRuntime, "[png] encoder produced a short file");
  std::vector<uint8_t> out(png.get(), png.get() + kAfterIhdr);
  for (const auto& [key, text] : text_chunks) {
    const char* type = nullptr;
    std::string body = text_chunk_body(key, text, &type);
    append_chunk(out, type, body);
  }
  out.insert(out.end(), png.get() + kAfterIhdr, png.get() + png_len);
  return out;
}

void write_png(const std::string& path, int width, int height, const uint8_t* rgb, const PngText& text_chunks) {
  std::vector<uint8_t> bytes = encode_png(width, height, rgb, text_chunks);
  write_file_atomic(path, bytes.data(), bytes.size());
}

PngText read_png_text(const uint8_t* data, size_t size) {
  if (size < 8 || std::memcmp(data, kSignature, 8) != 0) throw_error(ErrorCode::kIo, "[png] not a PNG file (bad signature)");
  PngText out;
  size_t pos = 8;
  while (pos < size) {
    if (size - pos < 12) throw_error(ErrorCode::kIo, "[png] truncated chunk header at byte " + std::to_string(pos));
    uint32_t len = rd32be(data + pos);
    const uint8_t* type = data + pos + 4;
    if (len > size - pos - 12)
      throw_error(ErrorCode::kIo, "[png] chunk of " + std::to_string(len) + " bytes at byte " + std::to_string(pos) +
                                      " runs past the end of the file");
    const uint8_t* body = data + pos + 8;
    std::string where = "[png] " + std::string(reinterpret_cast<const char*>(type), 4) + " chunk at byte " + std::to_string(pos);
    bool is_text = !std::memcmp(type, "tEXt", 4) || !std::memcmp(type, "zTXt", 4) || !std::memcmp(type, "iTXt", 4);
    if (is_text) {
      uint32_t crc = static_cast<uint32_t>(crc32(0, type, len + 4));
      if (crc != rd32be(body + len)) throw_error(ErrorCode::kIo, where + ": CRC mismatch");
      const uint8_t* nul = static_cast<const uint8_t*>(std::memchr(body, 0, len));
      if (!nul || nul == body) throw_error(ErrorCode::kIo, where + ": missing keyword");
      std::string key = latin1_to_utf8(body, nul - body);
      const uint8_t* rest = nul + 1;
      size_t rest_len = len - (rest - body);
      if (!std::memcmp(type, "tEXt", 4)) {
        out[key] = latin1_to_utf8(rest, rest_len);
      } else if (!std::memcmp(type, "zTXt", 4)) {
        if (rest_len < 1 || rest[0] != 0) throw_error(ErrorCode::kIo, where + ": unknown compression method");
        std::string latin1 = inflate_text(rest + 1, rest_len - 1, where);
        out[key] = latin1_to_utf8(reinterpret_cast<const uint8_t*>(latin1.data()), latin1.size());
      } else {
        if (rest_len < 2) throw_error(ErrorCode::kIo, where + ": truncated");
        bool compressed = rest[0] != 0;
        const uint8_t* end = rest + rest_len;
        const uint8_t* p = rest + 2;
        for (int skip = 0; skip < 2; ++skip) {  // language tag, translated keyword
          const uint8_t* z = static_cast<const uint8_t*>(std::memchr(p, 0, end - p));
          if (!z) throw_error(ErrorCode::kIo, where + ": truncated");
          p = z + 1;
        }
        out[key] = compressed ? inflate_text(p, end - p, where) : std::string(reinterpret_cast<const char*>(p), end - p);
      }
    }
    pos += 12 + static_cast<size_t>(len);
    if (!std::memcmp(type, "IEND", 4)) break;
  }
  return out;
}

PngText read_png_text(const std::string& path) {
  std::shared_ptr<MappedFile> f = MappedFile::open(path);
  try {
    return read_png_text(f->data(), f->size());
  } catch (const Error& e) {
    throw_error(e.code(), path + ": " + e.what());
  }
}

// One bounded, CRC-checked decode of the whole image into `fmt` (flags: spng
// decode flags); `out` is resized to the decoded size. Throws Error(kIo).
static spng_ihdr decode_png(const uint8_t* data, size_t size, int fmt, int flags, std::vector<uint8_t>& out,
                     spng_trns* trns = nullptr, bool* has_trns = nullptr) {
  SpngCtx ctx(spng_ctx_new(0));
  DIFFUSE_CHECK(ctx, ErrorCode::kOutOfMemory, "[png] cannot create a decoder");
  spng_set_image_limits(ctx.get(), kMaxDimension, kMaxDimension);
  spng_set_chunk_limits(ctx.get(), kMaxTextBytes, kMaxTextBytes * 4);
  spng_set_crc_action(ctx.get(), SPNG_CRC_ERROR, SPNG_CRC_DISCARD);
  int err = spng_set_png_buffer(ctx.get(), data, size);
  spng_ihdr ihdr{};
  if (!err) err = spng_get_ihdr(ctx.get(), &ihdr);
  size_t len = 0;
  if (!err) err = spng_decoded_image_size(ctx.get(), fmt, &len);
  if (!err) {
    out.resize(len);
    err = spng_decode_image(ctx.get(), out.data(), len, fmt, flags);
  }
  if (err) throw_error(ErrorCode::kIo, std::string("[png] decode failed: ") + spng_strerror(err));
  if (has_trns) *has_trns = spng_get_trns(ctx.get(), trns) == 0;
  return ihdr;
}

PngImage read_png(const uint8_t* data, size_t size) {
  PngImage img;
  const spng_ihdr ihdr = decode_png(data, size, SPNG_FMT_RGB8, 0, img.rgb);
  img.width = static_cast<int>(ihdr.width);
  img.height = static_cast<int>(ihdr.height);
  return img;
}

PngRgba read_png_rgba(const uint8_t* data, size_t size) {
  PngRgba img;
  spng_trns trns{};
  bool has_trns = false;
  // SPNG_DECODE_TRNS turns a tRNS chunk into alpha (a no-op without one).
  const spng_ihdr ihdr = decode_png(data, size, SPNG_FMT_RGBA8, SPNG_DECODE_TRNS, img.rgba, &trns, &has_trns);
  img.width = static_cast<int>(ihdr.width);
  img.height = static_cast<int>(ihdr.height);
  switch (ihdr.color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE: img.channels = 1; img.has_alpha = has_trns; break;
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA: img.channels = 2; img.has_alpha = true; break;
    case SPNG_COLOR_TYPE_TRUECOLOR:
    case SPNG_COLOR_TYPE_INDEXED: img.channels = 3; img.has_alpha = has_trns; break;
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA: img.channels = 4; img.has_alpha = true; break;
    default: throw_error(ErrorCode::kIo, "[png] unknown color type " + std::to_string(ihdr.color_type));
  }
  return img;
}

}  // namespace diffuse
