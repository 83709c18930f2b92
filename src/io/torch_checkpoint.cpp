// PyTorch checkpoints (.ckpt / .pt / .pth / .bin), the zip format torch.save
// has written since 1.6 (torch/serialization.py:_save / _load):
//   <archive>/data.pkl      pickle of the object (a state dict, Lightning's
//                           {"state_dict": ..., "callbacks": ..., ...}, or
//                           BasicSR's {"params_ema": ..., "params": ...})
//   <archive>/data/<key>    raw little-endian bytes of each storage
//   <archive>/byteorder     "little" (absent in older files)
// Tensors are pickled as _rebuild_tensor_v2(storage, offset, size, stride, ...)
// with storage = persistent id ('storage', torch.XStorage, key, location, numel).
// The allow-list below is what real SD checkpoints contain (it matches
// AUTOMATIC1111 modules/safe.py:RestrictedUnpickler); nothing is executed.
#include <algorithm>
#include <cstring>
#include <functional>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/stored_dtype.h"
#include "io/unpickler.h"
#include "io/zip_reader.h"

namespace diffuse {
namespace {

using Kind = PyValue::Kind;

struct StorageRef {
  std::string key;
  const StoredType* type;
  uint64_t numel;
};

// Globals that are data constructors with no behaviour we need: calling them
// yields an inert object (numpy scalars in "global_step", Lightning's
// ModelCheckpoint callback state, ...).
constexpr const char* kInertCallables[] = {
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.dtype",
    "numpy.ndarray",
    "torch.device",
    "torch.nn.modules.container.ParameterDict",
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
};

std::string shape_list(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + ")";
}

bool is_legacy_torch(const uint8_t* data, size_t size) {
  // Pre-1.6 files begin with a protocol-2 pickle of the magic number
  // 0x1950a86a20f9469cfc6c (LONG1, 10 bytes).
  static const uint8_t kMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  return size >= sizeof(kMagic) && std::memcmp(data, kMagic, sizeof(kMagic)) == 0;
}

class TorchLoader {
 public:
  TorchLoader(uint8_t* data, size_t size, std::shared_ptr<void> owner, const std::string& name)
      : name_(name), owner_(std::move(owner)), zip_(data, size, name) {}

  // Calls fn with the pickled object, its tensors rebuilt (views of the file
  // where the stored type allows), while the unpickler that owns its nodes
  // is alive (~Unpickler breaks the tree up).
  void load_object(const std::function<void(const PyRef&)>& fn) {
    const ZipEntry* pkl = find_data_pkl();
    prefix_ = pkl->name.substr(0, pkl->name.size() - std::strlen("data.pkl"));
    if (const ZipEntry* bo = zip_.find(prefix_ + "byteorder")) {
      ZipBytes b = zip_.read(*bo);
      std::string order(reinterpret_cast<const char*>(b.data), b.size);
      if (order != "little")
        throw_error(ErrorCode::kUnsupported, name_ + ": byteorder '" + order + "' is not supported (little only)");
    }
    ZipBytes pickle = zip_.read(*pkl);
    Unpickler up(pickle.data, pickle.size, name_);
    register_callables(up);
    up.set_persistent_load([&](const PyRef& pid, size_t at) { return persistent_load(up, pid, at); });
    fn(up.load());
  }

  // The object's state dict as a checkpoint.
  Checkpoint load() {
    Checkpoint ck;
    load_object([&](const PyRef& root) { ck = state_dict(root); });
    return ck;
  }

 private:
  Checkpoint state_dict(const PyRef& root) const {
    PyRef dict = root;
    if (PyRef sd = root->get("state_dict"); sd && sd->kind == Kind::kDict) dict = sd;  // Lightning
    // BasicSR / Real-ESRGAN releases: {"params_ema": state dict} or {"params": ...};
    // the EMA weights are the ones published for inference (both present: params_ema).
    else if (PyRef ema = root->get("params_ema"); ema && ema->kind == Kind::kDict) dict = ema;
    else if (PyRef params = root->get("params"); params && params->kind == Kind::kDict) dict = params;
    if (dict->kind != Kind::kDict)
      throw_error(ErrorCode::kIo, name_ + ": checkpoint holds a pickled " + kind_label(dict) + ", not a state dict");
    Checkpoint ck;
    for (size_t i = 0; i < dict->items.size(); ++i) {
      const PyRef& k = dict->items[i];
      const PyRef& v = dict->values[i];
      // Non-tensor entries (e.g. Lightning's "_extra_state") carry no weights.
      if (k->kind != Kind::kStr || v->kind != Kind::kTensor) continue;
      ck.tensors[k->s] = v->tensor;
    }
    return ck;
  }

  static std::string kind_label(const PyRef& v) {
    return v->kind == Kind::kObject || v->kind == Kind::kGlobal ? "'" + v->s + "'" : "value of another kind";
  }

