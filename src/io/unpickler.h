// A restricted pickle reader (protocols 2-5, the opcodes of CPython's
// Lib/pickle.py that torch.save emits). It never executes anything: it builds
// a tree of inert PyValue nodes. Calls (REDUCE, NEWOBJ) are only allowed on
// globals the caller registered with allow(), which supply their own C++
// meaning; a call, or a BUILD, on any other global is rejected with an error
// naming it and the byte offset. Unknown globals that are merely referenced
// (e.g. `torch.float16` as a value) become inert placeholders.
//
// Values are only valid while the Unpickler lives: its destructor breaks all
// references iteratively (no recursion on hostile deeply nested or cyclic data).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace diffuse {

struct PyValue;
using PyRef = std::shared_ptr<PyValue>;

struct PyValue {
  enum class Kind { kNone, kBool, kInt, kFloat, kStr, kBytes, kTuple, kList, kDict, kSet, kGlobal, kObject, kTensor };
  Kind kind = Kind::kNone;
  int64_t i = 0;     // kBool, kInt
  double f = 0;      // kFloat
  std::string s;     // kStr (UTF-8), kBytes, kGlobal / kObject: "module.name"
  std::vector<PyRef> items;   // kTuple, kList, kSet; kDict keys; kObject constructor args
  std::vector<PyRef> values;  // kDict values (parallel to items)
  Tensor tensor;              // kTensor
  // Free-form payload for allow-listed callables (e.g. a storage reference).
  std::shared_ptr<void> payload;

  bool is_str() const { return kind == Kind::kStr; }
  bool is_int() const { return kind == Kind::kInt || kind == Kind::kBool; }
  bool is_sequence() const { return kind == Kind::kTuple || kind == Kind::kList; }
  // Dict lookup by string key (nullptr when absent or not a dict).
  PyRef get(const std::string& key) const;
};

class Unpickler {
 public:
  // A callable receives its positional arguments and the byte offset of the
  // calling opcode (for error messages); it returns the call's result.
  using Callable = std::function<PyRef(const std::vector<PyRef>& args, size_t at)>;
  using PersistentLoad = std::function<PyRef(const PyRef& pid, size_t at)>;

  Unpickler(const uint8_t* data, size_t size, std::string name);
  ~Unpickler();
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;

  // `qualified` is "module.name", e.g. "torch._utils._rebuild_tensor_v2".
  void allow(const std::string& qualified, Callable fn);
  void set_persistent_load(PersistentLoad fn) { persistent_load_ = std::move(fn); }
  // Runs to STOP and returns the top of the stack. Throws Error(kIo).
  PyRef load();

  // Builds values for callables (kept alive, and torn down, by this unpickler).
  PyRef make(PyValue::Kind kind);
  const std::string& name() const { return name_; }

 private:
  [[noreturn]] void fail(const std::string& what) const;
  PyRef call(const PyRef& callee, std::vector<PyRef> args, const char* how);

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;   // next byte to read
  size_t op_pos_ = 0;  // offset of the opcode being executed
  std::string name_;
  std::map<std::string, Callable> allowed_;
  PersistentLoad persistent_load_;
  std::vector<PyRef> arena_;  // every node created, for iterative teardown
};

// A torch.save zip (io/torch_checkpoint.cpp, the same allow-list and
// checks as load_torch_checkpoint): calls fn with the whole pickled object,
// its tensors rebuilt, for files whose tensors are not a flat state dict
// (A1111 embeddings). The tree lives only during the call: keep the Tensors,
// not the nodes. Tensors may view `data`, which `owner` keeps alive.
void visit_torch_object(uint8_t* data, size_t size, std::shared_ptr<void> owner, const std::string& name,
                        const std::function<void(const PyRef&)>& fn);

}  // namespace diffuse
