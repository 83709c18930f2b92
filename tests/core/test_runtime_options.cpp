// Run-time options (issue 18): one reader of the environment, one table that
// --help-env and docs/runtime-options.md show, and errors that name the
// variable.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "core/error.h"
#include "core/runtime_options.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace diffuse;

namespace {

// Sets a variable for the scope of a test, restoring the old value.
class ScopedVar {
 public:
  ScopedVar(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~ScopedVar() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(RuntimeOptions, ReadsEachVariable) {
  ScopedVar a("DIFFUSE_CUDA_GRAPH", "0"), b("DIFFUSE_POOL_MB", "96"), c("DIFFUSE_CONV_CACHE", "all"),
      d("DIFFUSE_CUDA_LAYOUT", "NCHW"), e("HF_HUB_OFFLINE", "yes"), f("HF_TOKEN", "  hf_x \n");
  const RuntimeOptions o = RuntimeOptions::from_env();
  EXPECT_FALSE(o.cuda_graph);
  EXPECT_EQ(o.pool_mb, 96);
  EXPECT_EQ(o.conv_cache, "all");
  EXPECT_EQ(o.cuda_layout, "nchw");
  EXPECT_TRUE(o.hf_hub_offline);
  EXPECT_EQ(o.hf_token, "hf_x");
}

TEST(RuntimeOptions, DefaultsWhenUnset) {
  ScopedVar a("DIFFUSE_CUDA_GRAPH", ""), b("DIFFUSE_POOL_MB", "");
  const RuntimeOptions o = RuntimeOptions::from_env();
  EXPECT_TRUE(o.cuda_graph);
  EXPECT_EQ(o.pool_mb, 384);
}

TEST(RuntimeOptions, BadValuesNameTheVariable) {
  {
    ScopedVar a("DIFFUSE_POOL_MB", "lots");
    EXPECT_NE(error_of([] { RuntimeOptions::from_env(); }).find("DIFFUSE_POOL_MB='lots'"), std::string::npos);
  }
  {
    ScopedVar a("DIFFUSE_CUDA_GRAPH", "maybe");
    EXPECT_NE(error_of([] { RuntimeOptions::from_env(); }).find("DIFFUSE_CUDA_GRAPH"), std::string::npos);
  }
  {
    ScopedVar a("DIFFUSE_CONV_CACHE", "some");
    const std::string msg = error_of([] { RuntimeOptions::from_env(); });
    EXPECT_NE(msg.find("expected one of 0, f32, all"), std::string::npos) << msg;
  }
}

TEST(RuntimeOptions, SetReplacesTheProcessOptions) {
  const RuntimeOptions saved = runtime_options();
  RuntimeOptions o = saved;
  o.cuda_graph = !saved.cuda_graph;
  set_runtime_options(o);
  EXPECT_EQ(runtime_options().cuda_graph, !saved.cuda_graph);
  set_runtime_options(saved);
  EXPECT_EQ(runtime_options().cuda_graph, saved.cuda_graph);
}

// The help text, the docs table and the code's table list the same variables.
TEST(RuntimeOptions, HelpAndDocsListEveryVariable) {
  const std::string help = runtime_options_help();
  const std::string doc = diffuse::testing::read_file(std::string(DIFFUSE_SOURCE_DIR) + "/docs/runtime-options.md");
  std::set<std::string> in_table;
  for (const RuntimeOptionInfo& r : runtime_option_table()) {
    in_table.insert(r.variable);
    EXPECT_NE(help.find(r.variable), std::string::npos) << r.variable;
    EXPECT_NE(doc.find(std::string("| `") + r.variable + "` |"), std::string::npos) << r.variable << " not in docs";
  }
  std::set<std::string> in_doc;
  static const std::regex row(R"re(\n\| `([A-Z_0-9]+)` \|)re");
  for (std::sregex_iterator it(doc.begin(), doc.end(), row), end; it != end; ++it) in_doc.insert((*it)[1]);
  EXPECT_EQ(in_doc, in_table);
}

// No source file reads the environment except runtime_options.cpp, and the
// HOME / XDG_* look-ups of default folders.
TEST(RuntimeOptions, OnlyOneFileCallsGetenv) {
  static const std::regex call(R"re(getenv\(\s*("?)([A-Za-z_0-9]*))re");
  std::vector<std::string> offenders;
  for (const auto& e : fs::recursive_directory_iterator(std::string(DIFFUSE_SOURCE_DIR) + "/src")) {
    const std::string path = e.path().string();
    if (!e.is_regular_file() || path.find("runtime_options.cpp") != std::string::npos) continue;
    const std::string ext = e.path().extension().string();
    if (ext != ".cpp" && ext != ".h" && ext != ".cu" && ext != ".cuh") continue;
    const std::string text = diffuse::testing::read_file(path);
    for (std::sregex_iterator it(text.begin(), text.end(), call), end; it != end; ++it) {
      const std::string name = (*it)[2];
      const bool literal = (*it)[1] == "\"";
      if (literal && (name == "HOME" || name.rfind("XDG_", 0) == 0)) continue;
      if (!literal && name == "name") {
        // A helper taking the variable's name: allowed only where every caller passes HOME / XDG_*.
        static const std::regex helper_use(R"re(\benv\(\s*"([A-Za-z_0-9]+)")re");
        bool only_folders = true;
        for (std::sregex_iterator u(text.begin(), text.end(), helper_use); u != end; ++u) {
          const std::string v = (*u)[1];
          only_folders = only_folders && (v == "HOME" || v.rfind("XDG_", 0) == 0);
        }
        if (only_folders) continue;
      }
      offenders.push_back(path + ": getenv(" + std::string((*it)[1]) + name + ")");
    }
  }
  EXPECT_TRUE(offenders.empty()) << [&] {
    std::string s;
    for (const auto& o : offenders) s += o + "\n";
    return s;
  }();
}
