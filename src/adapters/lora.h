// LoRA and LyCORIS files merged into a loaded model (docs/adapters.md).
//
//   read_lora_file     a file (.safetensors, or .pt/.ckpt through the restricted
//                      unpickler) -> its patched modules, each with the scale its
//                      format gives (alpha / rank, PEFT metadata, ...)
//   LoraTargets        which weight of the model a module name patches: one table
//                      per component, built from the model's own weight names (and,
//                      for the UNet, the LDM names of models/unet_keys.h; for text
//                      encoders, the OpenCLIP names of models/keymap.h)
//   LoraMerger         makes a set of files the merged one: W' = W + sum_i w_i * delta_i,
//                      computed in f32 from the original weights and cast once;
//                      the originals are kept, so a new set restores them exactly
//
// Formats (one row each in the tables of lora_file.cpp):
//  - kohya / A1111: lora_unet_*, lora_te_*, lora_te1_* / lora_te2_* (SDXL), with
//    .lora_down.weight, .lora_up.weight, optional .lora_mid.weight (LoCon's
//    Tucker form) and .alpha; delta = up @ down, scale alpha / rank (rank =
//    lora_down's dim 0; no alpha: scale 1). Linear, 1x1 and kxk convs (LoCon:
//    down is the kxk conv, up a 1x1 conv).
//  - LyCORIS LoHa: (w1_a @ w1_b) * (w2_a @ w2_b) elementwise, or with hada_t1/t2
//    each factor rebuilt from its Tucker core; scale alpha / w1_b's dim 0.
//  - LyCORIS LoKr: kron(w1, w2), each a full matrix or a product of _a/_b factors
//    (w2 optionally with a Tucker core lokr_t2); scale alpha / (w2_b or w1_b)'s dim 0,
//    1 when both are full.
//  - LyCORIS full ("diff"): the delta itself.
//  - DoRA (dora_scale next to any of those): the merged weight W + s*delta is
//    rescaled to the magnitude dora_scale along the axis its shape names
//    (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation"); the user's
//    weight w then blends linearly: W + w * (DoRA(W + s*delta) - W).
//  - diffusers / PEFT: unet.<module>.lora_A.weight / .lora_B.weight,
//    text_encoder.* and text_encoder_2.*; older .lora.down/.up,
//    .lora_linear_layer.down/.up and attention-processor (to_q_lora.down) names.
//    r, lora_alpha, rank_pattern, alpha_pattern and use_rslora come from the
//    header's __metadata__ "lora_adapter_metadata" (diffusers writes it); without
//    it the scale is 1.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "models/family.h"

