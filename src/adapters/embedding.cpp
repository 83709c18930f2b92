// Textual-inversion files: reading (A1111 textual_inversion.py load_from_file,
// diffusers TextualInversionLoaderMixin), checks against a model's encoders,
// the per-file cache and A1111's embeddings folder.
#include "adapters/embedding.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/file_io.h"
#include "io/sha256.h"
#include "io/unpickler.h"
#include "io/zip_reader.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

using Kind = PyValue::Kind;

std::string label(const std::string& path) { return "textual-inversion embedding '" + path + "'"; }

[[noreturn]] void fail_io(const std::string& path, const std::string& what) {
  throw_error(ErrorCode::kIo, label(path) + ": " + what);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// ---- .pt / .bin: the pickled object, through the restricted unpickler ------
//
// An A1111 embedding nests its tensor one level down (string_to_param["*"]),
// so the object tree is walked here, as io's visit_torch_object hands it over
// (load_torch_checkpoint's allow-list and checks: nothing is executed).
// The candidate tensors: string_to_param's entries when the object has one
// (*a1111 = true), else the object's top-level tensors.
TensorMap read_torch_embedding(const std::shared_ptr<MappedFile>& file, const std::string& path, bool* a1111) {
  TensorMap out;
  *a1111 = false;
  visit_torch_object(file->data(), file->size(), file, path, [&](const PyRef& root) {
    if (root->kind != Kind::kDict) fail_io(path, "the pickled object is not a dict");
    PyRef source = root;
    if (PyRef p = root->get("string_to_param")) {
      if (p->kind == Kind::kObject)
        fail_io(path, "string_to_param is a pickled '" + p->s +
                          "' (torch 1.11-era files): re-save it with a current A1111 or as .safetensors");
      if (p->kind != Kind::kDict) fail_io(path, "string_to_param is not a dict");
      source = p;
      *a1111 = true;
    }
    for (size_t i = 0; i < source->items.size(); ++i) {
      const PyRef& k = source->items[i];
      const PyRef& v = source->values[i];
      if (v->kind != Kind::kTensor) continue;
      out[k->is_str() ? k->s : "#" + std::to_string(i)] = v->tensor;
    }
  });
  return out;
}

// ---- the vectors, whatever the container ------------------------------------

Tensor as_vectors(const std::string& path, const std::string& key, const Tensor& t) {
  if (!is_floating(t.dtype())) fail_io(path, "'" + key + "' is not a floating-point tensor (" + t.str() + ")");
  Tensor v = t.ndim() == 1 ? t.reshape({1, t.dim(0)}) : t;
  if (v.ndim() != 2 || v.dim(0) < 1 || v.dim(1) < 1)
    fail_io(path, "'" + key + "' has shape " + shape_str(t.shape()) + "; an embedding is [vectors, width] or [width]");
  v = v.to(DType::kF32).contiguous().clone();  // f32 on the CPU, not a view of the file
  for (float x : v.to_f32_vector())
    if (!std::isfinite(x)) fail_io(path, "'" + key + "' holds non-finite values (NaN or Inf)");
  return v;
}

// A1111's reading of the loaded object: string_to_param's one entry, SDXL's
// clip_l / clip_g, or the one tensor of a diffusers concept (or emb_params).
std::map<std::string, Tensor> interpret(const std::string& path, const TensorMap& tensors, bool a1111) {
  std::map<std::string, Tensor> out;
  auto names = [&] {
    std::string s;
    for (const auto& [k, v] : tensors) s += (s.empty() ? "'" : ", '") + k + "'";
    return s;
  };
  if (!a1111 && (tensors.count("clip_l") || tensors.count("clip_g"))) {
    for (const char* key : {"clip_l", "clip_g"}) {
      auto it = tensors.find(key);
      if (it != tensors.end()) out[key] = as_vectors(path, key, it->second);
    }
    return out;
  }
  if (tensors.empty())
    fail_io(path, a1111 ? "string_to_param holds no tensor" : "holds no tensor (not an embedding file)");
  if (tensors.size() != 1)
    fail_io(path, "holds " + std::to_string(tensors.size()) + " tensors (" + names() +
                      "); an embedding file holds one (or SDXL's clip_l and clip_g)");
  out[""] = as_vectors(path, tensors.begin()->first, tensors.begin()->second);
  return out;
}

int64_t mtime_of(const fs::path& p, std::error_code& ec) {
  return static_cast<int64_t>(fs::last_write_time(p, ec).time_since_epoch().count());
}

}  // namespace

