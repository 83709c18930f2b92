// libFuzzer target: parse_infotext (documented never to throw), then a
// format -> parse round trip of what it parsed, which must be stable.
#include <string>

#include "io/infotext.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  diffuse::InfotextFields f = diffuse::parse_infotext(text);  // any exception is a bug
  std::string again = diffuse::format_infotext(f);
  diffuse::InfotextFields g = diffuse::parse_infotext(again);
  // The numeric fields survive a round trip exactly (they are written in
  // shortest round-trip form); prompts may be re-split, so only check numbers.
  // "Clip skip" is written only when > 1 (A1111), so 0 or 1 both read back as 1.
  const int clip_skip = f.clip_skip > 1 ? f.clip_skip : 1;
  if (g.steps != f.steps || g.seed != f.seed || g.width != f.width || g.height != f.height ||
      g.clip_skip != clip_skip) {
    __builtin_trap();
  }
  return 0;
}
