// Prompt -> UNet conditioning, as diffusers' encode_prompt does it for plain
// prompts, extended with AUTOMATIC1111's syntax: (word:1.3) emphasis and
// prompts longer than 75 tokens, encoded in 77-token chunks and concatenated
// (modules/sd_hijack_clip.py). A prompt with no emphasis and <= 75 tokens takes
// exactly diffusers' path.
//
// Textual inversion: an embedding file's stem in a prompt (A1111's rule; the
// tokens are found by text/prompt_weights.h) is replaced by its N vectors as
// token embeddings, as diffusers' load_textual_inversion does with N added
// tokens. Those positions carry ids past the vocabulary, as added tokens do,
// so SDXL's pooled output is taken where diffusers takes it: argmax(input_ids)
// lands on the last vector of the embedding (A1111 pools at the first
// <|endoftext|> instead; the goldens are diffusers').
#include <algorithm>
#include <cmath>
#include <memory>

#include "core/ops.h"
#include "pipeline/pipeline_impl.h"
#include "text/prompt_weights.h"

namespace diffuse {
namespace {

// The hidden state the UNet sees from one encoder, for a batch of token ids.
// clip_skip follows A1111: 1 = the layer the model was trained with, k > 1 goes
// k - 1 layers further back (with the final LayerNorm re-applied on the
// last-hidden-state path, as A1111 does).
Tensor encoder_hidden(const TextEncoderSlot& slot, const ClipTextModel::Output& out, int clip_skip) {
  const int n = static_cast<int>(out.hidden_states.size());  // layers + 1
  if (slot.penultimate) {
    int idx = n - 1 - std::max(1, clip_skip);
    DIFFUSE_CHECK_ARG(idx >= 0, "clip skip " + std::to_string(clip_skip) + " exceeds the text encoder's depth");
    return out.hidden_states[idx];
  }
  if (clip_skip <= 1) return out.last_hidden_state;
  int idx = n - clip_skip;
  DIFFUSE_CHECK_ARG(idx >= 1, "clip skip " + std::to_string(clip_skip) + " exceeds the text encoder's depth");
  return slot.model->final_layer_norm(out.hidden_states[idx]);
}

struct EncodedPrompt {
  Tensor context;  // [1, 77 * chunks, D_total]
  Tensor pooled;   // [1, P] or undefined
};

// A prompt tokenized for every encoder (once: the chunk count and the
// encoding read the same chunks).
using Tokenized = std::vector<PromptChunks>;
// Per encoder, the embeddings' trigger words in its tokenizer's ids (null: none).
using Triggers = std::vector<std::unique_ptr<EmbeddingTriggers>>;

Triggers make_triggers(const std::vector<TextEncoderSlot>& encoders, EmbeddingSet* embeddings) {
  Triggers t(encoders.size());
  if (!embeddings || embeddings->empty()) return t;
  for (size_t e = 0; e < encoders.size(); ++e) {
    std::vector<std::vector<int>> ids;
    for (const EmbeddingEntry& entry : embeddings->entries()) ids.push_back(encoders[e].tokenizer->tokenize(entry.name));
    t[e] = std::make_unique<EmbeddingTriggers>(std::move(ids), [embeddings](size_t i) { return embeddings->use(i); });
  }
  return t;
}

Tokenized tokenize(const std::vector<TextEncoderSlot>& encoders, const std::string& prompt,
                   const Triggers& triggers = {}) {
  Tokenized t;
  for (size_t e = 0; e < encoders.size(); ++e)
    t.push_back(encode_weighted(*encoders[e].tokenizer, prompt, kDefaultCommaPaddingBacktrack,
                                e < triggers.size() ? triggers[e].get() : nullptr));
  return t;
}

// One chunk's ids for the encoder, and the embedding vectors that replace
// token rows. Embedding i's k-th vector gets id vocab + i * 75 + k: past the
// vocabulary, increasing with i and k, as diffusers' added tokens (pooling).
ClipTextModel::TokenOverride embedding_rows(const TextEncoderSlot& slot, size_t encoder,
                                            const std::vector<EmbeddingFix>& fixes, const EmbeddingSet* embeddings,
                                            std::vector<int64_t>& ids) {
  ClipTextModel::TokenOverride o;
  std::vector<Tensor> rows;
  const int64_t vocab = slot.model->config().vocab_size;
  for (const EmbeddingFix& f : fixes) {
    const Tensor& v = embeddings->vectors(static_cast<size_t>(f.embedding), encoder);  // [N, D]
    for (int k = 0; k < f.vectors; ++k) {
      o.positions.push_back(f.position + k);
      ids[static_cast<size_t>(f.position + k)] = vocab + static_cast<int64_t>(f.embedding) * kChunkTokens + k;
    }
    rows.push_back(v);
  }
  o.rows = rows.size() == 1 ? rows[0] : concat(rows, 0);  // [n, D]
  return o;
}

int chunk_count(const Tokenized& t) {
  int n = 1;
  for (const PromptChunks& c : t) n = std::max(n, static_cast<int>(c.ids.size()));
  return n;
}

EncodedPrompt encode_one(const std::vector<TextEncoderSlot>& encoders, Tokenized tokens, int clip_skip,
                         int min_chunks, const EmbeddingSet* embeddings = nullptr) {
  std::vector<Tensor> per_encoder;
  Tensor pooled;
  for (size_t e = 0; e < encoders.size(); ++e) {
    const TextEncoderSlot& slot = encoders[e];
    PromptChunks& chunks = tokens[e];
    // Pad with empty chunks so that prompt and negative prompt line up (A1111).
    if (static_cast<int>(chunks.ids.size()) < min_chunks) {
      const PromptChunks empty = encode_weighted(*slot.tokenizer, "");
      while (static_cast<int>(chunks.ids.size()) < min_chunks) {
        chunks.ids.push_back(empty.ids[0]);
        chunks.weights.push_back(empty.weights[0]);
      }
    }
    chunks.fixes.resize(chunks.ids.size());
    std::vector<Tensor> hidden_chunks;
    for (size_t c = 0; c < chunks.ids.size(); ++c) {
      std::vector<int64_t> ids = chunks.ids[c];
      ClipTextModel::TokenOverride rows;
      if (!chunks.fixes[c].empty()) rows = embedding_rows(slot, e, chunks.fixes[c], embeddings, ids);
      Tensor ids_t = Tensor::from_ids(ids, {1, static_cast<int64_t>(ids.size())});
      if (slot.model->device() != Device::kCPU) ids_t = ids_t.to(slot.model->device());
      ClipTextModel::Output out = slot.model->forward(ids_t, chunks.fixes[c].empty() ? nullptr : &rows);
      Tensor h = encoder_hidden(slot, out, clip_skip);
      const std::vector<float>& w = chunks.weights[c];
      bool weighted = false;
      for (float x : w) weighted |= x != 1.0f;
      if (weighted) {
        // A1111: z *= weights; then restore the original mean.
        Tensor hf = h.to(DType::kF32).to(Device::kCPU).contiguous();
        std::vector<float> v = hf.to_f32_vector();
        const int64_t d = h.dim(-1);
        double before = 0, after = 0;
        for (float x : v) before += x;
        for (size_t i = 0; i < v.size(); ++i) v[i] *= w[i / d];
        for (float x : v) after += x;
        float ratio = after != 0 ? static_cast<float>(before / after) : 1.0f;
        for (float& x : v) x *= ratio;
        h = Tensor::from_vector(v, h.shape()).to(h.dtype()).to(h.device());
      }
      hidden_chunks.push_back(h);
      if (slot.provides_pooled && c == 0) pooled = out.text_embeds;  // A1111 pools the first chunk
    }
    per_encoder.push_back(hidden_chunks.size() == 1 ? hidden_chunks[0] : concat(hidden_chunks, 1));
  }
  EncodedPrompt e;
  e.context = per_encoder.size() == 1 ? per_encoder[0] : concat(per_encoder, 2);
  e.pooled = pooled;
  return e;
}

}  // namespace

Pipeline::Impl::Conditioning Pipeline::Impl::encode_prompts(const std::vector<std::string>& prompts,
                                                            int clip_skip, EmbeddingSet* embeddings) const {
  // Each distinct prompt is tokenized once and encoded once; a batch of n
  // copies of one prompt runs the text encoders once.
  std::vector<std::string> distinct;
  std::vector<size_t> row_of(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto it = std::find(distinct.begin(), distinct.end(), prompts[i]);
    row_of[i] = static_cast<size_t>(it - distinct.begin());
    if (it == distinct.end()) distinct.push_back(prompts[i]);
  }
  const Triggers triggers = make_triggers(encoders, embeddings);
  std::vector<Tokenized> tokens;
  int chunks = 1;
  for (const std::string& p : distinct) {
    tokens.push_back(tokenize(encoders, p, triggers));
    chunks = std::max(chunks, chunk_count(tokens.back()));
  }
  std::vector<EncodedPrompt> encoded;
  for (Tokenized& t : tokens) encoded.push_back(encode_one(encoders, std::move(t), clip_skip, chunks, embeddings));
  std::vector<Tensor> contexts, pooled;
  for (size_t r : row_of) {
    contexts.push_back(encoded[r].context);
    if (encoded[r].pooled.defined()) pooled.push_back(encoded[r].pooled);
  }
  Conditioning c;
  c.context = contexts.size() == 1 ? contexts[0] : concat(contexts, 0);
  if (!pooled.empty()) c.pooled = pooled.size() == 1 ? pooled[0] : concat(pooled, 0);
  c.encoder_runs = static_cast<int>(distinct.size());
  return c;
}

EmbeddingSet Pipeline::Impl::embeddings_for(const GenerationParams& params) const {
  if (params.embedding_dirs.empty() && params.embeddings.empty()) return {};
  // Which vectors each encoder takes: SD 1.x / 2.x one set; SDXL clip_l for its
  // CLIP-L and clip_g for its OpenCLIP bigG (the refiner has only the latter).
  std::vector<EmbeddingTarget> targets;
  for (const TextEncoderSlot& slot : encoders) {
    EmbeddingTarget t;
    t.width = slot.model->config().hidden_size;
    if (encoders.size() == 2) t.key = targets.empty() ? "clip_l" : "clip_g";
    else if (slot.provides_pooled) t.key = "clip_g";
    t.encoder = t.key == "clip_g" ? "text_encoder_2" : "text_encoder";
    targets.push_back(t);
  }
  return EmbeddingSet(list_embeddings(params.embedding_dirs, params.embeddings), std::move(targets), embedding_cache);
}

Pipeline::Impl::Conditioning Pipeline::Impl::zero_conditioning(const Conditioning& like) const {
  Conditioning z;
  z.context = Tensor::zeros(like.context.shape(), like.context.dtype(), like.context.device());
  if (like.pooled.defined()) z.pooled = Tensor::zeros(like.pooled.shape(), like.pooled.dtype(), like.pooled.device());
  return z;
}

void Pipeline::Impl::match_lengths(Conditioning& a, Conditioning& b, int clip_skip) const {
  auto pad = [&](Conditioning& c, int64_t target) {
    int64_t have = c.context.dim(1);
    if (have >= target) return;
    // Append empty-prompt chunks (77 tokens each) for every batch row.
    EncodedPrompt empty = encode_one(encoders, tokenize(encoders, ""), clip_skip, 1);
    std::vector<Tensor> rows;
    for (int64_t r = 0; r < c.context.dim(0); ++r) {
      std::vector<Tensor> parts = {c.context.slice(0, r, r + 1)};
      for (int64_t l = have; l < target; l += empty.context.dim(1)) parts.push_back(empty.context);
      rows.push_back(concat(parts, 1));
    }
    c.context = rows.size() == 1 ? rows[0] : concat(rows, 0);
  };
  int64_t target = std::max(a.context.dim(1), b.context.dim(1));
  pad(a, target);
  pad(b, target);
}

}  // namespace diffuse
