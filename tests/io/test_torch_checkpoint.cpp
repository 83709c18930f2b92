// PyTorch checkpoints: the test assembles zip archives and protocol-2 pickles
// byte by byte (what torch.save writes: torch/serialization.py:_save), so it
// needs neither Python nor torch, then checks loading and every rejection.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include <zlib.h>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/unpickler.h"
#include "io/zip_reader.h"
#include "test_util.h"

using namespace diffuse;
namespace dt = diffuse::testing;

namespace {

void put16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v));
  s.push_back(static_cast<char>(v >> 8));
}
void put32(std::string& s, uint32_t v) {
  put16(s, static_cast<uint16_t>(v));
  put16(s, static_cast<uint16_t>(v >> 16));
}
void put64(std::string& s, uint64_t v) {
  put32(s, static_cast<uint32_t>(v));
  put32(s, static_cast<uint32_t>(v >> 32));
}

struct ZipFile {
  std::string name;
  std::string data;
  bool deflate = false;
  uint64_t declared_size = 0;  // nonzero: lie about the uncompressed size
};

std::string raw_deflate(const std::string& in) {
  z_stream z{};
  deflateInit2(&z, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, in.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// A zip like torch's writer makes: stored entries with data aligned to 64
// bytes through a padding extra field; optionally zip64 records throughout.
std::string make_zip(const std::vector<ZipFile>& files, bool zip64 = false) {
  std::string out, central;
  for (const ZipFile& f : files) {
    std::string payload = f.deflate ? raw_deflate(f.data) : f.data;
    uint32_t crc = static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(f.data.data()), static_cast<uInt>(f.data.size())));
    uint64_t usize = f.declared_size ? f.declared_size : f.data.size();
    uint64_t offset = out.size();
    size_t pad = (64 - (offset + 30 + f.name.size() + 4) % 64) % 64;
    std::string local;
    put32(local, 0x04034b50);
    put16(local, 45);
    put16(local, 0);
    put16(local, f.deflate ? 8 : 0);
    put32(local, 0);
    put32(local, crc);
    put32(local, static_cast<uint32_t>(payload.size()));
    put32(local, static_cast<uint32_t>(usize));
    put16(local, static_cast<uint16_t>(f.name.size()));
    put16(local, static_cast<uint16_t>(4 + pad));
    local += f.name;
    put16(local, 0x4246);  // "FB" padding, as torch's writer
    put16(local, static_cast<uint16_t>(pad));
    local += std::string(pad, 'Z');
    out += local + payload;

    std::string extra;
    if (zip64) {
      put16(extra, 1);
      put16(extra, 24);
      put64(extra, usize);
      put64(extra, payload.size());
      put64(extra, offset);
    }
    put32(central, 0x02014b50);
    put16(central, 45);
    put16(central, 45);
    put16(central, 0);
    put16(central, f.deflate ? 8 : 0);
    put32(central, 0);
    put32(central, crc);
    put32(central, zip64 ? 0xffffffffu : static_cast<uint32_t>(payload.size()));
    put32(central, zip64 ? 0xffffffffu : static_cast<uint32_t>(usize));
    put16(central, static_cast<uint16_t>(f.name.size()));
    put16(central, static_cast<uint16_t>(extra.size()));
    put16(central, 0);
    put16(central, 0);
    put16(central, 0);
    put32(central, 0);
    put32(central, zip64 ? 0xffffffffu : static_cast<uint32_t>(offset));
    central += f.name + extra;
  }
  uint64_t cd_offset = out.size();
  out += central;
  if (zip64) {
    uint64_t z64 = out.size();
    put32(out, 0x06064b50);
    put64(out, 44);
    put16(out, 45);
    put16(out, 45);
    put32(out, 0);
    put32(out, 0);
    put64(out, files.size());
    put64(out, files.size());
    put64(out, central.size());
    put64(out, cd_offset);
    put32(out, 0x07064b50);
    put32(out, 0);
    put64(out, z64);
    put32(out, 1);
  }
  put32(out, 0x06054b50);
  put16(out, 0);
  put16(out, 0);
  put16(out, zip64 ? 0xffff : static_cast<uint16_t>(files.size()));
  put16(out, zip64 ? 0xffff : static_cast<uint16_t>(files.size()));
  put32(out, zip64 ? 0xffffffffu : static_cast<uint32_t>(central.size()));
  put32(out, zip64 ? 0xffffffffu : static_cast<uint32_t>(cd_offset));
  put16(out, 0);
  return out;
}