  const ZipEntry* find_data_pkl() const {
    // torch writes "<archive>/data.pkl" with one folder level; prefer the
    // shallowest match so a nested stray file cannot take over.
    const ZipEntry* best = nullptr;
    for (const ZipEntry& e : zip_.entries()) {
      const std::string& n = e.name;
      bool match = n == "data.pkl" || (n.size() > 9 && n.compare(n.size() - 9, 9, "/data.pkl") == 0);
      if (match && (!best || n.size() < best->name.size())) best = &e;
    }
    if (!best) {
      throw_error(ErrorCode::kIo, name_ + ": zip archive has no data.pkl (not a torch.save checkpoint" +
                                      std::string(zip_.find("constants.pkl") ? "; TorchScript archives are not supported)" : ")"));
    }
    return best;
  }

  [[noreturn]] void fail(const std::string& what, size_t at) const {
    throw_error(ErrorCode::kIo, name_ + ": " + what + " (pickle byte " + std::to_string(at) + ")");
  }

  PyRef persistent_load(Unpickler& up, const PyRef& pid, size_t at) {
    if (pid->kind != Kind::kTuple || pid->items.size() < 5 || !pid->items[0]->is_str() ||
        pid->items[0]->s != "storage")
      fail("persistent id is not ('storage', type, key, location, numel)", at);
    const PyRef& type = pid->items[1];
    const PyRef& key = pid->items[2];
    const PyRef& numel = pid->items[4];
    if (type->kind != Kind::kGlobal || !key->is_str() || !numel->is_int() || numel->i < 0)
      fail("malformed storage persistent id", at);
    auto ref = std::make_shared<StorageRef>();
    ref->key = key->s;
    ref->type = find_torch_storage_type(type->s);
    if (!ref->type) fail("storage '" + key->s + "' has unsupported type '" + type->s + "'", at);
    ref->numel = static_cast<uint64_t>(numel->i);
    PyRef v = up.make(Kind::kObject);
    v->s = "<storage>";
    v->payload = ref;
    return v;
  }

  // One 1-D tensor per storage key, shared by every tensor viewing it.
  Tensor storage_tensor(const StorageRef& ref, size_t at) {
    auto cached = storages_.find(ref.key);
    if (cached != storages_.end()) return cached->second;
    std::string entry_name = prefix_ + "data/" + ref.key;
    const ZipEntry* entry = zip_.find(entry_name);
    if (!entry) fail("storage '" + ref.key + "' has no archive entry '" + entry_name + "'", at);
    ZipBytes bytes = zip_.read(*entry);
    uint64_t need = 0;
    if (__builtin_mul_overflow(ref.numel, static_cast<uint64_t>(ref.type->stored_size), &need) || need > bytes.size)
      fail("storage '" + ref.key + "' declares " + std::to_string(ref.numel) + " elements of " +
               std::to_string(ref.type->stored_size) + " bytes but entry '" + entry_name + "' holds " +
               std::to_string(bytes.size) + " bytes",
           at);
    Shape shape{static_cast<int64_t>(ref.numel)};
    std::shared_ptr<void> owner = bytes.owned ? std::shared_ptr<void>(bytes.owned) : owner_;
    bool aligned = reinterpret_cast<uintptr_t>(bytes.data) % ref.type->stored_size == 0;
    Tensor t;
    if (ref.type->conversion == StoredConversion::kNone && aligned && owner)
      t = Tensor::from_blob(const_cast<uint8_t*>(bytes.data), shape, ref.type->dtype, owner);
    else
      t = convert_stored(bytes.data, shape, *ref.type);
    storages_[ref.key] = t;
    return t;
  }

  static std::vector<int64_t> int_tuple(const PyRef& v) {
    std::vector<int64_t> out;
    if (!v->is_sequence()) return {-1};
    for (const PyRef& x : v->items) out.push_back(x->is_int() ? x->i : -1);
    return out;
  }

  // torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...)
  PyRef rebuild_tensor(Unpickler& up, const std::vector<PyRef>& args, size_t at) {
    if (args.size() < 4) fail("_rebuild_tensor_v2 expects (storage, offset, size, stride, ...)", at);
    const PyRef& storage = args[0];
    if (storage->kind != Kind::kObject || storage->s != "<storage>" || !storage->payload)
      fail("_rebuild_tensor_v2's first argument is not a storage", at);
    const StorageRef& ref = *std::static_pointer_cast<StorageRef>(storage->payload);
    if (!args[1]->is_int() || args[1]->i < 0) fail("_rebuild_tensor_v2 storage offset is not a non-negative int", at);
    int64_t offset = args[1]->i;
    std::vector<int64_t> size = int_tuple(args[2]), stride = int_tuple(args[3]);
    if (size.size() != stride.size()) fail("tensor size " + shape_list(size) + " and stride " + shape_list(stride) + " differ in rank", at);
    // The last element reached is offset + sum((size_i - 1) * stride_i); it
    // must lie inside the storage (no overflow, no negative sizes or strides).
    uint64_t numel = 1, last = static_cast<uint64_t>(offset);
    bool bad = false;
    for (size_t i = 0; i < size.size(); ++i) {
      if (size[i] < 0 || stride[i] < 0) {
        bad = true;
        break;
      }
      uint64_t step = 0;
      bad |= __builtin_mul_overflow(static_cast<uint64_t>(size[i]), numel, &numel);
      if (size[i] > 0) bad |= __builtin_mul_overflow(static_cast<uint64_t>(size[i] - 1), static_cast<uint64_t>(stride[i]), &step);
      bad |= __builtin_add_overflow(last, step, &last);
    }
    std::string where = "tensor size " + shape_list(size) + " stride " + shape_list(stride) + " at storage offset " +
                        std::to_string(offset);
    if (bad || numel > static_cast<uint64_t>(INT64_MAX)) fail(where + " is invalid", at);
    // Checked against the storage as loaded: a storage is read once, by its
    // first reference, and a later reference may declare more elements than
    // that one did (a hostile file; found by fuzz_torch_checkpoint).
    Tensor base = storage_tensor(ref, at);
    const uint64_t held = std::min<uint64_t>(ref.numel, static_cast<uint64_t>(base.numel()));
    if (numel > 0 && last >= held)
      fail(where + " reaches element " + std::to_string(last) + " but storage '" + ref.key + "' (" + prefix_ + "data/" +
               ref.key + ") holds " + std::to_string(held),
           at);
    Tensor t = numel == 0 ? Tensor::empty(size, base.dtype()) : make_view(base, size, stride, offset);
    if (!t.is_contiguous()) t = t.contiguous();
    PyRef v = up.make(Kind::kTensor);
    v->tensor = t;
    return v;
  }

  void register_callables(Unpickler& up) {
    auto rebuild = [this, &up](const std::vector<PyRef>& a, size_t at) { return rebuild_tensor(up, a, at); };
    up.allow("torch._utils._rebuild_tensor_v2", rebuild);
    up.allow("torch._utils._rebuild_tensor", rebuild);
    // Parameters wrap a tensor: _rebuild_parameter(data, requires_grad, hooks[, state]).
    auto parameter = [this](const std::vector<PyRef>& a, size_t at) {
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
    up.allow("torch.Size", [&up](const std::vector<PyRef>& a, size_t) {
      PyRef t = up.make(Kind::kTuple);
      if (!a.empty() && a[0]->is_sequence()) t->items = a[0]->items;
      return t;
    });
    auto make_set = [&up](const std::vector<PyRef>& a, size_t) {
      PyRef s = up.make(Kind::kSet);
      if (!a.empty() && (a[0]->is_sequence() || a[0]->kind == Kind::kSet)) s->items = a[0]->items;
      return s;
    };
    up.allow("builtins.set", make_set);
    up.allow("builtins.frozenset", make_set);
    // _codecs.encode(text, "latin1") is how protocol 2 pickles bytes.
    up.allow("_codecs.encode", [&up](const std::vector<PyRef>& a, size_t) {
      PyRef b = up.make(Kind::kBytes);
      if (!a.empty() && a[0]->is_str()) b->s = a[0]->s;
      return b;
    });
    for (const char* name : kInertCallables) {
      std::string qualified = name;
      up.allow(qualified, [&up, qualified](const std::vector<PyRef>& a, size_t) {
        PyRef o = up.make(Kind::kObject);
        o->s = qualified;
        o->items = a;
        return o;
      });
    }
  }

  std::string name_;
  std::shared_ptr<void> owner_;
  ZipReader zip_;
  std::string prefix_;
  std::map<std::string, Tensor> storages_;
};

}  // namespace

namespace {

void check_torch_zip(const uint8_t* data, size_t size, const std::string& name) {
  if (is_legacy_torch(data, size))
    throw_error(ErrorCode::kUnsupported, name + ": legacy (pre-1.6, non-zip) torch.save format is not supported; "
                                                "convert it to safetensors");
  if (!ZipReader::has_zip_magic(data, size))
    throw_error(ErrorCode::kIo, name + ": not a PyTorch checkpoint (no zip signature at byte 0)");
}

}  // namespace

Checkpoint parse_torch_checkpoint(uint8_t* data, size_t size, std::shared_ptr<void> owner, const std::string& name) {
  check_torch_zip(data, size, name);
  TorchLoader loader(data, size, std::move(owner), name);
  return loader.load();
}

void visit_torch_object(uint8_t* data, size_t size, std::shared_ptr<void> owner, const std::string& name,
                        const std::function<void(const PyRef&)>& fn) {
  check_torch_zip(data, size, name);
  TorchLoader loader(data, size, std::move(owner), name);
  loader.load_object(fn);
}

}  // namespace diffuse
