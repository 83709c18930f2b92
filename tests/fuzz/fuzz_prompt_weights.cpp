// libFuzzer target: A1111 emphasis syntax (parse_prompt_attention) and
// long-prompt chunking (encode_weighted) with the real CLIP vocabulary.
#include <cmath>
#include <string>

#include "core/error.h"
#include "text/prompt_weights.h"

namespace {
const diffuse::ClipTokenizer& tokenizer() {
  static const diffuse::ClipTokenizer t = diffuse::ClipTokenizer::load(DIFFUSE_SOURCE_DIR "/models/tokenizers/clip");
  return t;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string prompt(reinterpret_cast<const char*>(data), size);
  try {
    auto fragments = diffuse::parse_prompt_attention(prompt);
    if (fragments.empty()) __builtin_trap();
    diffuse::PromptChunks c = diffuse::encode_weighted(tokenizer(), prompt);
    if (c.ids.empty() || c.ids.size() != c.weights.size()) __builtin_trap();
    for (size_t i = 0; i < c.ids.size(); ++i) {
      if (c.ids[i].size() != 77 || c.weights[i].size() != 77) __builtin_trap();
    }
    diffuse::pad_to_chunk_count(c, tokenizer(), c.ids.size() + 1);
    if (c.ids.size() != c.weights.size()) __builtin_trap();
  } catch (const diffuse::Error& e) {
    // Only malformed weights like "(a:1.2.3)" may be rejected.
    if (e.code() != diffuse::ErrorCode::kInvalidArgument) __builtin_trap();
  }
  return 0;
}
