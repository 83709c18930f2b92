// libFuzzer target: the CLIP BPE tokenizer (NFC normalisation, pre-tokeniser,
// byte mapping, BPE) with the real 49408-entry vocabulary, with "!" as a plain
// token (SD1) and as the split pad token (SD2/SDXL tokenizer_2).
#include <memory>
#include <string>

#include "core/error.h"
#include "text/clip_tokenizer.h"

namespace {
const diffuse::ClipTokenizer& tokenizer(bool bang_pad) {
  static const diffuse::ClipTokenizer plain =
      diffuse::ClipTokenizer::load(DIFFUSE_SOURCE_DIR "/models/tokenizers/clip");
  static const diffuse::ClipTokenizer bang = [] {
    diffuse::ClipTokenizer t = plain;
    t.set_pad_token("!");
    return t;
  }();
  return bang_pad ? bang : plain;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool bang_pad = data[0] & 1;
  std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  const diffuse::ClipTokenizer& t = tokenizer(bang_pad);
  std::vector<int> ids = t.tokenize(text);
  for (int id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= t.vocab_size()) __builtin_trap();
  }
  std::vector<int64_t> enc = t.encode(text);
  if (enc.size() != 77 || enc[0] != t.bos_id()) __builtin_trap();
  return 0;
}