// Protocol-2 pickle assembler (opcodes as in CPython's Lib/pickle.py).
struct Pickle {
  std::string b;
  Pickle() { b += "\x80\x02"; }
  size_t pos() const { return b.size(); }
  Pickle& op(char c) {
    b.push_back(c);
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    b += "c" + module + "\n" + name + "\n";
    return *this;
  }
  Pickle& str(const std::string& s) {
    b.push_back('X');
    put32(b, static_cast<uint32_t>(s.size()));
    b += s;
    return *this;
  }
  Pickle& integer(int64_t v) {
    if (v >= 0 && v < 256) {
      b.push_back('K');
      b.push_back(static_cast<char>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      b.push_back('J');
      put32(b, static_cast<uint32_t>(v));
    } else {
      b += "\x8a\x08";
      put64(b, static_cast<uint64_t>(v));
    }
    return *this;
  }
  Pickle& ints(const std::vector<int64_t>& v) {
    op('(');
    for (int64_t x : v) integer(x);
    return op('t');
  }
  Pickle& empty_ordered_dict() { return global("collections", "OrderedDict").op(')').op('R'); }
  Pickle& storage(const std::string& type, const std::string& key, int64_t numel) {
    op('(').str("storage").global("torch", type).str(key).str("cpu").integer(numel).op('t');
    return op('Q');  // BINPERSID
  }
  // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
  Pickle& tensor(const std::string& type, const std::string& key, int64_t numel, int64_t offset,
                 const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2").op('(');
    storage(type, key, numel).integer(offset).ints(size).ints(stride);
    op('\x89');  // NEWFALSE
    empty_ordered_dict();
    return op('t').op('R');
  }
  std::string done() { return b + "."; }
};

std::string floats(const std::vector<float>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }
std::string halves(const std::vector<float>& v) {
  std::string s;
  for (float f : v) put16(s, f32_to_f16(f));
  return s;
}

Checkpoint parse(const std::string& zip) {
  auto buf = std::make_shared<std::vector<uint8_t>>(zip.begin(), zip.end());
  return parse_torch_checkpoint(buf->data(), buf->size(), buf, "model.ckpt");
}

// Expects an Error whose message holds every fragment; returns the message.
std::string expect_rejected(const std::string& zip, const std::vector<std::string>& fragments,
                            ErrorCode code = ErrorCode::kIo) {
  try {
    parse(zip);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    std::string msg = e.what();
    EXPECT_NE(msg.find("model.ckpt"), std::string::npos) << msg;
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
    return msg;
  }
  ADD_FAILURE() << "accepted a hostile checkpoint";
  return "";
}

std::string archive_with(const std::string& pickle, std::vector<ZipFile> data = {}) {
  std::vector<ZipFile> files{{"archive/data.pkl", pickle}};
  for (auto& f : data) files.push_back(f);
  files.push_back({"archive/version", "3\n"});
  return make_zip(files);
}

const std::vector<float> kSix{1.5f, -2.0f, 3.25f, 4.0f, -5.5f, 6.0f};

}  // namespace

TEST(TorchCheckpoint, LightningStateDict) {
  // {"epoch": 3, "state_dict": OrderedDict(a=<2x3 f32>), "global_step": numpy scalar,
  //  "callbacks": {ModelCheckpoint (class as key): {"best": 0.5}}, "dtype": torch.float16}
  Pickle p;
  p.op('}').op('(');
  p.str("epoch").integer(3);
  p.str("state_dict").empty_ordered_dict().str("a").tensor("FloatStorage", "0", 6, 0, {2, 3}, {3, 1}).op('s');
  p.str("global_step").global("numpy.core.multiarray", "scalar");
  p.global("numpy", "dtype").str("i8").op('\x89').op('\x88').op('\x87').op('R');  // dtype('i8', False, True)
  p.op('(').integer(3).str("<").op('N').op('N').op('N').integer(-1).integer(-1).integer(0).op('t').op('b');
  p.global("_codecs", "encode").str(std::string("\x07\0\0\0\0\0\0\0", 8)).str("latin1").op('\x86').op('R').op('\x86').op('R');
  p.str("callbacks").op('}').global("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint");
  p.op('}').str("best").op('G').b += std::string("\x3f\xe0\x00\x00\x00\x00\x00\x00", 8);
  p.op('s').op('s');
  p.str("dtype").global("torch", "float16");
  p.op('u');
  Checkpoint ck = parse(archive_with(p.done(), {{"archive/data/0", floats(kSix)}}));
  ASSERT_EQ(ck.tensors.size(), 1u);
  const Tensor& a = ck.tensors.at("a");
  EXPECT_EQ(a.dtype(), DType::kF32);
  EXPECT_EQ(a.shape(), (Shape{2, 3}));
  EXPECT_EQ(a.to_f32_vector(), kSix);
}

