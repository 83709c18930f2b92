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
// Textual-inversion embeddings are found as A1111 finds them (EmbeddingDatabase.
// find_embedding_at_position): within each fragment's tokens, where the token ids of an
// embedding's name begin (the longest name first), the name's tokens are replaced by as
// many positions as the embedding has vectors, with the fragment's weight. An embedding
// that would straddle the end of a chunk starts the next one. The ids at those positions
// are 0 (A1111's placeholder); PromptChunks::fixes says whose vectors go there.
// Not handled here (A1111 does them earlier): prompt editing [a:b:step], alternation
// [a|b], <lora:...> extra networks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
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

// The textual-inversion embeddings a prompt may name, for one tokenizer.
class EmbeddingTriggers {
 public:
  // ids[i]: tokenizer.tokenize(name of embedding i) (an empty list never matches).
  // vectors(i): how many token positions embedding i takes, asked when it is
  // found (the caller may read its file then, and may throw).
  EmbeddingTriggers(std::vector<std::vector<int>> ids, std::function<int(size_t)> vectors);

  struct Match {
    int embedding = -1;  // -1: none
    size_t length = 0;   // tokens of the name
  };
  // The embedding whose name's ids begin at tokens[offset]; the longest name
  // wins, then the lower index.
  Match find(const std::vector<int>& tokens, size_t offset) const;
  int vectors(size_t embedding) const { return vectors_(embedding); }
  size_t size() const { return ids_.size(); }

 private:
  std::vector<std::vector<int>> ids_;
  std::unordered_map<int, std::vector<size_t>> by_first_id_;  // candidates, longest first
  std::function<int(size_t)> vectors_;
};

// Where an embedding's vectors go in a chunk.
struct EmbeddingFix {
  int position = 0;   // index in the 77-id chunk of its first vector (bos is 0)
  int embedding = 0;  // index in the EmbeddingTriggers
  int vectors = 0;    // positions it takes: position .. position + vectors - 1
  bool operator==(const EmbeddingFix&) const = default;
};

struct PromptChunks {
  std::vector<std::vector<int64_t>> ids;    // [chunks][77]
  std::vector<std::vector<float>> weights;  // [chunks][77]
  std::vector<std::vector<EmbeddingFix>> fixes;  // [chunks][embeddings in that chunk]
  int64_t token_count = 0;                  // A1111's count: 75 per closed chunk + the last one's tokens
};

// Throws Error(kInvalidArgument) for an embedding of more than 75 vectors (it
// fits no chunk), and whatever triggers->vectors throws.
PromptChunks encode_weighted(const ClipTokenizer& tokenizer, const std::string& prompt,
                             int comma_padding_backtrack = kDefaultCommaPaddingBacktrack,
                             const EmbeddingTriggers* triggers = nullptr);

// Appends empty chunks (= tokenizer.encode(""), weights 1.0; A1111's empty_chunk) until
// `chunks` has `count` of them. A1111 does this to batch prompts of different lengths
// (FrozenCLIPEmbedderWithCustomWordsBase.forward); SDXL pipelines also need it because
// the two tokenizers can chunk differently ("!!!" is one token for tokenizer, three for
// tokenizer_2).
void pad_to_chunk_count(PromptChunks& chunks, const ClipTokenizer& tokenizer, size_t count);

}  // namespace diffuse
