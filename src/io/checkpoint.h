// Checkpoint readers: every format returns a name -> tensor map in the
// tensors' stored dtype (convert on demand with Tensor::to); dtypes Tensor
// lacks are converted on load (F64 -> f32, U8/I8/I16/BOOL -> i32, F8 -> f16;
// see io/stored_dtype.h). safetensors files and uncompressed torch archives
// are mmap'd (private, copy-on-write) and their tensors are zero-copy views of
// the mapping; torch tensors with non-contiguous strides are made contiguous.
//
// All readers validate what they read and throw Error(kIo) with a message that
// names the file, the problem and where (tensor name, byte offset).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace diffuse {

using TensorMap = std::map<std::string, Tensor>;

struct Checkpoint {
  TensorMap tensors;
  std::map<std::string, std::string> metadata;  // safetensors "__metadata__"
};

// One .safetensors file (mmap, full header validation).
Checkpoint load_safetensors(const std::string& path);
// A sharded model: "*.safetensors.index.json" (weight_map name -> shard file).
Checkpoint load_safetensors_index(const std::string& index_path);
// PyTorch .ckpt / .pt / .pth / .bin: zip archive + restricted unpickler that
// only understands torch's rebuild calls and storages; never executes code.
Checkpoint load_torch_checkpoint(const std::string& path);
// Picks the reader by content (zip magic, safetensors header) and name.
Checkpoint load_checkpoint(const std::string& path);

// Writes a .safetensors file (tensors in their dtype; CPU tensors).
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Serialises what save_safetensors writes (header padded with spaces to a
// multiple of 8 bytes, like the reference writer).
std::vector<uint8_t> serialize_safetensors(const TensorMap& tensors,
                                           const std::map<std::string, std::string>& metadata = {});

// Fuzz-friendly entry points: parse bytes already in memory. `name` prefixes
// error messages. Zero-copy tensors point into `data`, which `owner` keeps
// alive (pass nullptr when the bytes outlive the result, as a fuzzer does);
// they must not be written to when the bytes are read-only.
Checkpoint parse_safetensors(uint8_t* data, size_t size, std::shared_ptr<void> owner,
                             const std::string& name = "<memory>");
Checkpoint parse_torch_checkpoint(uint8_t* data, size_t size, std::shared_ptr<void> owner,
                                  const std::string& name = "<memory>");

}  // namespace diffuse