// BasicSR / Real-ESRGAN releases: {"params": sd, "params_ema": sd}; the EMA
// weights (the published ones) are read, whichever comes first.
TEST(TorchCheckpoint, BasicSrParamsEmaWrapper) {
  Pickle p;
  p.op('}').op('(');
  p.str("params").empty_ordered_dict().str("w").tensor("FloatStorage", "0", 6, 0, {6}, {1}).op('s');
  p.str("params_ema").empty_ordered_dict().str("w").tensor("FloatStorage", "1", 6, 0, {2, 3}, {3, 1}).op('s');
  p.op('u');
  std::vector<float> other(6, 9.0f);
  Checkpoint ck = parse(archive_with(p.done(), {{"archive/data/0", floats(other)}, {"archive/data/1", floats(kSix)}}));
  ASSERT_EQ(ck.tensors.size(), 1u);
  EXPECT_EQ(ck.tensors.at("w").shape(), (Shape{2, 3}));
  EXPECT_EQ(ck.tensors.at("w").to_f32_vector(), kSix);

  Pickle q;  // "params" alone
  q.op('}').op('(');
  q.str("params").empty_ordered_dict().str("w").tensor("FloatStorage", "0", 6, 0, {6}, {1}).op('s');
  q.op('u');
  Checkpoint ck2 = parse(archive_with(q.done(), {{"archive/data/0", floats(kSix)}}));
  ASSERT_EQ(ck2.tensors.size(), 1u);
  EXPECT_EQ(ck2.tensors.at("w").to_f32_vector(), kSix);
}

