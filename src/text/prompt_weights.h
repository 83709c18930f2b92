// AUTOMATIC1111 prompt emphasis and long-prompt chunking.
//
// parse_prompt_attention follows stable-diffusion-webui modules/prompt_parser.py:
//   (a)      weight x1.1         [a]       weight / 1.1
//   (a:1.3)  weight x1.3         nesting   multiplies: ((a)) = 1.21
//   \( \) \[ \] \\  literal brackets / backslash
//   unbalanced "(" / "[" apply to the rest of the prompt; unmatched ")" / "]" are text
//   BREAK    (a separate word, upper case) forces a new 75-token chunk; it is returned
//            as the fragment {"BREAK", -1}
// Adjacent fragments of identical weight are merged; an empty prompt gives {{"", 1}}.
// Weights are computed in double (as Python does) and compared exactly before merging.
//
// encode_weighted follows modules/sd_hijack_clip.py
// (FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line): each fragment is tokenised on its
// own, tokens are packed into chunks of 75; when a chunk is full and the last comma is at
// most `comma_padding_backtrack` tokens back, the tokens after that comma move to the next
// chunk; BREAK closes the current chunk. Each chunk is laid out like
// ClipTokenizer::encode: [bos] + tokens + [eos] + [pad]... (77 ids; A1111 pads with eos and
// then, for SD2-style tokenizers, replaces everything after the first eos by the pad id,
// which is the same layout). Weights are 1.0 at bos/eos/pad.
// Contract: a prompt without weighting syntax and with <= 75 tokens gives exactly one
// chunk equal to tokenizer.encode(prompt) with all weights 1.0, so the plain path matches
// diffusers.
// Not handled here (A1111 does them earlier): prompt editing [a:b:step], alternation
// [a|b], <lora:...> extra networks, textual-inversion embeddings.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "text/clip_tokenizer.h"

namespace diffuse {

constexpr float kBreakWeight = -1.0f;  // weight of the {"BREAK", -1} marker fragment
constexpr int kChunkTokens = 75;       // prompt tokens per 77-id chunk
constexpr int kDefaultCommaPaddingBacktrack = 20;

// Throws Error(kInvalidArgument) for a weight A1111's float() would reject, e.g. "(a:1.2.3)".
std::vector<std::pair<std::string, float>> parse_prompt_attention(const std::string& prompt);

// True when parse_prompt_attention would change anything: brackets, escapes, BREAK.
bool has_weighting_syntax(const std::string& prompt);

struct PromptChunks {
  std::vector<std::vector<int64_t>> ids;    // [chunks][77]
  std::vector<std::vector<float>> weights;  // [chunks][77]
  int64_t token_count = 0;                  // A1111's count: 75 per closed chunk + the last one's tokens
};

PromptChunks encode_weighted(const ClipTokenizer& tokenizer, const std::string& prompt,
                             int comma_padding_backtrack = kDefaultCommaPaddingBacktrack);

// Appends empty chunks (= tokenizer.encode(""), weights 1.0; A1111's empty_chunk) until
// `chunks` has `count` of them. A1111 does this to batch prompts of different lengths
// (FrozenCLIPEmbedderWithCustomWordsBase.forward); SDXL pipelines also need it because
// the two tokenizers can chunk differently ("!!!" is one token for tokenizer, three for
// tokenizer_2).
void pad_to_chunk_count(PromptChunks& chunks, const ClipTokenizer& tokenizer, size_t count);

}  // namespace diffuse
