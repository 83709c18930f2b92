// safetensors reader/writer (format: huggingface/safetensors, docs "Format"):
//   [u64 little-endian N][N bytes of JSON header][data section]
// header = {"__metadata__": {str: str}, "<name>": {"dtype": "F16",
//           "shape": [..], "data_offsets": [begin, end]}, ...}
// Offsets are relative to the data section. We validate everything the
// reference implementation validates except that gaps between tensors are
// allowed (some converters leave them); overlaps are not.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/file_io.h"
#include "io/stored_dtype.h"

namespace diffuse {
namespace {

using nlohmann::json;

// The reference implementation refuses headers over 100 MB; a real SDXL
// header is ~200 KB.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

// Reads a JSON value that must be a non-negative integer that fits in int64.
bool as_index(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return *out <= static_cast<uint64_t>(INT64_MAX);
  }
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    if (i < 0) return false;
    *out = static_cast<uint64_t>(i);
    return true;
  }
  return false;
}

struct Entry {
  std::string name;
  const StoredType* type;
  Shape shape;
  uint64_t begin, end;
};

Entry parse_entry(const std::string& file, const std::string& name, const json& info, uint64_t data_size) {
  auto fail = [&](const std::string& what) -> void {
    throw_error(ErrorCode::kIo, file + ": tensor '" + name + "' " + what);
  };
  if (!info.is_object()) fail("header entry is not a JSON object");
  Entry e;
  e.name = name;
  auto dt = info.find("dtype");
  if (dt == info.end() || !dt->is_string()) fail("has no \"dtype\" string");
  e.type = find_safetensors_type(dt->get<std::string>());
  if (!e.type) fail("has unknown dtype '" + dt->get<std::string>() + "'");

  auto sh = info.find("shape");
  if (sh == info.end() || !sh->is_array()) fail("has no \"shape\" array");
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : *sh) {
    uint64_t v;
    if (!as_index(d, &v)) fail("shape " + sh->dump() + " must hold non-negative integers");
    overflow |= __builtin_mul_overflow(numel, v, &numel);
    e.shape.push_back(static_cast<int64_t>(v));
  }
  uint64_t nbytes = 0;
  overflow |= __builtin_mul_overflow(numel, static_cast<uint64_t>(e.type->stored_size), &nbytes);
  if (overflow || numel > static_cast<uint64_t>(INT64_MAX))
    fail("shape " + sh->dump() + " of " + e.type->safetensors_name + " has a byte size that overflows 64 bits");

  auto off = info.find("data_offsets");
  if (off == info.end() || !off->is_array() || off->size() != 2 || !as_index((*off)[0], &e.begin) ||
      !as_index((*off)[1], &e.end))
    fail("data_offsets " + (off == info.end() ? std::string("(missing)") : off->dump()) +
         " must be two non-negative integers [begin, end]");
  std::string range = "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  if (e.begin > e.end) fail("data_offsets " + range + " end before they begin");
  if (e.end > data_size)
    fail("data_offsets " + range + " exceed the data section (" + std::to_string(data_size) + " bytes)");
  if (e.end - e.begin != nbytes)
    fail("data_offsets " + range + " hold " + std::to_string(e.end - e.begin) + " bytes but " + e.type->safetensors_name +
         " shape " + sh->dump() + " needs " + std::to_string(nbytes));
  return e;
}

}  // namespace

Checkpoint parse_safetensors(uint8_t* data, size_t size, std::shared_ptr<void> owner, const std::string& name) {
  if (size < 8)
    throw_error(ErrorCode::kIo, name + ": file is " + std::to_string(size) +
                                    " bytes, too short for the 8-byte header length of a safetensors file");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > size - 8)
    throw_error(ErrorCode::kIo, name + ": header length " + std::to_string(header_len) + " at byte 0 exceeds the " +
                                    std::to_string(size - 8) + " bytes after it (truncated or not safetensors)");
  if (header_len > kMaxHeaderBytes)
    throw_error(ErrorCode::kIo, name + ": header length " + std::to_string(header_len) + " exceeds the 100 MB limit");
  const char* header_begin = reinterpret_cast<const char*>(data + 8);
  json header;
  try {
    header = json::parse(header_begin, header_begin + header_len);
  } catch (const json::exception& e) {
    throw_error(ErrorCode::kIo, name + ": header (bytes 8.." + std::to_string(8 + header_len) +
                                    ") is not valid JSON: " + e.what());
  }
  if (!header.is_object()) throw_error(ErrorCode::kIo, name + ": header is JSON but not an object");

  uint8_t* section = data + 8 + header_len;
  uint64_t data_size = size - 8 - header_len;
  Checkpoint ck;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) throw_error(ErrorCode::kIo, name + ": \"__metadata__\" must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          throw_error(ErrorCode::kIo, name + ": \"__metadata__\" value of '" + m.key() + "' is not a string");
        ck.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(name, it.key(), *it, data_size));
  }

  // No two non-empty tensors may share a byte.
  std::vector<const Entry*> order;
  for (const Entry& e : entries)
    if (e.end > e.begin) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < order.size(); ++i) {
    const Entry& a = *order[i - 1];
    const Entry& b = *order[i];
    if (b.begin < a.end)
      throw_error(ErrorCode::kIo, name + ": tensor '" + b.name + "' data_offsets [" + std::to_string(b.begin) + ", " +
                                      std::to_string(b.end) + "] overlap tensor '" + a.name + "' [" +
                                      std::to_string(a.begin) + ", " + std::to_string(a.end) + "]");
  }

  for (const Entry& e : entries) {
    uint8_t* p = section + e.begin;
    bool aligned = reinterpret_cast<uintptr_t>(p) % e.type->stored_size == 0;
    if (e.type->conversion == StoredConversion::kNone && aligned && owner) {
      ck.tensors[e.name] = Tensor::from_blob(p, e.shape, e.type->dtype, owner);
    } else {
      // Converted dtypes, misaligned data (a header length that is not a
      // multiple of 8) and ownerless buffers get their own copy.
      ck.tensors[e.name] = convert_stored(p, e.shape, *e.type);
    }
  }
  return ck;
}