TextualInversionFile read_embedding_file(const std::string& path) {
  TextualInversionFile f;
  f.path = path;
  f.name = fs::path(path).stem().string();
  const std::string ext = lower(fs::path(path).extension().string());
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (ec) fail_io(path, "cannot be read (" + ec.message() + ")");
  if (size == 0) fail_io(path, "is empty");
  try {
    std::shared_ptr<MappedFile> file = MappedFile::open(path);
    f.sha256 = sha256_hex(file->data(), file->size());
    if (ext == ".safetensors") {
      const Checkpoint ck = parse_safetensors(file->data(), file->size(), file, path);
      f.vectors = interpret(path, ck.tensors, false);
    } else if (ext == ".pt" || ext == ".bin" || ext == ".ckpt" || ext == ".pth") {
      if (!ZipReader::has_zip_magic(file->data(), file->size()))
        fail_io(path, "is not a torch.save zip archive (files of torch before 1.6 are not supported)");
      bool a1111 = false;
      const TensorMap tensors = read_torch_embedding(file, path, &a1111);
      f.vectors = interpret(path, tensors, a1111);
    } else {
      throw_error(ErrorCode::kUnsupported, label(path) + ": '" + ext +
                                               "' files are not read (.pt, .bin or .safetensors; A1111's embeddings "
                                               "inside PNG/WEBP images are not supported)");
    }
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.rfind(label(path), 0) == 0) throw;  // already names the file our way
    throw_error(e.code() == ErrorCode::kUnsupported ? ErrorCode::kUnsupported : ErrorCode::kIo,
                label(path) + ": " + what);
  }
  return f;
}

int check_embedding(const TextualInversionFile& file, const std::vector<EmbeddingTarget>& targets) {
  const bool sdxl_file = file.vectors.count("clip_l") || file.vectors.count("clip_g");
  auto fail = [&](const std::string& what) {
    throw_error(ErrorCode::kInvalidArgument, label(file.path) + ": " + what);
  };
  int64_t count = -1;
  std::string count_from;
  for (const EmbeddingTarget& t : targets) {
    if (t.key.empty() && sdxl_file)
      fail("is an SDXL embedding (clip_l / clip_g vectors), but this model's " + t.encoder + " takes one set of " +
           std::to_string(t.width) + "-wide vectors");
    if (!t.key.empty() && !sdxl_file)
      fail("holds one set of " + std::to_string(file.vectors.begin()->second.dim(1)) +
           "-wide vectors (an SD 1.x / 2.x embedding), but an SDXL model needs clip_l and clip_g vectors (" +
           t.encoder + " takes " + t.key + ")");
    auto it = file.vectors.find(t.key);
    if (it == file.vectors.end())
      fail("has no " + t.key + " vectors: an SDXL embedding needs both clip_l and clip_g (" + t.encoder + " takes " +
           t.key + ")");
    const Tensor& v = it->second;
    if (v.dim(1) != t.width)
      fail(std::string(t.key.empty() ? "its vectors are " : t.key + " vectors are ") + std::to_string(v.dim(1)) +
           " wide, but " + t.encoder + " takes " + std::to_string(t.width) +
           "-wide token embeddings (an embedding for another model family?)");
    if (count >= 0 && v.dim(0) != count)
      fail(count_from + " has " + std::to_string(count) + " vectors but " + t.key + " has " +
           std::to_string(v.dim(0)));
    count = v.dim(0);
    count_from = t.key;
  }
  DIFFUSE_CHECK_ARG(count >= 1, label(file.path) + ": the model has no text encoder to take it");
  return static_cast<int>(count);
}

// ---- cache ------------------------------------------------------------------

