// File entry points of checkpoint.h: map the file, then pick the parser by
// content, so a misnamed file still loads (a ".ckpt" that is really
// safetensors is common on model sites).
#include "io/checkpoint.h"

#include "core/error.h"
#include "io/file_io.h"
#include "io/zip_reader.h"

namespace diffuse {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Checkpoint load_torch_checkpoint(const std::string& path) {
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  return parse_torch_checkpoint(file->data(), file->size(), file, path);
}

Checkpoint load_checkpoint(const std::string& path) {
  if (ends_with(path, ".index.json")) return load_safetensors_index(path);
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  const uint8_t* d = file->data();
  // torch.save zips start with a local file header; legacy torch files with
  // PROTO 2 + LONG1 of 10 bytes (the magic number; parse_torch_checkpoint
  // explains that it is unsupported). As a safetensors header length those
  // bytes would mean > 2^56 bytes, so no valid safetensors file is misrouted.
  bool legacy = file->size() >= 4 && d[0] == 0x80 && d[1] == 0x02 && d[2] == 0x8a && d[3] == 0x0a;
  if (ZipReader::has_zip_magic(d, file->size()) || legacy)
    return parse_torch_checkpoint(file->data(), file->size(), file, path);
  return parse_safetensors(file->data(), file->size(), file, path);
}

}  // namespace diffuse