Checkpoint load_safetensors(const std::string& path) {
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  return parse_safetensors(file->data(), file->size(), file, path);
}

Checkpoint load_safetensors_index(const std::string& index_path) {
  std::shared_ptr<MappedFile> file = MappedFile::open(index_path);
  json index;
  try {
    index = json::parse(reinterpret_cast<const char*>(file->data()),
                        reinterpret_cast<const char*>(file->data()) + file->size());
  } catch (const json::exception& e) {
    throw_error(ErrorCode::kIo, index_path + ": not valid JSON: " + e.what());
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    throw_error(ErrorCode::kIo, index_path + ": no \"weight_map\" object (not a sharded safetensors index)");

  Checkpoint ck;
  if (index.contains("metadata") && index["metadata"].is_object()) {
    for (auto it = index["metadata"].begin(); it != index["metadata"].end(); ++it)
      ck.metadata[it.key()] = it->is_string() ? it->get<std::string>() : it->dump();
  }
  std::filesystem::path dir = std::filesystem::path(index_path).parent_path();
  std::map<std::string, std::vector<std::string>> by_shard;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    if (!it->is_string())
      throw_error(ErrorCode::kIo, index_path + ": weight_map entry '" + it.key() + "' is not a file name");
    std::string shard = it->get<std::string>();
    // Shards live beside the index; a path that climbs out is refused.
    if (shard.empty() || shard[0] == '/' || shard.find("..") != std::string::npos)
      throw_error(ErrorCode::kIo, index_path + ": weight_map entry '" + it.key() + "' names shard '" + shard +
                                      "' outside the index's folder");
    by_shard[shard].push_back(it.key());
  }
  for (const auto& [shard, names] : by_shard) {
    std::string shard_path = (dir / shard).string();
    Checkpoint part = load_safetensors(shard_path);
    for (const std::string& n : names) {
      auto t = part.tensors.find(n);
      if (t == part.tensors.end())
        throw_error(ErrorCode::kIo, index_path + ": tensor '" + n + "' is mapped to " + shard_path +
                                        ", which does not contain it");
      ck.tensors[n] = t->second;
    }
    for (auto& [k, v] : part.metadata) ck.metadata.emplace(k, v);
  }
  return ck;
}

namespace {

// Header bytes (length prefix + padded JSON) and the tensors in file order.
struct Layout {
  std::string prefix;
  std::vector<Tensor> tensors;
};

Layout plan_safetensors(const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  // Like the reference writer: larger elements first (keeps every tensor
  // aligned to its element size), then by name; offsets are contiguous.
  std::vector<std::pair<std::string, Tensor>> order;
  for (const auto& [n, t] : tensors) {
    DIFFUSE_CHECK_ARG(t.defined(), "[save_safetensors] tensor '" + n + "' is undefined");
    DIFFUSE_CHECK_ARG(n != "__metadata__", "[save_safetensors] a tensor may not be named __metadata__");
    order.emplace_back(n, t);
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return dtype_size(a.second.dtype()) > dtype_size(b.second.dtype());
  });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  Layout layout;
  for (const auto& [n, t] : order) {
    uint64_t nbytes = t.nbytes();
    header[n] = {{"dtype", safetensors_dtype_name(t.dtype())},
                 {"shape", t.shape()},
                 {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    layout.tensors.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint64_t n = text.size();
  layout.prefix.resize(8);
  for (int i = 0; i < 8; ++i) layout.prefix[i] = static_cast<char>(n >> (8 * i));
  layout.prefix += text;
  return layout;
}

}  // namespace

std::vector<uint8_t> serialize_safetensors(const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  Layout layout = plan_safetensors(tensors, metadata);
  std::vector<uint8_t> out(layout.prefix.begin(), layout.prefix.end());
  for (const Tensor& t : layout.tensors) {
    Tensor c = t.to(Device::kCPU).contiguous();
    const uint8_t* p = static_cast<const uint8_t*>(c.raw_data());
    out.insert(out.end(), p, p + c.nbytes());
  }
  return out;
}

void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Streams tensor by tensor so saving a model never holds a second copy of it.
  Layout layout = plan_safetensors(tensors, metadata);
  AtomicFile file(path);
  file.write(layout.prefix.data(), layout.prefix.size());
  for (const Tensor& t : layout.tensors) {
    Tensor c = t.to(Device::kCPU).contiguous();
    if (c.nbytes() > 0) file.write(c.raw_data(), c.nbytes());
  }
  file.commit();
}

}  // namespace diffuse