TEST(TorchCheckpoint, PlainDictStridesHalfAndSharedStorage) {
  Pickle p;
  p.empty_ordered_dict().op('(');
  // Transposed view of a (2,3) storage: size (3,2) stride (1,3).
  p.str("t").tensor("FloatStorage", "0", 6, 0, {3, 2}, {1, 3});
  // Half storage with an offset: elements [2, 6).
  p.str("h").tensor("HalfStorage", "1", 8, 2, {4}, {1});
  // Second view of storage "0" (memoised in torch files; a fresh id here):
  p.str("row1").tensor("FloatStorage", "0", 6, 3, {3}, {1});
  // Parameter wrapper and a scalar (0-dim) tensor.
  p.str("param").global("torch._utils", "_rebuild_parameter").op('(');
  p.tensor("LongStorage", "2", 2, 1, {1}, {1}).op('\x88').empty_ordered_dict().op('t').op('R');
  p.str("scalar").tensor("FloatStorage", "0", 6, 5, {}, {});
  p.op('u');
  // OrderedDict state (_metadata) applied with BUILD, as torch writes it.
  p.op('}').str("_metadata").op('}').op('s').op('b');
  std::vector<float> h{0.5f, 1.0f, -2.0f, 0.125f, 3.0f, -0.25f, 7.0f, 8.0f};
  std::string longs;
  put64(longs, static_cast<uint64_t>(-5));
  put64(longs, 1ull << 40);
  Checkpoint ck = parse(archive_with(p.done(), {{"archive/data/0", floats(kSix)},
                                                {"archive/data/1", halves(h)},
                                                {"archive/data/2", longs}}));
  ASSERT_EQ(ck.tensors.size(), 5u);
  const Tensor& t = ck.tensors.at("t");
  EXPECT_EQ(t.shape(), (Shape{3, 2}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.to_f32_vector(), (std::vector<float>{1.5f, 4.0f, -2.0f, -5.5f, 3.25f, 6.0f}));
  const Tensor& hh = ck.tensors.at("h");
  EXPECT_EQ(hh.dtype(), DType::kF16);
  EXPECT_EQ(hh.to_f32_vector(), (std::vector<float>{-2.0f, 0.125f, 3.0f, -0.25f}));
  EXPECT_EQ(ck.tensors.at("row1").to_f32_vector(), (std::vector<float>{4.0f, -5.5f, 6.0f}));
  EXPECT_EQ(ck.tensors.at("param").to_i64_vector(), (std::vector<int64_t>{1ll << 40}));
  EXPECT_EQ(ck.tensors.at("scalar").ndim(), 0);
  EXPECT_EQ(ck.tensors.at("scalar").item(), 6.0f);
}

TEST(TorchCheckpoint, DeflatedZip64FileFromDisk) {
  Pickle p;
  p.op('}').str("w").tensor("DoubleStorage", "0", 2, 0, {2}, {1}).op('s');
  std::string doubles;
  double d[2] = {0.1, -1e10};
  doubles.assign(reinterpret_cast<const char*>(d), 16);
  std::string zip = make_zip({{"m/data.pkl", p.done(), true}, {"m/data/0", doubles, true}, {"m/byteorder", "little"}},
                             /*zip64=*/true);
  std::string path = dt::temp_dir() + "/m.pt";
  std::ofstream(path, std::ios::binary) << zip;
  for (Checkpoint ck : {load_torch_checkpoint(path), load_checkpoint(path)}) {
    ASSERT_EQ(ck.tensors.count("w"), 1u);
    EXPECT_EQ(ck.tensors.at("w").dtype(), DType::kF32);
    EXPECT_EQ(ck.tensors.at("w").to_f32_vector(), (std::vector<float>{0.1f, -1e10f}));
  }
}

// Stored entries (what torch writes) are views of the caller's buffer, also in
// zip64 archives; deflated ones are inflated into owned memory.
TEST(TorchCheckpoint, StoredEntriesAreZeroCopyViews) {
  const std::string six = floats(kSix);
  for (bool zip64 : {false, true}) {
    std::string z = make_zip({{"m/data/0", six}, {"m/data/1", six + six, true}, {"m/empty", ""}}, zip64);
    ZipReader reader(reinterpret_cast<const uint8_t*>(z.data()), z.size(), "views.zip");
    ASSERT_EQ(reader.entries().size(), 3u);
    ZipBytes stored = reader.read(*reader.find("m/data/0"));
    EXPECT_EQ(stored.owned, nullptr);
    EXPECT_EQ(stored.data, reinterpret_cast<const uint8_t*>(z.data()) + z.find(six)) << zip64;
    EXPECT_EQ(stored.size, six.size());
    ZipBytes inflated = reader.read(*reader.find("m/data/1"));
    ASSERT_NE(inflated.owned, nullptr);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(inflated.data), inflated.size), six + six);
    EXPECT_EQ(reader.read(*reader.find("m/empty")).size, 0u);
  }
  // Through the checkpoint reader: the f32 tensor points into the buffer.
  Pickle p;
  p.op('}').str("w").tensor("FloatStorage", "0", 6, 0, {6}, {1}).op('s');
  std::string zip = archive_with(p.done(), {{"archive/data/0", six}});
  auto buf = std::make_shared<std::vector<uint8_t>>(zip.begin(), zip.end());
  Checkpoint ck = parse_torch_checkpoint(buf->data(), buf->size(), buf, "model.ckpt");
  EXPECT_EQ(static_cast<const uint8_t*>(ck.tensors.at("w").raw_data()), buf->data() + zip.find(six));
  EXPECT_EQ(ck.tensors.at("w").to_f32_vector(), kSix);
}

