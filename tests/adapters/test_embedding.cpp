// Textual-inversion files and triggers (adapters/embedding.h,
// text/prompt_weights.h EmbeddingTriggers): every format read, the checks
// against a model's encoders, corrupt files, the cache, A1111's embeddings
// folder, and where a prompt's trigger words put the vectors (multi-vector
// embeddings, weighting, 75-token chunks). Generation with embeddings and the
// diffusers goldens are in test_embedding_goldens.cpp.
#include <gtest/gtest.h>

#include <zip.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <list>
#include <map>

#include <nlohmann/json.hpp>

#include "adapters/embedding.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/sha256.h"
#include "text/clip_tokenizer.h"
#include "text/prompt_weights.h"
#include "pipeline/edit_runs.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using namespace testing;


// ---- writing embedding files as torch.save does --------------------------------

// A protocol-2 pickle, written opcode by opcode (what torch.save emits).
struct Pickle {
  std::string b = std::string("\x80\x02", 2);
  void op(char c) { b += c; }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) b += static_cast<char>((v >> (8 * i)) & 0xff);
  }
  void str(const std::string& s) {  // BINUNICODE
    op('X');
    u32(static_cast<uint32_t>(s.size()));
    b += s;
  }
  void integer(int32_t v) {  // BININT
    op('J');
    u32(static_cast<uint32_t>(v));
  }
  void global(const std::string& module, const std::string& name) { b += "c" + module + "\n" + name + "\n"; }
  // _rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset, size, stride, False, OrderedDict())
  void tensor(const std::string& key, int numel, int offset, const std::vector<int>& size, const std::vector<int>& stride) {
    global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    op('(');
    str("storage");
    global("torch", "FloatStorage");
    str(key);
    str("cpu");
    integer(numel);
    op('t');
    op('Q');  // BINPERSID
    integer(offset);
    op('(');
    for (int s : size) integer(s);
    op('t');
    op('(');
    for (int s : stride) integer(s);
    op('t');
    op('\x89');  // NEWFALSE
    global("collections", "OrderedDict");
    op(')');
    op('R');
    op('t');
    op('R');
  }
};

// A torch.save zip: <archive>/data.pkl, <archive>/data/0 (stored, like torch).
void write_torch_zip(const std::string& path, const std::string& pickle, const std::vector<float>& storage) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  ASSERT_NE(z, nullptr);
  std::list<std::string> keep;  // libzip reads the buffers at zip_close
  auto add = [&](const std::string& name, std::string bytes) {
    keep.push_back(std::move(bytes));
    zip_source_t* src = zip_source_buffer(z, keep.back().data(), keep.back().size(), 0);
    const zip_int64_t idx = zip_file_add(z, name.c_str(), src, ZIP_FL_OVERWRITE);
    ASSERT_GE(idx, 0);
    zip_set_file_compression(z, static_cast<zip_uint64_t>(idx), ZIP_CM_STORE, 0);
  };
  add("archive/data.pkl", pickle);
  add("archive/byteorder", "little");
  add("archive/data/0", std::string(reinterpret_cast<const char*>(storage.data()), storage.size() * sizeof(float)));
  add("archive/version", "3\n");
  ASSERT_EQ(zip_close(z), 0);
}

std::vector<float> iota(size_t n, float start) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + 0.25f * static_cast<float>(i);
  return v;
}

