// Restricted unpickler: the opcode semantics follow CPython's Lib/pickle.py
// (class _Unpickler, load_* methods) for protocols 2-5, minus everything that
// would import or run code.
#include "io/unpickler.h"

#include <cstring>
#include <unordered_map>

#include "core/error.h"

namespace diffuse {
namespace {

// Real checkpoints' data.pkl create ~10-20 nodes per tensor (a few thousand
// tensors); this bounds memory on hostile input long before it matters.
constexpr size_t kMaxNodes = 20'000'000;

const char* kind_name(PyValue::Kind k) {
  switch (k) {
    case PyValue::Kind::kNone: return "None";
    case PyValue::Kind::kBool: return "bool";
    case PyValue::Kind::kInt: return "int";
    case PyValue::Kind::kFloat: return "float";
    case PyValue::Kind::kStr: return "str";
    case PyValue::Kind::kBytes: return "bytes";
    case PyValue::Kind::kTuple: return "tuple";
    case PyValue::Kind::kList: return "list";
    case PyValue::Kind::kDict: return "dict";
    case PyValue::Kind::kSet: return "set";
    case PyValue::Kind::kGlobal: return "global";
    case PyValue::Kind::kObject: return "object";
    case PyValue::Kind::kTensor: return "tensor";
  }
  return "?";
}

std::string hex_byte(uint8_t b) {
  static const char kDigits[] = "0123456789abcdef";
  return std::string("0x") + kDigits[b >> 4] + kDigits[b & 15];
}

}  // namespace

PyRef PyValue::get(const std::string& key) const {
  if (kind != Kind::kDict) return nullptr;
  // Last assignment wins, as in a Python dict built by SETITEM(S).
  for (size_t i = items.size(); i-- > 0;)
    if (items[i]->kind == Kind::kStr && items[i]->s == key) return values[i];
  return nullptr;
}

Unpickler::Unpickler(const uint8_t* data, size_t size, std::string name)
    : data_(data), size_(size), name_(std::move(name)) {}

Unpickler::~Unpickler() {
  // Every node is in the arena, so clearing children here never drops a
  // node's last reference: destruction below is flat, cycles are broken.
  for (const PyRef& v : arena_) {
    v->items.clear();
    v->values.clear();
    v->payload.reset();
  }
}

void Unpickler::allow(const std::string& qualified, Callable fn) { allowed_[qualified] = std::move(fn); }

void Unpickler::fail(const std::string& what) const { throw_error(ErrorCode::kIo, name_ + ": " + what); }

PyRef Unpickler::make(PyValue::Kind kind) {
  if (arena_.size() >= kMaxNodes) fail("pickle creates more than " + std::to_string(kMaxNodes) + " objects");
  auto v = std::make_shared<PyValue>();
  v->kind = kind;
  arena_.push_back(v);
  return v;
}

PyRef Unpickler::call(const PyRef& callee, std::vector<PyRef> args, const char* how) {
  if (callee->kind != PyValue::Kind::kGlobal)
    fail(std::string("pickle ") + how + " on a " + kind_name(callee->kind) + " (not a callable) at byte " +
         std::to_string(op_pos_));
  auto it = allowed_.find(callee->s);
  if (it == allowed_.end())
    fail("pickle calls forbidden global '" + callee->s + "' at byte " + std::to_string(op_pos_));
  PyRef r = it->second(args, op_pos_);
  if (!r) fail("internal: allow-listed '" + callee->s + "' returned nothing");
  return r;
}

PyRef Unpickler::load() {
  std::vector<PyRef> stack;
  std::vector<size_t> marks;
  std::unordered_map<uint64_t, PyRef> memo;

  auto need = [&](uint64_t n) -> const uint8_t* {
    if (n > size_ - pos_)
      fail("pickle truncated: opcode at byte " + std::to_string(op_pos_) + " needs " + std::to_string(n) +
           " more bytes, " + std::to_string(size_ - pos_) + " left");
    const uint8_t* p = data_ + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  };
  auto u8 = [&]() { return *need(1); };
  auto le = [&](int n) {
    const uint8_t* p = need(n);
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
  };
  auto floor = [&]() { return marks.empty() ? size_t{0} : marks.back(); };
  auto pop = [&]() {
    if (stack.size() <= floor()) fail("pickle stack underflow at byte " + std::to_string(op_pos_));
    PyRef v = std::move(stack.back());
    stack.pop_back();
    return v;
  };
  auto top = [&]() -> PyRef& {
    if (stack.size() <= floor()) fail("pickle stack underflow at byte " + std::to_string(op_pos_));
    return stack.back();
  };
  auto pop_mark = [&]() {
    if (marks.empty()) fail("pickle has no MARK for the opcode at byte " + std::to_string(op_pos_));
    size_t m = marks.back();
    marks.pop_back();
    std::vector<PyRef> items(std::make_move_iterator(stack.begin() + static_cast<ptrdiff_t>(m)),
                             std::make_move_iterator(stack.end()));
    stack.resize(m);
    return items;
  };
  auto push_int = [&](int64_t v) {
    PyRef r = make(PyValue::Kind::kInt);
    r->i = v;
    stack.push_back(r);
  };
  auto push_text = [&](PyValue::Kind kind, uint64_t n) {
    const uint8_t* p = need(n);
    PyRef r = make(kind);
    r->s.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
    stack.push_back(r);
  };
  auto read_line = [&]() {
    const uint8_t* start = data_ + pos_;
    const void* nl = std::memchr(start, '\n', size_ - pos_);
    if (!nl) fail("pickle GLOBAL at byte " + std::to_string(op_pos_) + " has an unterminated name");
    size_t n = static_cast<const uint8_t*>(nl) - start;
    pos_ += n + 1;
    return std::string(reinterpret_cast<const char*>(start), n);
  };
  auto make_global = [&](const std::string& module, const std::string& qualname) {
    PyRef g = make(PyValue::Kind::kGlobal);
    // Python 2 pickles name builtins "__builtin__".
    g->s = (module == "__builtin__" ? std::string("builtins") : module) + "." + qualname;
    stack.push_back(g);
  };
  auto add_to = [&](const PyRef& container, std::vector<PyRef> items, const char* op) {
    if (container->kind != PyValue::Kind::kList && container->kind != PyValue::Kind::kSet)
      fail(std::string("pickle ") + op + " on a " + kind_name(container->kind) + " at byte " + std::to_string(op_pos_));
    for (PyRef& v : items) container->items.push_back(std::move(v));
  };
  auto set_items = [&](const PyRef& dict, std::vector<PyRef> kv) {
    if (dict->kind != PyValue::Kind::kDict)
      fail(std::string("pickle SETITEM on a ") + kind_name(dict->kind) + " at byte " + std::to_string(op_pos_));
    if (kv.size() % 2 != 0) fail("pickle SETITEMS with an odd number of items at byte " + std::to_string(op_pos_));
    for (size_t i = 0; i < kv.size(); i += 2) {
      dict->items.push_back(std::move(kv[i]));
      dict->values.push_back(std::move(kv[i + 1]));
    }
  };
  auto as_tuple = [&](const PyRef& v, const char* op) -> std::vector<PyRef> {
    if (v->kind != PyValue::Kind::kTuple)
      fail(std::string("pickle ") + op + " arguments are a " + kind_name(v->kind) + ", not a tuple, at byte " +
           std::to_string(op_pos_));
    return v->items;
  };

  while (true) {
    op_pos_ = pos_;
    if (pos_ >= size_) fail("pickle ends without STOP at byte " + std::to_string(pos_));
    uint8_t op = data_[pos_++];
    switch (op) {
      case 0x80: {  // PROTO
        uint8_t v = u8();
        if (v < 2 || v > 5) fail("pickle protocol " + std::to_string(v) + " is not supported (2..5)");
        break;
      }
      case 0x95: {  // FRAME: framing only matters to streaming readers
        uint64_t n = le(8);
        if (n > size_ - pos_) fail("pickle FRAME at byte " + std::to_string(op_pos_) + " runs past the end");
        break;
      }
      case '.':  // STOP
        return pop();
      case '(': marks.push_back(stack.size()); break;  // MARK
      case '0': pop(); break;                           // POP
      case '1': pop_mark(); break;                      // POP_MARK
      case '2': {                                       // DUP
        PyRef v = top();
        stack.push_back(v);
        break;
      }
      case 'N': stack.push_back(make(PyValue::Kind::kNone)); break;
      case 0x88:
      case 0x89: {  // NEWTRUE / NEWFALSE
        PyRef b = make(PyValue::Kind::kBool);
        b->i = op == 0x88;
        stack.push_back(b);
        break;
      }
      case 'J': push_int(static_cast<int32_t>(le(4))); break;  // BININT
      case 'K': push_int(u8()); break;                          // BININT1
      case 'M': push_int(static_cast<int64_t>(le(2))); break;   // BININT2
      case 0x8a:
      case 0x8b: {  // LONG1 / LONG4: little-endian two's complement
        uint64_t n = op == 0x8a ? u8() : le(4);
        if (n > 8) fail("pickle integer of " + std::to_string(n) + " bytes at byte " + std::to_string(op_pos_) + " is too large");
        const uint8_t* p = need(n);
        uint64_t v = 0;
        for (uint64_t i = n; i-- > 0;) v = (v << 8) | p[i];
        if (n > 0 && n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
        push_int(static_cast<int64_t>(v));
        break;
      }
      case 'G': {  // BINFLOAT: big-endian IEEE double
        const uint8_t* p = need(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];
        PyRef r = make(PyValue::Kind::kFloat);
        std::memcpy(&r->f, &bits, 8);
        stack.push_back(r);
        break;
      }
      case 'X': push_text(PyValue::Kind::kStr, le(4)); break;     // BINUNICODE
      case 0x8c: push_text(PyValue::Kind::kStr, u8()); break;     // SHORT_BINUNICODE
      case 0x8d: push_text(PyValue::Kind::kStr, le(8)); break;    // BINUNICODE8
      case 'T': {                                                 // BINSTRING (py2 str)
        int32_t n = static_cast<int32_t>(le(4));
        if (n < 0) fail("pickle BINSTRING with negative length at byte " + std::to_string(op_pos_));
        push_text(PyValue::Kind::kStr, static_cast<uint64_t>(n));
        break;
      }
      case 'U': push_text(PyValue::Kind::kStr, u8()); break;      // SHORT_BINSTRING
      case 'B': push_text(PyValue::Kind::kBytes, le(4)); break;   // BINBYTES
      case 'C': push_text(PyValue::Kind::kBytes, u8()); break;    // SHORT_BINBYTES
      case 0x8e: push_text(PyValue::Kind::kBytes, le(8)); break;  // BINBYTES8
      case 0x96: push_text(PyValue::Kind::kBytes, le(8)); break;  // BYTEARRAY8
      case '}': stack.push_back(make(PyValue::Kind::kDict)); break;   // EMPTY_DICT
      case ']': stack.push_back(make(PyValue::Kind::kList)); break;   // EMPTY_LIST
      case ')': stack.push_back(make(PyValue::Kind::kTuple)); break;  // EMPTY_TUPLE
      case 0x8f: stack.push_back(make(PyValue::Kind::kSet)); break;   // EMPTY_SET
      case 'd':                                                       // DICT
      case 'l':                                                       // LIST
      case 't':                                                       // TUPLE
      case 0x91: {                                                    // FROZENSET
        std::vector<PyRef> items = pop_mark();
        PyRef r = make(op == 'd' ? PyValue::Kind::kDict
                       : op == 'l' ? PyValue::Kind::kList
                       : op == 't' ? PyValue::Kind::kTuple
                                   : PyValue::Kind::kSet);
        if (op == 'd')
          set_items(r, std::move(items));
        else
          r->items = std::move(items);
        stack.push_back(r);
        break;
      }
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        size_t n = op - 0x84u;
        std::vector<PyRef> items(n);
        for (size_t i = n; i-- > 0;) items[i] = pop();
        PyRef r = make(PyValue::Kind::kTuple);
        r->items = std::move(items);
        stack.push_back(r);
        break;
      }
      case 'a': {  // APPEND
        PyRef v = pop();
        add_to(top(), {v}, "APPEND");
        break;
      }
      case 'e': {  // APPENDS
        std::vector<PyRef> items = pop_mark();
        add_to(top(), std::move(items), "APPENDS");
        break;
      }
      case 0x90: {  // ADDITEMS
        std::vector<PyRef> items = pop_mark();
        add_to(top(), std::move(items), "ADDITEMS");
        break;
      }
      case 's': {  // SETITEM
        PyRef v = pop();
        PyRef k = pop();
        set_items(top(), {k, v});
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<PyRef> kv = pop_mark();
        set_items(top(), std::move(kv));
        break;
      }
      case 'c': {  // GLOBAL "module\nname\n"
        std::string module = read_line();
        std::string qualname = read_line();
        make_global(module, qualname);
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        PyRef qualname = pop();
        PyRef module = pop();
        if (!module->is_str() || !qualname->is_str())
          fail("pickle STACK_GLOBAL needs two strings at byte " + std::to_string(op_pos_));
        make_global(module->s, qualname->s);
        break;
      }
      case 'R': {  // REDUCE
        PyRef args = pop();
        PyRef callee = pop();
        stack.push_back(call(callee, as_tuple(args, "REDUCE"), "REDUCE"));
        break;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args)
        PyRef args = pop();
        PyRef cls = pop();
        stack.push_back(call(cls, as_tuple(args, "NEWOBJ"), "NEWOBJ"));
        break;
      }
      case 0x92: {  // NEWOBJ_EX: keyword arguments are ignored by every allow-listed callable
        pop();
        PyRef args = pop();
        PyRef cls = pop();
        stack.push_back(call(cls, as_tuple(args, "NEWOBJ_EX"), "NEWOBJ_EX"));
        break;
      }
      case 'b': {  // BUILD: setstate / __dict__.update on an object we made
        PyRef state = pop();
        PyRef& obj = top();
        if (obj->kind == PyValue::Kind::kGlobal)
          fail("pickle BUILDs forbidden global '" + obj->s + "' at byte " + std::to_string(op_pos_));
        // Attribute state (an OrderedDict's _metadata, a callback's fields)
        // carries no tensors we load; it is dropped.
        if (obj->kind != PyValue::Kind::kObject && obj->kind != PyValue::Kind::kDict &&
            obj->kind != PyValue::Kind::kTensor && obj->kind != PyValue::Kind::kList &&
            obj->kind != PyValue::Kind::kSet)
          fail(std::string("pickle BUILD on a ") + kind_name(obj->kind) + " at byte " + std::to_string(op_pos_));
        break;
      }
      case 'Q': {  // BINPERSID
        PyRef pid = pop();
        if (!persistent_load_) fail("pickle uses a persistent id at byte " + std::to_string(op_pos_) + " but none are expected");
        PyRef r = persistent_load_(pid, op_pos_);
        if (!r) fail("internal: persistent_load returned nothing");
        stack.push_back(r);
        break;
      }
      case 'h':    // BINGET
      case 'j': {  // LONG_BINGET
        uint64_t idx = op == 'h' ? u8() : le(4);
        auto it = memo.find(idx);
        if (it == memo.end()) fail("pickle memo key " + std::to_string(idx) + " not found at byte " + std::to_string(op_pos_));
        stack.push_back(it->second);
        break;
      }
      case 'q':    // BINPUT
      case 'r': {  // LONG_BINPUT
        uint64_t idx = op == 'q' ? u8() : le(4);
        memo[idx] = top();
        break;
      }
      case 0x94: {  // MEMOIZE
        PyRef& v = top();
        memo[memo.size()] = v;
        break;
      }
      default:
        fail("unsupported pickle opcode " + hex_byte(op) +
             (op >= 0x20 && op < 0x7f ? std::string(" ('") + static_cast<char>(op) + "')" : std::string()) +
             " at byte " + std::to_string(op_pos_));
    }
  }
}

}  // namespace diffuse