TEST(TorchCheckpointHostile, ForbiddenCallsNameTheGlobal) {
  // os.system("echo pwned") as the whole pickle.
  Pickle sys;
  sys.global("os", "system");
  sys.str("echo pwned").op('\x85');
  size_t at = sys.pos();
  sys.op('R');
  expect_rejected(archive_with(sys.done()), {"forbidden global 'os.system'", "at byte " + std::to_string(at)});

  Pickle ev;
  ev.op('}').str("x").global("builtins", "eval").str("1+1").op('\x85').op('R').op('s');
  expect_rejected(archive_with(ev.done()), {"'builtins.eval'"});

  Pickle py2;  // Python 2 spelling of builtins
  py2.global("__builtin__", "exec").str("x").op('\x85').op('R');
  expect_rejected(archive_with(py2.done()), {"'builtins.exec'"});

  Pickle popen;  // NEWOBJ: subprocess.Popen.__new__(Popen, ["sh"])
  popen.global("subprocess", "Popen").op(']').str("sh").op('a').op('\x85').op('\x81');
  expect_rejected(archive_with(popen.done()), {"'subprocess.Popen'"});

  Pickle stack_global;  // protocol 4 STACK_GLOBAL spelling
  stack_global.str("posix").str("system").op('\x93').str("id").op('\x85').op('R');
  expect_rejected(archive_with(stack_global.done()), {"'posix.system'"});

  // Nested: an allow-listed call whose argument is a forbidden call.
  Pickle nested;
  nested.op('}').str("a").global("torch._utils", "_rebuild_tensor_v2").op('(');
  nested.global("os", "system").str("rm -rf /").op('\x85').op('R');
  nested.integer(0).ints({1}).ints({1}).op('t').op('R').op('s');
  expect_rejected(archive_with(nested.done()), {"'os.system'"});

  // BUILD on a non-allow-listed global (would be setstate on a class).
  Pickle build;
  build.global("os", "environ").op('}').op('b');
  expect_rejected(archive_with(build.done()), {"BUILDs forbidden global 'os.environ'"});

  // A forbidden global memoised, then fetched and called.
  Pickle memo;
  memo.global("os", "system").op('q').b.push_back('\x05');
  memo.op('0').op('h').b.push_back('\x05');
  memo.str("id").op('\x85').op('R');
  expect_rejected(archive_with(memo.done()), {"'os.system'"});
}

TEST(TorchCheckpointHostile, StorageOutOfBounds) {
  std::string six = floats(kSix);
  // Extent past the storage's numel.
  Pickle p1;
  p1.op('}').str("x.weight").tensor("FloatStorage", "0", 6, 4, {2, 2}, {2, 1}).op('s');
  expect_rejected(archive_with(p1.done(), {{"archive/data/0", six}}),
                  {"reaches element 7", "storage '0'", "archive/data/0", "holds 6"});
  // numel larger than the archive entry.
  Pickle p2;
  p2.op('}').str("x").tensor("FloatStorage", "0", 100, 0, {100}, {1}).op('s');
  expect_rejected(archive_with(p2.done(), {{"archive/data/0", six}}), {"declares 100 elements", "holds 24 bytes"});
  // Missing entry, negative stride, overflowing size.
  Pickle p3;
  p3.op('}').str("x").tensor("FloatStorage", "7", 6, 0, {6}, {1}).op('s');
  expect_rejected(archive_with(p3.done(), {{"archive/data/0", six}}), {"no archive entry 'archive/data/7'"});
  Pickle p4;
  p4.op('}').str("x").tensor("FloatStorage", "0", 6, 5, {2}, {-1}).op('s');
  expect_rejected(archive_with(p4.done(), {{"archive/data/0", six}}), {"stride (-1)", "invalid"});
  Pickle p5;
  p5.op('}').str("x").tensor("FloatStorage", "0", 6, 0, {1ll << 40, 1ll << 40}, {1, 1}).op('s');
  expect_rejected(archive_with(p5.done(), {{"archive/data/0", six}}), {"invalid"});
  Pickle p6;
  p6.op('}').str("x").tensor("ComplexFloatStorage", "0", 6, 0, {6}, {1}).op('s');
  expect_rejected(archive_with(p6.done(), {{"archive/data/0", six}}), {"unsupported type 'torch.ComplexFloatStorage'"});
  // A storage is read once, by its first reference (here 2 elements); a later
  // reference that declares more must still be held to what was read (found by
  // fuzz_torch_checkpoint: a heap read past the converted copy).
  Pickle p7;
  p7.op('}').str("a").tensor("FloatStorage", "0", 2, 0, {2}, {1}).op('s');
  p7.str("b").tensor("FloatStorage", "0", 6, 0, {6}, {1}).op('s');
  expect_rejected(archive_with(p7.done(), {{"archive/data/0", six}}), {"reaches element 5", "holds 2"});
}