void expect_error(const std::function<void()>& fn, ErrorCode code, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// ---- reading ----------------------------------------------------------------------

TEST(EmbeddingFile, ReadsTheFixtureFormats) {
  struct Case {
    std::string file, sha_from;
    std::vector<std::pair<std::string, Shape>> vectors;
  };
  const std::vector<std::pair<std::string, Case>> cases = {
      {"sd1", {"ti/ti_fixture_concept.pt", "a1111_pt_string_to_param", {{"", {2, 16}}}}},
      {"sd1", {"ti/ti_fixture_concept.safetensors", "a1111_safetensors_emb_params", {{"", {2, 16}}}}},
      {"sdxl", {"ti/ti_fixture_concept_sdxl.safetensors", "", {{"clip_l", {2, 16}}, {"clip_g", {2, 32}}}}},
  };
  for (const auto& [fam, c] : cases) {
    SCOPED_TRACE(c.file);
    const std::string dir = goldens_dir() + "/" + fam;
    const TextualInversionFile f = read_embedding_file(dir + "/" + c.file);
    EXPECT_EQ(f.name, fs::path(c.file).stem().string());
    ASSERT_EQ(f.vectors.size(), c.vectors.size());
    for (const auto& [key, shape] : c.vectors) {
      ASSERT_TRUE(f.vectors.count(key)) << key;
      EXPECT_EQ(f.vectors.at(key).shape(), shape);
      EXPECT_EQ(f.vectors.at(key).dtype(), DType::kF32);
    }
    // The hash is the file's sha256, as cases.json records it.
    const nlohmann::json cases_json = nlohmann::json::parse(read_file(dir + "/cases.json"));
    for (const auto& run : cases_json["textual_inversion"]["runs"])
      if (run["file"] == c.file) {
        EXPECT_EQ(f.sha256, run["file_sha256"].get<std::string>());
      }
    EXPECT_EQ(f.short_hash(), f.sha256.substr(0, 12));
  }
  // The .pt and the .safetensors of a family hold the same vectors.
  const std::string dir = goldens_dir() + "/sd1/ti/";
  EXPECT_EQ(read_embedding_file(dir + "ti_fixture_concept.pt").vectors.at("").to_f32_vector(),
            read_embedding_file(dir + "ti_fixture_concept.safetensors").vectors.at("").to_f32_vector());
}

TEST(EmbeddingFile, ReadsA1111PtWithManyVectorsAndStrides) {
  // string_to_param["*"] of 3 x 4 vectors, stored transposed (stride (1, 3)):
  // element [i][j] is storage[j * 3 + i].
  const std::string path = temp_dir() + "/trio.pt";
  Pickle p;
  p.op('}');
  p.op('(');
  p.str("string_to_token");
  p.op('}');
  p.str("*");
  p.integer(265);
  p.op('s');
  p.str("string_to_param");
  p.op('}');
  p.str("*");
  p.tensor("0", 12, 0, {3, 4}, {1, 3});
  p.op('s');
  p.str("name");
  p.str("trio");
  p.str("step");
  p.integer(100);
  p.op('u');
  p.op('.');
  const std::vector<float> storage = iota(12, 1.0f);
  write_torch_zip(path, p.b, storage);
  const TextualInversionFile f = read_embedding_file(path);
  EXPECT_EQ(f.name, "trio");
  ASSERT_EQ(f.vectors.at("").shape(), (Shape{3, 4}));
  const std::vector<float> v = f.vectors.at("").to_f32_vector();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(v[i * 4 + j], storage[j * 3 + i]) << i << "," << j;
  EXPECT_EQ(f.sha256, sha256_file(path));
}

TEST(EmbeddingFile, ReadsDiffusersLearnedEmbeds) {
  // learned_embeds.bin: {"<cat-toy>": [D]} (one vector, 1-D).
  const std::string dir = temp_dir();
  Pickle p;
  p.op('}');
  p.str("<cat-toy>");
  p.tensor("0", 8, 2, {6}, {1});  // a view at offset 2
  p.op('s');
  p.op('.');
  const std::vector<float> storage = iota(8, -1.0f);
  write_torch_zip(dir + "/learned_embeds.bin", p.b, storage);
  const TextualInversionFile bin = read_embedding_file(dir + "/learned_embeds.bin");
  EXPECT_EQ(bin.name, "learned_embeds");
  ASSERT_EQ(bin.vectors.at("").shape(), (Shape{1, 6}));
  EXPECT_EQ(bin.vectors.at("").to_f32_vector(), std::vector<float>(storage.begin() + 2, storage.end()));

  // learned_embeds.safetensors: {"<cat-toy>": [2, D]}.
  save_safetensors(dir + "/concept.safetensors", {{"<cat-toy>", Tensor::from_vector(iota(12, 0.5f), {2, 6})}});
  const TextualInversionFile st = read_embedding_file(dir + "/concept.safetensors");
  EXPECT_EQ(st.vectors.at("").shape(), (Shape{2, 6}));
  EXPECT_EQ(st.vectors.at("").to_f32_vector(), iota(12, 0.5f));
}

TEST(EmbeddingFile, CorruptFilesAreIoErrorsNamingTheFile) {
  const std::string dir = temp_dir();
  const std::string good_st = read_file(goldens_dir() + "/sd1/ti/ti_fixture_concept.safetensors");
  const std::string good_pt = read_file(goldens_dir() + "/sd1/ti/ti_fixture_concept.pt");
  ASSERT_FALSE(good_st.empty());
  ASSERT_FALSE(good_pt.empty());
  const std::vector<std::pair<std::string, std::string>> files = {
      {"truncated.safetensors", good_st.substr(0, good_st.size() - 10)},
      {"header_only.safetensors", good_st.substr(0, 40)},
      {"garbage.safetensors", std::string(100, 'x')},
      {"truncated.pt", good_pt.substr(0, good_pt.size() / 2)},
      {"garbage.pt", std::string("PK\x03\x04", 4) + std::string(200, '\0')},
      {"not_zip.pt", std::string(64, 'y')},
      {"empty.pt", ""},
  };
  for (const auto& [name, bytes] : files) {
    SCOPED_TRACE(name);
    const std::string path = dir + "/" + name;  // clang 14 cannot capture a structured binding
    write_bytes(path, bytes);
    expect_error([&] { read_embedding_file(path); }, ErrorCode::kIo, {path});
  }
  // Tensors of the wrong kind.
  save_safetensors(dir + "/two.safetensors", {{"a", Tensor::zeros({1, 4}, DType::kF32)},
                                              {"b", Tensor::zeros({1, 4}, DType::kF32)}});
  expect_error([&] { read_embedding_file(dir + "/two.safetensors"); }, ErrorCode::kIo, {"2 tensors", "'a'", "'b'"});
  save_safetensors(dir + "/cube.safetensors", {{"emb_params", Tensor::zeros({1, 2, 4}, DType::kF32)}});
  expect_error([&] { read_embedding_file(dir + "/cube.safetensors"); }, ErrorCode::kIo, {"(1,2,4)"});
  save_safetensors(dir + "/nan.safetensors",
                   {{"emb_params", Tensor::from_vector({1.0f, std::nanf(""), 0.0f, 1.0f}, {1, 4})}});
  expect_error([&] { read_embedding_file(dir + "/nan.safetensors"); }, ErrorCode::kIo, {"non-finite"});
  expect_error([&] { read_embedding_file(dir + "/missing.pt"); }, ErrorCode::kIo, {dir + "/missing.pt"});
}

// ---- checks against a model --------------------------------------------------------

TEST(EmbeddingFile, ChecksWidthsAndSdxlKeys) {
  const std::string dir = goldens_dir();
  const TextualInversionFile sd1 = read_embedding_file(dir + "/sd1/ti/ti_fixture_concept.safetensors");
  const TextualInversionFile sdxl = read_embedding_file(dir + "/sdxl/ti/ti_fixture_concept_sdxl.safetensors");
  const std::vector<EmbeddingTarget> one = {{"text_encoder", "", 16}};
  const std::vector<EmbeddingTarget> wide = {{"text_encoder", "", 1024}};
  const std::vector<EmbeddingTarget> xl = {{"text_encoder", "clip_l", 16}, {"text_encoder_2", "clip_g", 32}};
  EXPECT_EQ(check_embedding(sd1, one), 2);
  EXPECT_EQ(check_embedding(sdxl, xl), 2);
  expect_error([&] { check_embedding(sd1, wide); }, ErrorCode::kInvalidArgument,
               {sd1.path, "16 wide", "text_encoder takes 1024"});
  expect_error([&] { check_embedding(sd1, xl); }, ErrorCode::kInvalidArgument, {sd1.path, "clip_l and clip_g"});
  expect_error([&] { check_embedding(sdxl, one); }, ErrorCode::kInvalidArgument, {sdxl.path, "SDXL embedding"});
  const std::vector<EmbeddingTarget> xl_wide = {{"text_encoder", "clip_l", 768}, {"text_encoder_2", "clip_g", 1280}};
  expect_error([&] { check_embedding(sdxl, xl_wide); }, ErrorCode::kInvalidArgument,
               {"clip_l vectors are 16 wide", "text_encoder takes 768"});

  // Only one of clip_l / clip_g: says which is missing.
  const std::string tmp = temp_dir();
  save_safetensors(tmp + "/half.safetensors", {{"clip_l", Tensor::zeros({2, 16}, DType::kF32)}});
  const TextualInversionFile half = read_embedding_file(tmp + "/half.safetensors");
  expect_error([&] { check_embedding(half, xl); }, ErrorCode::kInvalidArgument,
               {tmp + "/half.safetensors", "has no clip_g"});
  save_safetensors(tmp + "/uneven.safetensors", {{"clip_l", Tensor::zeros({2, 16}, DType::kF32)},
                                                 {"clip_g", Tensor::zeros({3, 32}, DType::kF32)}});
  expect_error([&] { check_embedding(read_embedding_file(tmp + "/uneven.safetensors"), xl); },
               ErrorCode::kInvalidArgument, {"clip_l has 2 vectors but clip_g has 3"});
}

// ---- cache and folders ---------------------------------------------------------------

TEST(EmbeddingCache, ReadsAFileOnceUntilItChanges) {
  const std::string dir = temp_dir();
  const std::string path = dir + "/style.safetensors";
  save_safetensors(path, {{"emb_params", Tensor::from_vector(iota(8, 0), {2, 4})}});
  EmbeddingCache cache;
  auto a = cache.get(path);
  auto b = cache.get(path);
  EXPECT_EQ(cache.files_read(), 1u);
  EXPECT_EQ(a.get(), b.get());
  // A new file of the same name (new contents, later mtime) is read again.
  save_safetensors(path, {{"emb_params", Tensor::from_vector(iota(12, 1), {3, 4})}});
  fs::last_write_time(path, fs::last_write_time(path) + std::chrono::seconds(2));
  auto c = cache.get(path);
  EXPECT_EQ(cache.files_read(), 2u);
  EXPECT_EQ(c->vectors.at("").dim(0), 3);
  EXPECT_NE(c->sha256, a->sha256);
  // A failed read caches nothing and names the file.
  write_bytes(dir + "/bad.pt", "junk");
  expect_error([&] { cache.get(dir + "/bad.pt"); }, ErrorCode::kIo, {dir + "/bad.pt"});
  EXPECT_EQ(cache.files_read(), 2u);
}

TEST(EmbeddingList, FindsFilesByStemAsA1111) {
  const std::string dir = temp_dir();
  fs::create_directories(dir + "/emb/sub");
  write_bytes(dir + "/emb/EasyNegative.safetensors", "x");
  write_bytes(dir + "/emb/sub/style.PT", "x");      // any case, in subfolders
  write_bytes(dir + "/emb/concept.bin", "x");
  write_bytes(dir + "/emb/empty.pt", "");           // empty: skipped
  write_bytes(dir + "/emb/notes.txt", "x");         // other extensions: skipped
  write_bytes(dir + "/emb/preview.png", "x");
  write_bytes(dir + "/mine.safetensors", "x");
  write_bytes(dir + "/emb/mine.pt", "x");           // the explicit file of that name wins
  const std::vector<EmbeddingEntry> e =
      list_embeddings({dir + "/emb", dir + "/does-not-exist"}, {dir + "/mine.safetensors"});
  std::map<std::string, std::string> by_name;
  for (const auto& x : e) by_name[x.name] = x.path;
  EXPECT_EQ(e.size(), 4u);
  EXPECT_EQ(e.front().name, "mine");
  EXPECT_EQ(by_name["mine"], dir + "/mine.safetensors");
  EXPECT_EQ(by_name["EasyNegative"], dir + "/emb/EasyNegative.safetensors");
  EXPECT_EQ(by_name["style"], dir + "/emb/sub/style.PT");
  EXPECT_EQ(by_name["concept"], dir + "/emb/concept.bin");
  EXPECT_FALSE(by_name.count("empty"));
  EXPECT_FALSE(by_name.count("notes"));
  expect_error([&] { list_embeddings({}, {dir + "/nope.pt"}); }, ErrorCode::kIo, {dir + "/nope.pt", "does not exist"});
}

TEST(EmbeddingSet, LoadsOnUseAndReportsHashes) {
  const std::string dir = temp_dir();
  save_safetensors(dir + "/a,b:c.safetensors", {{"emb_params", Tensor::from_vector(iota(8, 0), {2, 4})}});
  save_safetensors(dir + "/other.safetensors", {{"emb_params", Tensor::from_vector(iota(4, 0), {1, 4})}});
  write_bytes(dir + "/broken.pt", "not an embedding");
  auto cache = std::make_shared<EmbeddingCache>();
  EmbeddingSet set(list_embeddings({dir}, {}), {{"text_encoder", "", 4}}, cache);
  ASSERT_EQ(set.entries().size(), 3u);
  EXPECT_EQ(cache->files_read(), 0u);  // nothing is read until a prompt uses it
  EXPECT_TRUE(set.hashes_infotext().empty());
  size_t ab = 0, other = 0, broken = 0;
  for (size_t i = 0; i < set.entries().size(); ++i) {
    if (set.entries()[i].name == "a,b:c") ab = i;
    if (set.entries()[i].name == "other") other = i;
    if (set.entries()[i].name == "broken") broken = i;
  }
  EXPECT_EQ(set.use(other), 1);
  EXPECT_EQ(set.use(ab), 2);
  EXPECT_EQ(set.use(other), 1);
  EXPECT_EQ(cache->files_read(), 2u);
  EXPECT_EQ(set.vectors(ab, 0).shape(), (Shape{2, 4}));
  // A1111: used order, ':' and ',' dropped from names, sha256[:12].
  EXPECT_EQ(set.hashes_infotext(), "other: " + sha256_file(dir + "/other.safetensors").substr(0, 12) +
                                       ", abc: " + sha256_file(dir + "/a,b:c.safetensors").substr(0, 12));
  expect_error([&] { set.use(broken); }, ErrorCode::kIo, {dir + "/broken.pt"});
  EXPECT_EQ(set.used().size(), 2u);
}

// ---- trigger words in prompts ------------------------------------------------------------

class Triggers : public ::testing::Test {
 protected:
  void SetUp() override {
    DIFFUSE_REQUIRE_FIXTURES();
    tok_ = std::make_unique<ClipTokenizer>(ClipTokenizer::load(fixtures_dir() + "/sd1/model/tokenizer"));
  }
  // Embeddings by name, with their vector counts.
  EmbeddingTriggers triggers(const std::vector<std::pair<std::string, int>>& embeddings) {
    std::vector<std::vector<int>> ids;
    for (const auto& [name, n] : embeddings) ids.push_back(tok_->tokenize(name));
    counts_.clear();
    for (const auto& [name, n] : embeddings) counts_.push_back(n);
    asked_.clear();
    return EmbeddingTriggers(std::move(ids), [this](size_t i) {
      asked_.push_back(i);
      return counts_[i];
    });
  }
  std::vector<int64_t> plain(const std::string& words) {
    std::vector<int64_t> out;
    for (int id : tok_->tokenize(words)) out.push_back(id);
    return out;
  }
  // n single-token words ("a a a ...").
  static std::string filler(int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += i ? " a" : "a";
    return s;
  }
  std::unique_ptr<ClipTokenizer> tok_;
  std::vector<int> counts_;
  std::vector<size_t> asked_;
};

TEST_F(Triggers, MultiVectorEmbeddingTakesNPositions) {
  const EmbeddingTriggers t = triggers({{"trio", 3}, {"other", 1}});
  const PromptChunks c = encode_weighted(*tok_, "a photo of trio on a table", kDefaultCommaPaddingBacktrack, &t);
  ASSERT_EQ(c.ids.size(), 1u);
  const std::vector<int64_t> head = plain("a photo of");
  const std::vector<int64_t> tail = plain("on a table");
  std::vector<int64_t> want = {tok_->bos_id()};
  want.insert(want.end(), head.begin(), head.end());
  want.insert(want.end(), {0, 0, 0});
  want.insert(want.end(), tail.begin(), tail.end());
  want.push_back(tok_->eos_id());
  want.resize(77, tok_->pad_id());
  EXPECT_EQ(c.ids[0], want);
  ASSERT_EQ(c.fixes.size(), 1u);
  EXPECT_EQ(c.fixes[0], (std::vector<EmbeddingFix>{{4, 0, 3}}));
  EXPECT_EQ(asked_, (std::vector<size_t>{0}));  // only the embedding found is asked for (loaded)
  EXPECT_EQ(c.token_count, 9);
  // Without triggers the same prompt is plain text.
  EXPECT_EQ(encode_weighted(*tok_, "a photo of trio").fixes, (std::vector<std::vector<EmbeddingFix>>{{}}));
}

TEST_F(Triggers, MatchesWholeTokensOnlyAndAnyCase) {
  const EmbeddingTriggers t = triggers({{"EasyNegative", 2}});
  EXPECT_EQ(encode_weighted(*tok_, "easynegative, blurry", 20, &t).fixes[0].size(), 1u);
  EXPECT_EQ(encode_weighted(*tok_, "EASYNEGATIVE", 20, &t).fixes[0].size(), 1u);
  EXPECT_EQ(encode_weighted(*tok_, "(easynegative)", 20, &t).fixes[0].size(), 1u);
  EXPECT_TRUE(encode_weighted(*tok_, "easynegatives", 20, &t).fixes[0].empty());
  EXPECT_TRUE(encode_weighted(*tok_, "easy negative", 20, &t).fixes[0].empty());
  // Twice in one prompt: two fixes.
  const PromptChunks twice = encode_weighted(*tok_, "easynegative and easynegative", 20, &t);
  EXPECT_EQ(twice.fixes[0], (std::vector<EmbeddingFix>{{1, 0, 2}, {4, 0, 2}}));
}

TEST_F(Triggers, LongestNameWins) {
  // Stems "style" and "style two" (a file "style two.pt"): the longer match first.
  const EmbeddingTriggers t = triggers({{"style", 1}, {"style two", 2}});
  EXPECT_EQ(encode_weighted(*tok_, "style two", 20, &t).fixes[0], (std::vector<EmbeddingFix>{{1, 1, 2}}));
  EXPECT_EQ(encode_weighted(*tok_, "style one", 20, &t).fixes[0], (std::vector<EmbeddingFix>{{1, 0, 1}}));
}

TEST_F(Triggers, TakeTheWeightOfTheirParentheses) {
  const EmbeddingTriggers t = triggers({{"trio", 3}});
  const PromptChunks c = encode_weighted(*tok_, "a (trio:1.2) [x]", 20, &t);
  ASSERT_EQ(c.fixes[0], (std::vector<EmbeddingFix>{{2, 0, 3}}));
  const std::vector<float>& w = c.weights[0];
  EXPECT_FLOAT_EQ(w[1], 1.0f);
  for (int i = 2; i < 5; ++i) EXPECT_FLOAT_EQ(w[i], 1.2f) << i;
  EXPECT_FLOAT_EQ(w[5], static_cast<float>(1 / 1.1));
}

TEST_F(Triggers, StraddlingEmbeddingStartsTheNextChunk) {
  const EmbeddingTriggers t = triggers({{"trio", 3}});
  // 73 + 3 > 75: the embedding moves to chunk 2, chunk 1 ends after 73 tokens.
  const PromptChunks moved = encode_weighted(*tok_, filler(73) + " trio b", 20, &t);
  ASSERT_EQ(moved.ids.size(), 2u);
  EXPECT_TRUE(moved.fixes[0].empty());
  EXPECT_EQ(moved.fixes[1], (std::vector<EmbeddingFix>{{1, 0, 3}}));
  EXPECT_EQ(moved.ids[0][74], tok_->eos_id());  // bos + 73 tokens, then the end
  EXPECT_EQ(moved.ids[1][4], plain("b")[0]);
  EXPECT_EQ(moved.token_count, 75 + 4);
  // 72 + 3 = 75 fits exactly: it ends chunk 1.
  const PromptChunks fits = encode_weighted(*tok_, filler(72) + " trio b", 20, &t);
  ASSERT_EQ(fits.ids.size(), 2u);
  EXPECT_EQ(fits.fixes[0], (std::vector<EmbeddingFix>{{73, 0, 3}}));
  EXPECT_TRUE(fits.fixes[1].empty());
  EXPECT_EQ(fits.ids[1][1], plain("b")[0]);
  // An embedding longer than a chunk fits nowhere.
  const EmbeddingTriggers huge = triggers({{"huge", 76}});
  expect_error([&] { encode_weighted(*tok_, "a huge", 20, &huge); }, ErrorCode::kInvalidArgument, {"76 vectors"});
}

TEST_F(Triggers, CommaBacktrackMovesTheEmbeddingWithItsWords) {
  const EmbeddingTriggers t = triggers({{"trio", 3}});
  // 60 tokens, a comma, then "b trio c ..." past 75: the words after the comma
  // (with the embedding among them) start chunk 2, and the fix moves along.
  const PromptChunks c = encode_weighted(*tok_, filler(60) + ", b trio " + filler(20), 20, &t);
  ASSERT_EQ(c.ids.size(), 2u);
  EXPECT_TRUE(c.fixes[0].empty());
  ASSERT_EQ(c.fixes[1].size(), 1u);
  EXPECT_EQ(c.fixes[1][0].position, 2);  // bos, b, then the vectors
  EXPECT_EQ(c.ids[1][1], plain("b")[0]);
  EXPECT_EQ(c.ids[0][62], tok_->eos_id());  // bos + 60 + comma, then the end
}

}  // namespace
}  // namespace diffuse
