// PNG output with generation metadata, and the readers the PNG Info feature
// and the tests need. Pixels: 8-bit RGB, row-major, no padding.
//
// Text chunks follow PIL's PngInfo.add_text (what AUTOMATIC1111 uses to
// write "parameters"): tEXt when the text is representable in Latin-1, iTXt
// (UTF-8, uncompressed) otherwise. They are placed right after IHDR, before
// the image data, where PIL's Image.open finds them without decoding.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace diffuse {

using PngText = std::map<std::string, std::string>;  // keyword -> UTF-8 text

struct PngImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // width * height * 3
};

// Encodes to memory. Keywords: 1-79 Latin-1 characters (PNG spec 11.3.4).
// Throws Error(kInvalidArgument) on bad sizes/keywords, kRuntime on encoder failure.
std::vector<uint8_t> encode_png(int width, int height, const uint8_t* rgb, const PngText& text_chunks = {});
// Encodes and writes atomically (temporary file + rename). Throws Error(kIo).
void write_png(const std::string& path, int width, int height, const uint8_t* rgb, const PngText& text_chunks = {});

// Text of every tEXt / zTXt / iTXt chunk, as UTF-8 (tEXt/zTXt are Latin-1 on
// disk). Bounds- and CRC-checked; throws Error(kIo) on a malformed file.
// The byte variant is the fuzzing entry point.
PngText read_png_text(const uint8_t* data, size_t size);
PngText read_png_text(const std::string& path);

// Decodes any PNG (all color types and bit depths) to 8-bit RGB; alpha is
// dropped. Images above 16384x16384 are refused. Throws Error(kIo).
PngImage read_png(const uint8_t* data, size_t size);

// A PNG decoded to 8-bit RGBA, keeping what was stored: masks need the alpha
// channel (inpainting masks, OpenAI edit masks). Same limits and errors as
// read_png (16384x16384, Error(kIo) on a malformed file).
struct PngRgba {
  int width = 0;
  int height = 0;
  // Channels as stored: 1 gray, 2 gray + alpha, 3 RGB (palette images count
  // as RGB), 4 RGBA.
  int channels = 0;
  // An alpha channel (gray + alpha, RGBA) or a tRNS chunk (gray, RGB or
  // palette with a transparent colour / palette alpha). It says the file can
  // be transparent, not that any pixel is.
  bool has_alpha = false;
  std::vector<uint8_t> rgba;  // width * height * 4; alpha 255 where none is stored
};
PngRgba read_png_rgba(const uint8_t* data, size_t size);

}  // namespace diffuse