namespace diffuse {

class UNet;
class ClipTextModel;
class WeightTable;
struct UNetConfig;

// ---- files -------------------------------------------------------------------

enum class LoraAlgo { kLora, kLoha, kLokr, kFull };
const char* lora_algo_name(LoraAlgo a);  // "LoRA", "LoHa", "LoKr", "full"

// One patched module, as the file stores it.
struct LoraModule {
  // The file's name for it: "lora_unet_down_blocks_0_resnets_0_conv1", "unet.mid_block.attentions.0.proj_in".
  std::string key;
  std::string component;  // "unet", "text_encoder" or "text_encoder_2" (a diffusers folder)
  std::string module;     // the key without its component prefix: flattened (kohya) or dotted (diffusers)
  LoraAlgo algo = LoraAlgo::kLora;
  // The factors by role, as stored (any floating dtype, CPU): down, up, mid;
  // w1_a, w1_b, w2_a, w2_b, t1, t2 (LoHa); w1, w1_a, w1_b, w2, w2_a, w2_b, t2
  // (LoKr); diff (full); dora_scale (DoRA, any algorithm).
  std::map<std::string, Tensor> parts;
  float scale = 1.0f;     // alpha / rank, or what the format says
  // The delta's shape as the factors give it ([out, in] or [out, in, kh, kw],
  // LoHa without Tucker [out, in*kh*kw]); it fits a weight of the same element count.
  Shape delta_shape;
};

struct LoraFile {
  std::string path;
  std::string name;  // the file's stem: what <lora:name:w> and "Lora hashes" call it
  std::map<std::string, std::string> metadata;
  std::vector<LoraModule> modules;
  std::vector<std::string> unknown_keys;  // tensors no format explains (listed in warnings)
  std::string hash;                       // A1111's short hash (lora_file_hash)
};

// Reads and checks a LoRA / LyCORIS file. Error(kIo) naming the file for an
// unreadable, corrupt or truncated file and for factors whose shapes disagree
// ("'...lora_up.weight' (320,8) does not fit lora_down (4,320)"); Error(kNotFound)
// when it does not exist; Error(kInvalidArgument) when no tensor is a LoRA key.
LoraFile read_lora_file(const std::string& path);

// A1111's hash of a LoRA file (networks.py / hashes.py): the file's
// "sshs_model_hash" metadata when present, else the sha256 of the file (for
// .safetensors AddNet's: of the bytes after the 8 + header-length header),
// shortened to 12 hex digits.
std::string lora_file_hash(const std::string& path, const std::map<std::string, std::string>& metadata);
// AddNet's hash of a .safetensors file: the full sha256 hex of the bytes after its header.
std::string addnet_hash(const std::string& path);

// ---- what a LoRA patches -------------------------------------------------------

// A model's patchable parts, by diffusers folder name ("unet", "text_encoder",
// "text_encoder_2"), for LoraTargets and LoraMerger. Pointers are not owned.
struct LoraModel {
  Family family = Family::kSD1;
  UNet* unet = nullptr;
  std::vector<std::pair<std::string, ClipTextModel*>> text_encoders;  // (folder, model), the family's order
};

// Where a module's delta goes: one weight, or consecutive row blocks of several
// (OpenCLIP's fused attn.in_proj -> q_proj, k_proj, v_proj).
struct LoraTarget {
  std::string component;
  struct Piece {
    std::string weight;  // diffusers name in the component's WeightTable
    Shape shape;
  };
  std::vector<Piece> pieces;
  Shape shape() const;  // the pieces stacked along dim 0
};

// The flattened-name tables of a model: for every 2-D / 4-D ".weight" of each
// component, its diffusers module name with '.' -> '_' (kohya's names), and
// also (UNet) the module's LDM name from unet_ldm_tensors / unet_ldm_to_diffusers
// (SDXL kohya files), (text encoders) the name without "text_model." (PEFT)
// and the OpenCLIP names of clip_openclip_rules(), with and without "model.".
// A flattened name two different weights share is ambiguous and matches nothing.
class LoraTargets {
 public:
  struct Component {
    std::string name;
    std::vector<std::pair<std::string, Shape>> specs;  // the component's weights
    const UNetConfig* unet = nullptr;                  // for LDM names
    int text_layers = 0;                               // for OpenCLIP names (0: none)
  };
  explicit LoraTargets(const std::vector<Component>& components);
  static LoraTargets of(const LoraModel& model);

  // The target of (component, module): nullptr when the component or the module is unknown.
  const LoraTarget* find(const std::string& component, const std::string& module) const;

