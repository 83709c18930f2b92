// "Nothing runs": hostile .ckpt files whose pickle would run a shell command
// in Python. Each payload touches a sentinel file. Diffuse's loader must
// reject the file with a message naming the forbidden callable and the
// sentinel must never appear. As a positive control (when python3 is
// installed), Python's own pickle.loads on the same bytes does create the
// sentinel, which proves each payload is live and not merely malformed.
// Message-level cases (memo tricks, BUILD, STACK_GLOBAL spellings) are in
// test_torch_checkpoint.cpp.
#include <gtest/gtest.h>
#include <zlib.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "io/checkpoint.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;

void put16(std::string& s, uint32_t v) {
  s += static_cast<char>(v & 0xff);
  s += static_cast<char>((v >> 8) & 0xff);
}
void put32(std::string& s, uint32_t v) {
  put16(s, v & 0xffff);
  put16(s, v >> 16);
}

// A stored (uncompressed) zip laid out like torch.save's: archive/data.pkl
// and archive/version.
std::string torch_zip(const std::string& pickle) {
  const std::vector<std::pair<std::string, std::string>> files{{"archive/data.pkl", pickle},
                                                               {"archive/version", "3\n"}};
  std::string out, central;
  for (const auto& [name, data] : files) {
    const uint32_t crc = static_cast<uint32_t>(
        crc32(0, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
    const uint32_t offset = static_cast<uint32_t>(out.size());
    put32(out, 0x04034b50);  // local file header
    put16(out, 20);          // version needed
    put16(out, 0);           // flags
    put16(out, 0);           // stored
    put32(out, 0);           // time, date
    put32(out, crc);
    put32(out, static_cast<uint32_t>(data.size()));
    put32(out, static_cast<uint32_t>(data.size()));
    put16(out, static_cast<uint32_t>(name.size()));
    put16(out, 0);
    out += name + data;
    put32(central, 0x02014b50);  // central directory header
    put16(central, 20);
    put16(central, 20);
    put16(central, 0);
    put16(central, 0);
    put32(central, 0);
    put32(central, crc);
    put32(central, static_cast<uint32_t>(data.size()));
    put32(central, static_cast<uint32_t>(data.size()));
    put16(central, static_cast<uint32_t>(name.size()));
    put16(central, 0);  // extra
    put16(central, 0);  // comment
    put16(central, 0);  // disk
    put16(central, 0);  // internal attributes
    put32(central, 0);  // external attributes
    put32(central, offset);
    central += name;
  }
  const uint32_t cd_offset = static_cast<uint32_t>(out.size());
  out += central;
  put32(out, 0x06054b50);  // end of central directory
  put16(out, 0);
  put16(out, 0);
  put16(out, static_cast<uint32_t>(files.size()));
  put16(out, static_cast<uint32_t>(files.size()));
  put32(out, static_cast<uint32_t>(central.size()));
  put32(out, cd_offset);
  put16(out, 0);
  return out;
}

// Pickle opcodes (protocol 2; STACK_GLOBAL is protocol 4, which Python's
// unpickler accepts whatever the PROTO header says).
std::string global(const std::string& module, const std::string& name) { return "c" + module + "\n" + name + "\n"; }
std::string str(const std::string& s) {
  std::string out = "X";
  put32(out, static_cast<uint32_t>(s.size()));
  return out + s;
}
const std::string kProto = "\x80\x02";
const std::string kTuple1 = "\x85";
const std::string kReduce = "R";
const std::string kStop = ".";

struct Payload {
  std::string what;     // what the pickle calls
  std::string pickle;   // data.pkl
  std::string forbidden;  // the callable the error must name
};

std::vector<Payload> payloads(const std::string& sentinel) {
  const std::string sh = "touch " + sentinel;
  const std::string py = "__import__('os').system('" + sh + "')";
  std::vector<Payload> p;
  p.push_back({"os.system", kProto + global("os", "system") + str(sh) + kTuple1 + kReduce + kStop, "os.system"});
  p.push_back({"posix.system via STACK_GLOBAL",
               kProto + str("posix") + str("system") + "\x93" + str(sh) + kTuple1 + kReduce + kStop, "posix.system"});
  p.push_back({"builtins.eval", kProto + global("builtins", "eval") + str(py) + kTuple1 + kReduce + kStop,
               "builtins.eval"});
  p.push_back({"builtins.exec (Python 2 spelling)",
               kProto + global("__builtin__", "exec") + str(py) + kTuple1 + kReduce + kStop, "builtins.exec"});
  // subprocess.Popen(["touch", sentinel]): MARK, two strings, LIST.
  p.push_back({"subprocess.Popen",
               kProto + global("subprocess", "Popen") + "(" + str("touch") + str(sentinel) + "l" + kTuple1 + kReduce +
                   kStop,
               "subprocess.Popen"});
  // Nested REDUCE: the allow-listed collections.OrderedDict called on the
  // result of builtins.eval (Python runs the inner call first).
  p.push_back({"OrderedDict(eval(...))",
               kProto + global("collections", "OrderedDict") + global("builtins", "eval") + str(py) + kTuple1 +
                   kReduce + kTuple1 + kReduce + kStop,
               "builtins.eval"});
  return p;
}

bool appears_within(const std::string& path, std::chrono::milliseconds wait) {
  const auto end = std::chrono::steady_clock::now() + wait;
  do {
    if (fs::exists(path)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (std::chrono::steady_clock::now() < end);
  return false;
}

TEST(HostilePickles, RejectedWithTheCallableNamedAndNothingRuns) {
  const std::string dir = testing::temp_dir();
  const std::string sentinel = dir + "/pwned";
  for (const Payload& p : payloads(sentinel)) {
    SCOPED_TRACE(p.what);
    const std::string path = dir + "/model.ckpt";
    std::ofstream(path, std::ios::binary | std::ios::trunc) << torch_zip(p.pickle);
    try {
      load_checkpoint(path);
      ADD_FAILURE() << "loaded a checkpoint that calls " << p.what;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("forbidden global '" + p.forbidden + "'"), std::string::npos) << msg;
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
    }
    // Popen would start a child: give it time to show up before judging.
    EXPECT_FALSE(appears_within(sentinel, std::chrono::milliseconds(200))) << "the payload ran";
  }
}

TEST(HostilePickles, PayloadsAreLiveInPython) {
  if (std::system("python3 -c 'import pickle, zipfile' >/dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  const std::string dir = testing::temp_dir();
  const size_t count = payloads("").size();
  for (size_t i = 0; i < count; ++i) {
    const std::string sentinel = dir + "/ran_" + std::to_string(i);
    const Payload p = payloads(sentinel)[i];
    SCOPED_TRACE(p.what);
    const std::string path = dir + "/model_" + std::to_string(i) + ".ckpt";
    std::ofstream(path, std::ios::binary) << torch_zip(p.pickle);
    // What torch.load(weights_only=False) does first: unpickle data.pkl.
    // Exceptions after the call (OrderedDict(0)) do not matter here.
    const std::string cmd = "python3 -c \"import pickle, sys, zipfile\ntry:\n pickle.loads(zipfile.ZipFile(sys.argv[1])"
                            ".read('archive/data.pkl'))\nexcept Exception:\n pass\" " + path + " >/dev/null 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    EXPECT_TRUE(appears_within(sentinel, std::chrono::seconds(5))) << "Python did not run the payload";
  }
}

}  // namespace
}  // namespace diffuse