std::shared_ptr<const TextualInversionFile> EmbeddingCache::get(const std::string& path) {
  std::error_code ec;
  const fs::path abs = fs::absolute(path, ec);
  const std::string key = ec ? path : abs.lexically_normal().string();
  const uint64_t size = fs::file_size(path, ec);
  if (ec) fail_io(path, "cannot be read (" + ec.message() + ")");
  const int64_t mtime = mtime_of(path, ec);
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(key);
  if (it != entries_.end() && it->second.size == size && it->second.mtime == mtime) return it->second.file;
  auto file = std::make_shared<const TextualInversionFile>(read_embedding_file(path));
  ++files_read_;
  entries_[key] = Entry{mtime, size, file};
  return file;
}

uint64_t EmbeddingCache::files_read() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return files_read_;
}

// ---- folders ------------------------------------------------------------------

std::vector<EmbeddingEntry> list_embeddings(const std::vector<std::string>& dirs, const std::vector<std::string>& files) {
  std::vector<EmbeddingEntry> out;
  auto add = [&](const fs::path& p) {
    const std::string name = p.stem().string();
    if (name.empty()) return;
    for (const EmbeddingEntry& e : out)
      if (e.name == name) return;  // the first file of a name wins
    out.push_back({name, p.string()});
  };
  for (const std::string& f : files) {
    std::error_code ec;
    if (!fs::is_regular_file(f, ec))
      throw_error(ErrorCode::kIo, label(f) + ": " + (fs::exists(f, ec) ? "is not a file" : "does not exist"));
    add(f);
  }
  constexpr int kMaxDepth = 16;  // links are followed, as os.walk(followlinks=True): a loop must end
  for (const std::string& d : dirs) {
    std::error_code ec;
    if (!fs::is_directory(d, ec)) continue;
    std::vector<fs::path> found;
    fs::recursive_directory_iterator it(
        d, fs::directory_options::follow_directory_symlink | fs::directory_options::skip_permission_denied, ec);
    for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it.depth() >= kMaxDepth) it.disable_recursion_pending();
      std::error_code fe;
      if (!it->is_regular_file(fe)) continue;
      const std::string ext = lower(it->path().extension().string());
      if (ext != ".pt" && ext != ".bin" && ext != ".safetensors") continue;
      if (it->file_size(fe) == 0 || fe) continue;  // A1111 skips empty files
      found.push_back(it->path());
    }
    std::sort(found.begin(), found.end());
    for (const fs::path& p : found) add(p);
  }
  return out;
}

// ---- one generation's set -------------------------------------------------------

EmbeddingSet::EmbeddingSet(std::vector<EmbeddingEntry> entries, std::vector<EmbeddingTarget> targets,
                           std::shared_ptr<EmbeddingCache> cache)
    : entries_(std::move(entries)), targets_(std::move(targets)), cache_(std::move(cache)) {}

int EmbeddingSet::use(size_t i) {
  DIFFUSE_CHECK_ARG(i < entries_.size(), "[EmbeddingSet] entry " + std::to_string(i) + " out of range");
  auto it = loaded_.find(i);
  if (it == loaded_.end()) {
    std::shared_ptr<const TextualInversionFile> file =
        cache_ ? cache_->get(entries_[i].path)
               : std::make_shared<const TextualInversionFile>(read_embedding_file(entries_[i].path));
    check_embedding(*file, targets_);
    it = loaded_.emplace(i, std::move(file)).first;
    used_order_.push_back(i);
  }
  return static_cast<int>(it->second->vectors.at(targets_.front().key).dim(0));
}

const Tensor& EmbeddingSet::vectors(size_t i, size_t target) const {
  auto it = loaded_.find(i);
  DIFFUSE_CHECK_ARG(it != loaded_.end() && target < targets_.size(),
                    "[EmbeddingSet] entry " + std::to_string(i) + " was not used, or no target " + std::to_string(target));
  return it->second->vectors.at(targets_[target].key);
}

std::vector<const TextualInversionFile*> EmbeddingSet::used() const {
  std::vector<const TextualInversionFile*> out;
  for (size_t i : used_order_) out.push_back(loaded_.at(i).get());
  return out;
}

std::string EmbeddingSet::hashes_infotext() const {
  std::string s;
  for (size_t i : used_order_) {
    std::string name = entries_[i].name;
    name.erase(std::remove_if(name.begin(), name.end(), [](char c) { return c == ':' || c == ','; }), name.end());
    s += (s.empty() ? "" : ", ") + name + ": " + loaded_.at(i)->short_hash();
  }
  return s;
}

}  // namespace diffuse