 private:
  void add(const std::string& component, const std::string& flat, LoraTarget target);
  std::map<std::string, std::map<std::string, LoraTarget>> tables_;  // component -> flat name -> target
  std::map<std::string, std::set<std::string>> ambiguous_;  // component -> flat names of two weights
};

// A file checked against a model: each module's target, or why it has none.
struct LoraPlan {
  struct Patch {
    const LoraModule* module;
    const LoraTarget* target;
  };
  std::vector<Patch> patches;
  std::vector<std::string> unmatched;  // module keys that name no weight of the model
};
// Throws Error(kInvalidArgument) naming the file: "... is a LoRA for sdxl
// (Stable Diffusion XL), not for this sd1 model ..." when most modules do not
// fit (or the keys show another family), "... 'key' changes a (320,320,3,3)
// weight, but the model's 'down_blocks.0.resnets.0.conv1.weight' is (32,32,3,3)"
// for a shape that does not fit.
LoraPlan plan_lora(const LoraFile& file, const LoraTargets& targets, Family family);

// The family a file's modules fit among the published architectures of
// models/family_spec.h (names and shapes, then names alone), or nullopt.
std::optional<Family> guess_lora_family(const LoraFile& file);

// The f32 delta of one module, scale included, on `device`, in the shape of
// `target` (pieces stacked). DoRA is not applied here (it needs the weight).
Tensor lora_delta(const LoraModule& module, const Shape& target, Device device);
// DoRA: DoRA(W + delta) - W for an f32 weight W and delta of the same shape.
Tensor dora_delta(const Tensor& weight, const Tensor& delta, const Tensor& dora_scale);

// ---- merging -------------------------------------------------------------------

// One file of a set and its weights (A1111's <lora:name:unet_w:te_w>).
struct LoraUse {
  std::string path;
  float unet_weight = 1.0f;
  float te_weight = 1.0f;
};

// What identifies a merged set: the files (canonical paths, modification times,
// sizes) and the weights, in order.
struct LoraSetKey {
  struct Entry {
    std::string path;
    float unet_weight = 0, te_weight = 0;
    int64_t mtime_ns = 0;
    uint64_t size = 0;
    bool operator==(const Entry&) const = default;
  };
  std::vector<Entry> entries;
  bool operator==(const LoraSetKey&) const = default;
};
// Stats every file: Error(kNotFound) naming one that does not exist, Error(kInvalidArgument)
// for a weight that is not a finite number.
LoraSetKey lora_set_key(const std::vector<LoraUse>& uses);

// What a merge found in one file.
struct LoraReport {
  std::string name, path, hash;
  int modules = 0, matched = 0;
  std::vector<std::string> unmatched;  // module keys
  std::vector<std::string> unknown;    // tensors of no known format
};

// `base` in the narrowest dtype that holds it exactly: an f32 CPU tensor whose
// values are all fp16 (or bf16) values comes back as fp16 (bf16), at half the
// memory; anything else as it is. How LoraMerger keeps the originals of the
// weights it patches: f32 weights read from a 16-bit checkpoint (the CPU's f32
// pipeline of an fp16 file) restore bit for bit from a 16-bit copy.
Tensor compact_exact(const Tensor& base);

// The merged LoRA set of one model. Not thread-safe: the pipeline guards it
// with a shared mutex (generate() holds it shared while it runs with the set).
class LoraMerger {
 public:
  // The set currently merged (empty: the base weights).
  const LoraSetKey& merged() const { return key_; }
  // Makes `uses` the merged set. Every file is read and checked against the
  // model first: any error leaves the weights as they were, bitwise. Then the
  // weights of the previous set are restored from the kept originals and the
  // new set is merged: per weight, W' = cast(f32(W) + sum_i w_i * delta_i)
  // with W the original. A failure while merging (out of memory) restores
  // every original and leaves the empty set merged before rethrowing.
  void apply(const LoraModel& model, const std::vector<LoraUse>& uses, const LoraSetKey& key);
  void apply(const LoraModel& model, const std::vector<LoraUse>& uses) { apply(model, uses, lora_set_key(uses)); }

  const std::vector<LoraReport>& reports() const { return reports_; }
  // A1111's "networks with errors", one line per file with unmatched or unknown keys.
  std::vector<std::string> warnings() const;
  // The infotext value of "Lora hashes": "name: 0123456789ab, name2: ..." ("" for no set).
  std::string infotext_hashes() const;
  // Weights currently differing from the base (component/name), for tests and logs.
  size_t patched_weights() const { return originals_.size(); }
  // Bytes the kept originals take (compact_exact: a 16-bit checkpoint's f32 weights keep 16-bit originals).
  size_t kept_bytes() const;

 private:
  void restore_all(const LoraModel& model);
  LoraSetKey key_;
  std::map<std::pair<std::string, std::string>, Tensor> originals_;  // (component, weight) -> base tensor
  std::vector<LoraReport> reports_;
};

}  // namespace diffuse
