// sha256 of model files, cached by (absolute path, size, mtime) in
// ~/.cache/diffuse/hashes.json, so a multi-GB checkpoint is hashed once (like
// AUTOMATIC1111's cache.json). The first 10 hex digits are A1111's "Model hash".
#pragma once
#include <optional>
#include <string>

namespace diffuse {

// The cached hash, or nullopt when the file changed or was never hashed.
std::optional<std::string> lookup_cached_sha256(const std::string& path);
// The cached hash, computing (and caching) it when needed. Throws Error(kIo).
std::string cached_sha256(const std::string& path);

}  // namespace diffuse
