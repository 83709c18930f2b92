// CLIP byte-level BPE tokenizer, matching transformers' CLIPTokenizer (a `tokenizers`
// BPE) as diffusers calls it. See shared/fixtures/README.md "Tokenizer":
//   1. "!" when it is the pad token (SD2, SDXL tokenizer_2) is a registered special token:
//      every "!" in the prompt is split out first and becomes its id (0);
//   2. each remaining segment is normalised: NFC, runs of whitespace -> " ", lowercase
//      (no ftfy, no HTML unescaping, unlike openai/CLIP's SimpleTokenizer);
//   3. literal "<|startoftext|>" / "<|endoftext|>" in the normalised text become 49406/49407;
//   4. pre-tokeniser regex 's|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//      (matches kept, whitespace dropped), GPT-2 bytes_to_unicode byte mapping, then BPE
//      with end-of-word suffix "</w>" applied by merge rank.
// Invalid UTF-8 becomes U+FFFD (Python errors='replace'), so every input is tokenised
// deterministically. Thread-safe: the BPE word cache is shared and locked.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace diffuse {

class ClipTokenizer {
 public:
  // Reads a tokenizer folder in the hub layout: vocab.json + merges.txt (the "#version"
  // header line is skipped), optional tokenizer_config.json / special_tokens_map.json for
  // bos/eos/pad tokens and model_max_length (defaults: "<|startoftext|>", "<|endoftext|>",
  // pad = eos, 77). A folder with only tokenizer.json (transformers >= 5 save_pretrained)
  // is read from its "model" section. Throws Error(kIo) naming the missing/corrupt file.
  static ClipTokenizer load(const std::string& tokenizer_dir);

  // Builds a tokenizer from in-memory data (tests, embedded vocabularies).
  // `merges` are (left, right) symbol pairs in rank order.
  ClipTokenizer(std::unordered_map<std::string, int> vocab,
                const std::vector<std::pair<std::string, std::string>>& merges,
                const std::string& bos_token = "<|startoftext|>",
                const std::string& eos_token = "<|endoftext|>", const std::string& pad_token = "",
                int64_t model_max_length = 77);

  // BPE ids of `text`, without BOS/EOS and without truncation.
  std::vector<int> tokenize(const std::string& text) const;

  // [bos] + tokenize(text)[:max_length-2] + [eos] + [pad] * rest: exactly
  // tokenizer(text, padding="max_length", max_length=max_length, truncation=True).input_ids.
  std::vector<int64_t> encode(const std::string& text, int max_length = 77) const;

  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int pad_id() const { return pad_id_; }
  int64_t max_length() const { return model_max_length_; }
  const std::string& pad_token() const { return pad_token_; }
  // Changes the pad token (single-file checkpoints carry no tokenizer config:
  // OpenCLIP encoders pad with "!", which then becomes a split special token).
  // Call before encoding. Throws Error(kInvalidArgument) when not in the vocabulary.
  void set_pad_token(const std::string& token);
  size_t vocab_size() const { return id_to_token_.size(); }

  // The vocabulary string of `id` (e.g. "photo</w>"); throws kInvalidArgument when unknown.
  const std::string& token(int id) const;
  // The id of a vocabulary string, or -1.
  int token_id(const std::string& token) const;

 private:
  struct Merge {
    int rank;
    int merged_id;
  };
  struct WordCache;

  void bpe_word(const std::string& word_utf8, std::vector<int>& out) const;
  void tokenize_normalized(const std::u32string& text, std::vector<int>& out) const;

  std::unordered_map<std::string, int> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  int byte_ids_[256];                           // bytes_to_unicode(b) as a symbol
  int byte_eow_ids_[256];                       // bytes_to_unicode(b) + "</w>"
  std::string bos_token_, eos_token_, pad_token_;
  int bos_id_ = -1, eos_id_ = -1, pad_id_ = -1;
  bool pad_is_split_special_ = false;  // pad token is its own special token ("!")
  int64_t model_max_length_ = 77;
  std::shared_ptr<WordCache> cache_;
};

}  // namespace diffuse
