// Textual-inversion embeddings (docs/adapters.md "Textual inversion"): the
// files, checked against a model's text encoders, and AUTOMATIC1111's rule for
// which ones a generation uses (modules/textual_inversion/textual_inversion.py
// EmbeddingDatabase): every embedding file of the embeddings folders, and every
// file named explicitly, is known by its file stem; a prompt that contains the
// stem as a word (its token ids, as the prompt is tokenized) uses it there.
// The prompt side, where the vectors take token positions, is
// text/prompt_weights.h (EmbeddingTriggers) and pipeline/conditioning.cpp.
//
// File formats, as A1111 and diffusers (TextualInversionLoaderMixin) read them:
//   .pt / .bin   torch.save zip, read by our restricted unpickler (never executed):
//                A1111 {"string_to_param": {"*": [N, D]}, "name", "step", ...},
//                or diffusers' learned_embeds.bin {token: [D] or [N, D]}
//   .safetensors A1111 {"emb_params": [N, D]}, diffusers {token: [N, D]},
//                SDXL {"clip_l": [N, 768], "clip_g": [N, 1280]}
// Nothing here changes a model: an embedding only supplies token vectors.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace diffuse {

// One embedding file as read.
struct TextualInversionFile {
  std::string path;
  std::string name;    // the file stem: the word that triggers it
  std::string sha256;  // of the whole file (A1111 hashes.sha256)
  // [N, D] f32 CPU tensors, by key: "" for a one-encoder embedding (SD 1.x /
  // 2.x), "clip_l" and "clip_g" for SDXL's two encoders.
  std::map<std::string, Tensor> vectors;

  // A1111's "TI hashes" entry: the first 12 hex digits of sha256.
  std::string short_hash() const { return sha256.substr(0, 12); }
};

// Reads an embedding file (the formats above, chosen by extension). Throws
// Error(kIo) naming the file when it cannot be read, is corrupt or truncated,
// holds no embedding (or several), or holds non-finite values.
TextualInversionFile read_embedding_file(const std::string& path);

// One text encoder an embedding feeds.
struct EmbeddingTarget {
  std::string encoder;  // for messages: "text_encoder", "text_encoder_2"
  std::string key;      // the vectors it takes: "" (SD 1.x / 2.x), "clip_l" or "clip_g" (SDXL)
  int64_t width = 0;    // the encoder's token embedding width
};

// Checks `file` against the model's encoders and returns its vector count N.
// Throws Error(kInvalidArgument) naming the file: vectors of another width
// (with both widths and the encoder), an SDXL file on a one-set model or a
// one-set file on SDXL, a missing clip_l / clip_g, clip_l and clip_g of
// different counts.
int check_embedding(const TextualInversionFile& file, const std::vector<EmbeddingTarget>& targets);

// Files read, by path, size and modification time: a repeated generation with
// the same embeddings reads nothing. Thread-safe.
class EmbeddingCache {
 public:
  // The file's contents, read now if it is new or changed (read_embedding_file's errors).
  std::shared_ptr<const TextualInversionFile> get(const std::string& path);
  uint64_t files_read() const;  // how many times a file was actually read

 private:
  struct Entry {
    int64_t mtime = 0;
    uint64_t size = 0;
    std::shared_ptr<const TextualInversionFile> file;
  };
  mutable std::mutex mutex_;
  std::map<std::string, Entry> entries_;  // by absolute path
  uint64_t files_read_ = 0;
};

// A known embedding: its trigger word and its file.
struct EmbeddingEntry {
  std::string name;
  std::string path;
};

// The embeddings one generation may use: the files named in `files` (which
// must exist: Error(kIo) otherwise), then every .pt / .bin / .safetensors
// file under each of `dirs` (recursively, following links, in path order;
// empty files and folders that do not exist are skipped, as A1111 does). When
// two files share a stem, the first one listed is used.
std::vector<EmbeddingEntry> list_embeddings(const std::vector<std::string>& dirs, const std::vector<std::string>& files);

// The embeddings of one generation, against one model's encoders: loads
// what a prompt triggers (through the cache), checks it, and remembers what
// was used for the image's metadata.
class EmbeddingSet {
 public:
  EmbeddingSet() = default;  // none
  EmbeddingSet(std::vector<EmbeddingEntry> entries, std::vector<EmbeddingTarget> targets,
               std::shared_ptr<EmbeddingCache> cache);

  const std::vector<EmbeddingEntry>& entries() const { return entries_; }
  const std::vector<EmbeddingTarget>& targets() const { return targets_; }
  bool empty() const { return entries_.empty(); }

  // Entry i is used by a prompt: reads and checks it (once; its errors name
  // the file), records the use, and returns its vector count.
  int use(size_t i);
  // Entry i's vectors for target t, [N, width] f32 on the CPU (after use(i)).
  const Tensor& vectors(size_t i, size_t target) const;

  // The used embeddings in order of first use.
  std::vector<const TextualInversionFile*> used() const;
  // A1111's "TI hashes" value, "name: 0123456789ab, other: ..." (":" and ","
  // removed from names); empty when none was used.
  std::string hashes_infotext() const;

 private:
  std::vector<EmbeddingEntry> entries_;
  std::vector<EmbeddingTarget> targets_;
  std::shared_ptr<EmbeddingCache> cache_;
  std::map<size_t, std::shared_ptr<const TextualInversionFile>> loaded_;  // by entry
  std::vector<size_t> used_order_;
};

}  // namespace diffuse
