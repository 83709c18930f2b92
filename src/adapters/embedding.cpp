// Textual-inversion files: reading (A1111 textual_inversion.py load_from_file,
// diffusers TextualInversionLoaderMixin), checks against a model's encoders,
// the per-file cache and A1111's embeddings folder.
#include "adapters/embedding.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/file_io.h"
#include "io/sha256.h"
#include "io/stored_dtype.h"
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
// io/torch_checkpoint.cpp reads flat state dicts; an A1111 embedding nests its
// tensor one level down (string_to_param["*"]), so the object tree is walked
// here. Only torch's tensor rebuild calls and OrderedDict are allowed;
// anything else that is called is rejected by the unpickler with its name.
// Embeddings are a few KB: every tensor is copied out as f32.

struct StorageRef {
  std::string key;
  const StoredType* type = nullptr;
  uint64_t numel = 0;
};

class TorchEmbeddingReader {
 public:
  TorchEmbeddingReader(const uint8_t* data, size_t size, const std::string& path)
      : path_(path), zip_(data, size, path) {}

  // The candidate tensors: string_to_param's entries when the object has one
  // (*a1111 = true), else the object's top-level tensors.
  TensorMap read(bool* a1111) {
    const ZipEntry* pkl = nullptr;
    for (const ZipEntry& e : zip_.entries()) {  // torch writes "<archive>/data.pkl": the shallowest wins
      const std::string& n = e.name;
      const bool match = n == "data.pkl" || (n.size() > 9 && n.compare(n.size() - 9, 9, "/data.pkl") == 0);
      if (match && (!pkl || n.size() < pkl->name.size())) pkl = &e;
    }
    if (!pkl) fail_io(path_, "the zip archive has no data.pkl (not a torch.save file)");
    prefix_ = pkl->name.substr(0, pkl->name.size() - std::strlen("data.pkl"));
    ZipBytes pickle = zip_.read(*pkl);
    Unpickler up(pickle.data, pickle.size, path_);
    allow_calls(up);
    up.set_persistent_load([&](const PyRef& pid, size_t at) { return persistent_load(up, pid, at); });
    const PyRef root = up.load();
    if (root->kind != Kind::kDict) fail_io(path_, "the pickled object is not a dict");

    TensorMap out;
    PyRef source = root;
    *a1111 = false;
    if (PyRef p = root->get("string_to_param")) {
      if (p->kind == Kind::kObject)
        fail_io(path_, "string_to_param is a pickled '" + p->s +
                           "' (torch 1.11-era files): re-save it with a current A1111 or as .safetensors");
      if (p->kind != Kind::kDict) fail_io(path_, "string_to_param is not a dict");
      source = p;
      *a1111 = true;
    }
    for (size_t i = 0; i < source->items.size(); ++i) {
      const PyRef& k = source->items[i];
      const PyRef& v = source->values[i];
      if (v->kind != Kind::kTensor) continue;
      out[k->is_str() ? k->s : "#" + std::to_string(i)] = v->tensor;
    }
    return out;
  }

 private:
  [[noreturn]] void fail(const std::string& what, size_t at) const {
    fail_io(path_, what + " (pickle byte " + std::to_string(at) + ")");
  }

  PyRef persistent_load(Unpickler& up, const PyRef& pid, size_t at) {
    // ('storage', torch.XStorage, key, location, numel)
    if (pid->kind != Kind::kTuple || pid->items.size() < 5 || !pid->items[0]->is_str() ||
        pid->items[0]->s != "storage" || pid->items[1]->kind != Kind::kGlobal || !pid->items[2]->is_str() ||
        !pid->items[4]->is_int() || pid->items[4]->i < 0)
      fail("malformed storage persistent id", at);
    auto ref = std::make_shared<StorageRef>();
    ref->key = pid->items[2]->s;
    ref->type = find_torch_storage_type(pid->items[1]->s);
    if (!ref->type) fail("storage '" + ref->key + "' has unsupported type '" + pid->items[1]->s + "'", at);
    ref->numel = static_cast<uint64_t>(pid->items[4]->i);
    PyRef v = up.make(Kind::kObject);
    v->s = "<storage>";
    v->payload = ref;
    return v;
  }

  // A storage's elements as f32, read once per key.
  const std::vector<float>& storage(const StorageRef& ref, size_t at) {
    auto it = storages_.find(ref.key);
    if (it != storages_.end()) return it->second;
    const std::string entry_name = prefix_ + "data/" + ref.key;
    const ZipEntry* entry = zip_.find(entry_name);
    if (!entry) fail("storage '" + ref.key + "' has no archive entry '" + entry_name + "'", at);
    const ZipBytes bytes = zip_.read(*entry);
    if (ref.numel > (1u << 26) || ref.numel * ref.type->stored_size > bytes.size)
      fail("storage '" + ref.key + "' declares " + std::to_string(ref.numel) + " elements but entry '" + entry_name +
               "' holds " + std::to_string(bytes.size) + " bytes",
           at);
    const Tensor t = convert_stored(bytes.data, Shape{static_cast<int64_t>(ref.numel)}, *ref.type);
    if (!is_floating(t.dtype())) fail("storage '" + ref.key + "' does not hold floating-point values", at);
    return storages_.emplace(ref.key, t.to(DType::kF32).to_f32_vector()).first->second;
  }

  // torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...)
  PyRef rebuild_tensor(Unpickler& up, const std::vector<PyRef>& args, size_t at) {
    if (args.size() < 4 || args[0]->kind != Kind::kObject || !args[0]->payload || !args[1]->is_int() ||
        !args[2]->is_sequence() || !args[3]->is_sequence() || args[2]->items.size() != args[3]->items.size())
      fail("_rebuild_tensor_v2 expects (storage, offset, size, stride, ...)", at);
    const StorageRef& ref = *std::static_pointer_cast<StorageRef>(args[0]->payload);
    const std::vector<float>& data = storage(ref, at);
    const int64_t offset = args[1]->i;
    Shape shape;
    std::vector<int64_t> stride;
    int64_t numel = 1, last = offset;
    bool bad = offset < 0 || args[2]->items.size() > 4;
    for (size_t i = 0; i < args[2]->items.size() && !bad; ++i) {
      const PyRef& s = args[2]->items[i];
      const PyRef& st = args[3]->items[i];
      bad = !s->is_int() || !st->is_int() || s->i < 0 || st->i < 0 || s->i > (1 << 24) || st->i > (1 << 26);
      if (bad) break;
      shape.push_back(s->i);
      stride.push_back(st->i);
      numel *= s->i;
      if (s->i > 0) last += (s->i - 1) * st->i;
    }
    if (bad || numel > (1 << 26)) fail("a tensor has an invalid size or stride", at);
    if (numel > 0 && last >= static_cast<int64_t>(data.size()))
      fail("a tensor reaches element " + std::to_string(last) + " of storage '" + ref.key + "', which holds " +
               std::to_string(data.size()),
           at);
    // Gather with the strides (row-major order).
    std::vector<float> values(static_cast<size_t>(numel));
    std::vector<int64_t> index(shape.size(), 0);
    for (int64_t n = 0; n < numel; ++n) {
      int64_t src = offset;
      for (size_t d = 0; d < shape.size(); ++d) src += index[d] * stride[d];
      values[static_cast<size_t>(n)] = data[static_cast<size_t>(src)];
      for (size_t d = shape.size(); d-- > 0;) {
        if (++index[d] < shape[d]) break;
        index[d] = 0;
      }
    }
    PyRef v = up.make(Kind::kTensor);
    v->tensor = Tensor::from_vector(values, shape);
    return v;
  }

  void allow_calls(Unpickler& up) {
    auto rebuild = [this, &up](const std::vector<PyRef>& a, size_t at) { return rebuild_tensor(up, a, at); };
    up.allow("torch._utils._rebuild_tensor_v2", rebuild);
    up.allow("torch._utils._rebuild_tensor", rebuild);
    auto parameter = [this](const std::vector<PyRef>& a, size_t at) {  // (data, requires_grad, hooks[, state])
      if (a.empty() || a[0]->kind != Kind::kTensor) fail("_rebuild_parameter expects a tensor", at);
      return a[0];
    };
    up.allow("torch._utils._rebuild_parameter", parameter);
    up.allow("torch._utils._rebuild_parameter_with_state", parameter);
    up.allow("collections.OrderedDict", [this, &up](const std::vector<PyRef>& a, size_t at) {
      PyRef d = up.make(Kind::kDict);
      if (!a.empty() && a[0]->is_sequence()) {  // OrderedDict([(k, v), ...])
        for (const PyRef& kv : a[0]->items) {
          if (kv->kind != Kind::kTuple || kv->items.size() != 2) fail("OrderedDict item is not a pair", at);
          d->items.push_back(kv->items[0]);
          d->values.push_back(kv->items[1]);
        }
      }
      return d;
    });
    // Seen in older A1111 files: an inert object, reported by read().
    up.allow("torch.nn.modules.container.ParameterDict", [&up](const std::vector<PyRef>& a, size_t) {
      PyRef o = up.make(Kind::kObject);
      o->s = "torch.nn.modules.container.ParameterDict";
      return o;
    });
  }

  std::string path_;
  ZipReader zip_;
  std::string prefix_;
  std::map<std::string, std::vector<float>> storages_;
};

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
      TorchEmbeddingReader reader(file->data(), file->size(), path);
      const TensorMap tensors = reader.read(&a1111);
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