TEST(TorchCheckpointHostile, ZipBombsAndBrokenArchives) {
  // 10 GB declared from a ~10 KB deflate stream: beyond deflate's ratio.
  std::string zeros(1 << 20, '\0');
  ZipFile bomb{"archive/data/0", zeros, true, 10ull << 30};
  Pickle p;
  p.op('}').op('.');
  expect_rejected(make_zip({{"archive/data.pkl", p.b}, bomb}), {"archive/data/0", "zip bomb"});
  // Declared small, inflates to more: stopped at the declared size.
  ZipFile liar{"archive/data.pkl", Pickle().op('}').done() + std::string(5000, 'x'), true, 4};
  expect_rejected(make_zip({liar}), {"inflates beyond its declared 4 bytes"});
  // Inflated-total cap applies across entries (checked directly on the reader).
  std::string z = make_zip({{"a", zeros, true}, {"b", zeros, true}});
  ZipReader reader(reinterpret_cast<const uint8_t*>(z.data()), z.size(), "caps.zip", (1 << 20) + 10);
  EXPECT_NO_THROW(reader.read(reader.entries()[0]));
  EXPECT_THROW(reader.read(reader.entries()[1]), Error);

  std::string good = archive_with(Pickle().op('}').done());
  expect_rejected(good.substr(0, good.size() - 10), {"end-of-central-directory"});
  expect_rejected(good.substr(0, 40), {"zip"});
  expect_rejected(make_zip({{"archive/other.pkl", "x"}}), {"no data.pkl"});
  // Central directory pointing past the file.
  std::string bad_cd = good;
  bad_cd[bad_cd.size() - 6] = '\x7f';
  expect_rejected(bad_cd, {"central directory"});
  // Legacy torch format and non-zip content.
  std::string legacy("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15);
  expect_rejected(legacy, {"legacy"}, ErrorCode::kUnsupported);
  expect_rejected("hello world", {"no zip signature"});
}

TEST(TorchCheckpointHostile, MalformedPickles) {
  expect_rejected(archive_with("\x80\x02}"), {"without STOP"});
  expect_rejected(archive_with(std::string("\x80\x02X\xff\xff\x00\x00" "ab.", 10)), {"truncated"});
  expect_rejected(archive_with("\x80\x02s."), {"underflow"});
  expect_rejected(archive_with("\x80\x02h\x09."), {"memo key 9"});
  expect_rejected(archive_with("\x80\x02I1\n."), {"opcode 0x49 ('I')"});
  expect_rejected(archive_with("\x80\x09}."), {"protocol 9"});
  expect_rejected(archive_with("\x80\x02K\x01)R."), {"REDUCE on a int"});
  expect_rejected(archive_with("\x80\x02K\x01."), {"pickled", "not a state dict"});
  // Persistent id that is not a storage tuple.
  expect_rejected(archive_with("\x80\x02K\x01Q."), {"persistent id"});
}

// Cyclic and deeply nested structures are torn down without recursion.
TEST(TorchCheckpointHostile, DeepAndCyclicStructures) {
  Pickle deep;
  deep.op('}').str("x");
  for (int i = 0; i < 200000; ++i) deep.op(']');
  for (int i = 0; i < 199999; ++i) deep.op('a');
  deep.op('s');
  Checkpoint ck = parse(archive_with(deep.done()));
  EXPECT_TRUE(ck.tensors.empty());
  Pickle cyc;  // l = []; l.append(l); {"l": l}
  cyc.op('}').str("l").op(']').op('q').b.push_back('\x01');
  cyc.op('h').b.push_back('\x01');
  cyc.op('a').op('s');
  EXPECT_TRUE(parse(archive_with(cyc.done())).tensors.empty());
}

TEST(TorchCheckpointHostile, MutationsNeverCrash) {
  Pickle p;
  p.empty_ordered_dict().op('(');
  p.str("t").tensor("FloatStorage", "0", 6, 0, {3, 2}, {1, 3});
  p.str("h").tensor("HalfStorage", "1", 4, 1, {3}, {1});
  p.op('u');
  std::string good = archive_with(p.done(), {{"archive/data/0", floats(kSix)}, {"archive/data/1", halves({1, 2, 3, 4})}});
  ASSERT_EQ(parse(good).tensors.size(), 2u);
  uint32_t state = 777;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string f = good;
    for (int k = 0; k <= iter % 3; ++k) {
      state = state * 1664525u + 1013904223u;
      f[(state >> 8) % f.size()] = static_cast<char>(state >> 24);
    }
    try {
      parse(f);
    } catch (const Error&) {
    }
  }
  SUCCEED();
}
