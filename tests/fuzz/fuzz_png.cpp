// libFuzzer target: the PNG readers used by PNG Info and the tests
// (read_png_text: chunk walk, CRCs, tEXt/zTXt/iTXt; read_png: libspng decode).
#include "fuzz_common.h"
#include "io/png.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> buf(data, data + size);
  try {
    diffuse::PngText text = diffuse::read_png_text(buf.data(), buf.size());
    volatile size_t n = 0;
    for (const auto& [k, v] : text) n += k.size() + v.size();
    (void)n;
  } catch (const diffuse::Error&) {
  }
  try {
    diffuse::PngImage img = diffuse::read_png(buf.data(), buf.size());
    if (img.rgb.size() != static_cast<size_t>(img.width) * img.height * 3) __builtin_trap();
  } catch (const diffuse::Error&) {
  }
  return 0;
}
