// LoRA and textual-inversion embeddings through the HTTP APIs (issue 20), on
// the tiny sd1 fixture model with a LoRA folder and an embeddings folder the
// test writes: A1111's /sdapi/v1/loras, /refresh-loras, /embeddings and
// /refresh-embeddings, the native /api/loras and /api/embeddings, <lora:...>
// tags in txt2img / img2img / the native jobs / OpenAI prompts (the image
// changes, its parameters carry "Lora hashes" and keep the tag, /png-info
// reads them back), and unknown LoRAs or bad tags answered 400 while the
// server keeps serving.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "io/png.h"
#include "server/base64.h"
#include "server_harness.h"
#include "server_test_util.h"

namespace diffuse::testing {
namespace {

using testing::noise;

namespace fs = std::filesystem;

constexpr int kSide = 64;

// A kohya LoRA (rank 4) for every attention projection of the model's UNet
// and the first text-encoder layer's q/k/v, written with `metadata`.
void write_kohya_lora(const std::string& model_dir, const std::string& path,
                      const std::map<std::string, std::string>& metadata, uint32_t seed = 1) {
  TensorMap out;
  constexpr int64_t kRank = 4;
  uint32_t s = seed;
  auto add = [&](const std::string& prefix, const std::string& weight, const Shape& shape) {
    const std::string key = prefix + [&] {
      std::string m = weight.substr(0, weight.size() - 7);  // without ".weight"
      for (char& c : m) c = c == '.' ? '_' : c;
      return m;
    }();
    out[key + ".lora_down.weight"] = Tensor::from_vector(noise(kRank * shape[1], ++s, 0.3f), {kRank, shape[1]});
    out[key + ".lora_up.weight"] = Tensor::from_vector(noise(shape[0] * kRank, ++s, 0.3f), {shape[0], kRank});
    out[key + ".alpha"] = Tensor::from_vector({4.0f}, {});
  };
  for (const auto& [name, t] : load_safetensors(model_dir + "/unet/diffusion_pytorch_model.safetensors").tensors) {
    const bool proj = name.find(".attn1.to_") != std::string::npos || name.find(".attn2.to_") != std::string::npos;
    if (proj && t.ndim() == 2 && name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0) {
      add("lora_unet_", name, t.shape());
    }
  }
  for (const auto& [name, t] : load_safetensors(model_dir + "/text_encoder/model.safetensors").tensors) {
    if (name.rfind("text_model.encoder.layers.0.self_attn.", 0) == 0 && t.ndim() == 2) add("lora_te_", name, t.shape());
  }
  save_safetensors(path, out, metadata);
}

// An A1111 embedding ({"emb_params": [N, D]}) made of the model's own token rows.
void write_embedding(const std::string& model_dir, const std::string& path, int vectors) {
  const Tensor table = load_safetensors(model_dir + "/text_encoder/model.safetensors")
                           .tensors.at("text_model.embeddings.token_embedding.weight")
                           .to(DType::kF32);
  const int64_t d = table.dim(1);
  std::vector<float> rows = table.slice(0, 1000, 1000 + vectors).contiguous().to_f32_vector();
  save_safetensors(path, {{"emb_params", Tensor::from_vector(rows, {vectors, d})}});
}

PngImage decode_b64_png(const std::string& b64) {
  std::vector<uint8_t> b = server::base64_decode(b64);
  return read_png(b.data(), b.size());
}

class AdapterApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DIFFUSE_REQUIRE_FIXTURES();
    model_ = fixtures_dir() + "/sd1/model";
    lora_dir_ = temp_dir();
    emb_dir_ = temp_dir();
    fs::create_directories(lora_dir_ + "/styles");
    write_kohya_lora(model_, lora_dir_ + "/styles/inkstyle.safetensors",
                     {{"ss_output_name", "ink_alias"},
                      {"ss_base_model_version", "sd_v1"},
                      {"ss_network_dim", "4"},
                      {"ss_tag_frequency", R"({"10_ink": {"ink": 5, "wash": 3, "brush": 1}})"}});
    write_embedding(model_, emb_dir_ + "/tinyconcept.safetensors", 2);
    server::ServerOptions o;
    o.model_files = {model_};
    o.data_dir = temp_dir();
    o.lora_dirs = {lora_dir_};
    o.embedding_dirs = {emb_dir_};
    server_ = std::make_unique<RunningServer>(o);
    c_ = server_->client(300);
  }
  Json txt2img(const std::string& prompt, int expect_status = 200, const std::string& negative = "") {
    Json body = {{"prompt", prompt}, {"negative_prompt", negative}, {"steps", 2}, {"seed", 4321},
                 {"sampler_name", "Euler"}, {"width", kSide}, {"height", kSide}, {"cfg_scale", 7}};
    auto r = post_json(*c_, "/sdapi/v1/txt2img", body);
    EXPECT_TRUE(r);
    if (!r) return Json();
    EXPECT_EQ(r->status, expect_status) << r->body.substr(0, 500);
    return parse_json(r);
  }
  void expect_alive() {
    auto r = c_->Get("/sdapi/v1/options");
    ASSERT_TRUE(r) << "the server stopped answering";
    EXPECT_EQ(r->status, 200);
  }
  std::string model_, lora_dir_, emb_dir_;
  std::unique_ptr<RunningServer> server_;
  std::unique_ptr<httplib::Client> c_;
};

TEST_F(AdapterApiTest, ListsLorasInA1111Shape) {
  auto r = c_->Get("/sdapi/v1/loras");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  Json list = parse_json(r);
  ASSERT_TRUE(list.is_array());
  ASSERT_EQ(list.size(), 1u) << list.dump();
  const Json& e = list[0];
  EXPECT_EQ(e["name"], "inkstyle");
  EXPECT_EQ(e["alias"], "ink_alias");
  EXPECT_EQ(e["path"], fs::absolute(lora_dir_ + "/styles/inkstyle.safetensors").lexically_normal().string());
  EXPECT_EQ(e["metadata"]["ss_network_dim"], "4");
  // A1111 decodes metadata strings that hold JSON objects.
  EXPECT_EQ(e["metadata"]["ss_tag_frequency"]["10_ink"]["ink"], 5);
  EXPECT_EQ(e.size(), 4u) << "A1111's keys only: name, alias, path, metadata";

  Json native = parse_json(c_->Get("/api/loras"));
  ASSERT_EQ(native.size(), 1u);
  EXPECT_EQ(native[0]["name"], "inkstyle");
  EXPECT_EQ(native[0]["relative"], "styles/inkstyle.safetensors");
  EXPECT_EQ(native[0]["family"], "sd1");
  EXPECT_EQ(native[0]["prompt"], "<lora:inkstyle:1>");
  EXPECT_EQ(native[0]["trained_words"], Json::array({"ink", "wash", "brush"}));
  EXPECT_TRUE(native[0]["hash"].is_null()) << "listing never reads a whole file";
  native = parse_json(c_->Get("/api/loras?hashes=1"));
  ASSERT_TRUE(native[0]["hash"].is_string());
  EXPECT_EQ(native[0]["hash"].get<std::string>().size(), 12u);
}

TEST_F(AdapterApiTest, ListsEmbeddingsInA1111Shape) {
  Json out = parse_json(c_->Get("/sdapi/v1/embeddings"));
  ASSERT_TRUE(out["loaded"].is_object()) << out.dump();
  ASSERT_TRUE(out["loaded"].contains("tinyconcept")) << out.dump();
  const Json& e = out["loaded"]["tinyconcept"];
  EXPECT_EQ(e["vectors"], 2);
  EXPECT_EQ(e["shape"], 16);  // the fixture encoder's width
  EXPECT_TRUE(e.contains("step") && e.contains("sd_checkpoint") && e.contains("sd_checkpoint_name"));
  EXPECT_TRUE(out["skipped"].is_object());
  // A broken file is not loaded; ours: the reason under "errors".
  std::ofstream(emb_dir_ + "/broken.pt") << "not a torch file";
  out = parse_json(c_->Get("/sdapi/v1/embeddings"));
  EXPECT_FALSE(out["loaded"].contains("broken"));
  EXPECT_TRUE(out["errors"].contains("broken")) << out.dump();
  Json native = parse_json(c_->Get("/api/embeddings"));
  ASSERT_EQ(native.size(), 2u) << native.dump();
  for (const Json& n : native) {
    if (n["name"] == "tinyconcept") {
      EXPECT_EQ(n["hash"].get<std::string>().size(), 12u);
      EXPECT_TRUE(n["error"].is_null());
    } else {
      EXPECT_EQ(n["name"], "broken");
      EXPECT_TRUE(n["error"].is_string());
    }
  }
}

TEST_F(AdapterApiTest, Txt2ImgTagChangesTheImageAndTheParametersCarryLoraHashes) {
  const Json base = txt2img("a red fox in the snow");
  const Json with = txt2img("a red fox in the snow <lora:inkstyle:0.8>");
  ASSERT_EQ(base["images"].size(), 1u);
  ASSERT_EQ(with["images"].size(), 1u);
  const PngImage a = decode_b64_png(base["images"][0]), b = decode_b64_png(with["images"][0]);
  EXPECT_NE(a.rgb, b.rgb) << "the LoRA changes the image";

  const std::string hash = parse_json(c_->Get("/api/loras?hashes=1"))[0]["hash"];
  const Json info = Json::parse(with["info"].get<std::string>());
  const std::string infotext = info["infotexts"][0];
  EXPECT_EQ(infotext.rfind("a red fox in the snow <lora:inkstyle:0.8>\n", 0), 0u)
      << "A1111 keeps the tag in the infotext's prompt: " << infotext;
  EXPECT_NE(infotext.find("Lora hashes: \"inkstyle: " + hash + "\""), std::string::npos) << infotext;
  EXPECT_EQ(info["prompt"], "a red fox in the snow <lora:inkstyle:0.8>");
  EXPECT_EQ(info["extra_generation_params"]["Lora hashes"], "inkstyle: " + hash);
  const Json base_info = Json::parse(base["info"].get<std::string>());
  EXPECT_EQ(base_info["infotexts"][0].get<std::string>().find("Lora hashes"), std::string::npos);

  // The alias and a different spelling of the same weights give the same picture.
  const Json alias = txt2img("a red fox in the snow <lora:ink_alias:0.8>");
  EXPECT_EQ(decode_b64_png(alias["images"][0]).rgb, b.rgb);
  const Json named = txt2img("a red fox in the snow <lora:inkstyle:te=0.8:unet=0.8>");
  EXPECT_EQ(decode_b64_png(named["images"][0]).rgb, b.rgb);
  // A different weight is a different picture; weight 0 is the base model's.
  EXPECT_NE(decode_b64_png(txt2img("a red fox in the snow <lora:inkstyle:0.3>")["images"][0]).rgb, b.rgb);
  EXPECT_EQ(decode_b64_png(txt2img("a red fox in the snow <lora:inkstyle:0>")["images"][0]).rgb, a.rgb);

  // PNG Info reads the hashes back.
  auto r = post_json(*c_, "/sdapi/v1/png-info", {{"image", with["images"][0]}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const Json png_info = parse_json(r);
  EXPECT_EQ(png_info["parameters"]["Lora hashes"], "inkstyle: " + hash) << png_info.dump();
  EXPECT_EQ(png_info["parameters"]["Prompt"], "a red fox in the snow <lora:inkstyle:0.8>");
}

TEST_F(AdapterApiTest, EmbeddingInThePromptAddsTiHashes) {
  const Json out = txt2img("a photo of tinyconcept");
  const Json info = Json::parse(out["info"].get<std::string>());
  const std::string infotext = info["infotexts"][0];
  const std::string hash = parse_json(c_->Get("/api/embeddings"))[0]["hash"];
  EXPECT_NE(infotext.find("TI hashes: \"tinyconcept: " + hash + "\""), std::string::npos) << infotext;
  auto r = post_json(*c_, "/sdapi/v1/png-info", {{"image", out["images"][0]}});
  ASSERT_TRUE(r);
  EXPECT_EQ(parse_json(r)["parameters"]["TI hashes"], "tinyconcept: " + hash) << r->body;
  EXPECT_NE(decode_b64_png(out["images"][0]).rgb, decode_b64_png(txt2img("a photo of")["images"][0]).rgb);
}

TEST_F(AdapterApiTest, UnknownLoraOrBadTagIs400AndTheServerStaysUp) {
  Json out = txt2img("a fox <lora:no_such_lora:0.8>", 400);
  std::string detail = out["detail"];
  EXPECT_NE(detail.find("LoRA 'no_such_lora' not found"), std::string::npos) << detail;
  EXPECT_NE(detail.find("available: inkstyle"), std::string::npos) << detail;
  expect_alive();
  out = txt2img("a fox <lora:inkstyle:strong>", 400);
  detail = out["detail"];
  EXPECT_NE(detail.find("<lora:inkstyle:strong>"), std::string::npos) << detail;
  // Paths are not names: the server opens files of its LoRA folder only.
  for (const std::string tag : {"<lora:/etc/passwd:1>", "<lora:../inkstyle:1>"}) {
    out = txt2img("a fox " + tag, 400);
    EXPECT_NE(out["detail"].get<std::string>().find("not paths"), std::string::npos) << out.dump();
  }
  // img2img, the native API and OpenAI's answer the same way.
  const std::vector<uint8_t> init(kSide * kSide * 3, 128);
  const std::vector<uint8_t> png = encode_png(kSide, kSide, init.data());
  auto r = post_json(*c_, "/sdapi/v1/img2img",
                     {{"prompt", "<lora:missing_one:1>"},
                      {"init_images", {server::base64_encode(std::string(png.begin(), png.end()))}},
                      {"steps", 2}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("missing_one"), std::string::npos) << r->body;
  r = post_json(*c_, "/api/jobs", {{"prompt", "x <lyco:missing_two:1>"}, {"steps", 2}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("missing_two"), std::string::npos) << r->body;
  r = post_json(*c_, "/v1/images/generations", {{"prompt", "x <lora:missing_three>"}, {"size", "64x64"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  const Json err = parse_json(r);
  EXPECT_NE(err["error"]["message"].get<std::string>().find("missing_three"), std::string::npos) << r->body;
  EXPECT_EQ(err["error"]["param"], "prompt");
  // Still serving, and the next generation with a good tag works.
  expect_alive();
  EXPECT_EQ(txt2img("a fox <lora:inkstyle:0.5>")["images"].size(), 1u);
}

// networks.py: an alias two files share is forbidden (stems only); ours: a unique case-insensitive match.
TEST_F(AdapterApiTest, AliasesFollowA1111) {
  write_kohya_lora(model_, lora_dir_ + "/one.safetensors", {{"ss_output_name", "shared"}}, 11);
  write_kohya_lora(model_, lora_dir_ + "/two.safetensors", {{"ss_output_name", "shared"}}, 12);
  ASSERT_EQ(c_->Post("/sdapi/v1/refresh-loras")->status, 200);
  const Json out = txt2img("a fox <lora:shared:1>", 400);
  EXPECT_NE(out["detail"].get<std::string>().find("available: inkstyle, one, two"), std::string::npos) << out.dump();
  const std::vector<uint8_t> by_stem = decode_b64_png(txt2img("a fox <lora:one:0.7>")["images"][0]).rgb;
  EXPECT_NE(by_stem, decode_b64_png(txt2img("a fox <lora:two:0.7>")["images"][0]).rgb);
  EXPECT_EQ(decode_b64_png(txt2img("a fox <lora:ONE:0.7>")["images"][0]).rgb, by_stem);
}

// A file that is there but is not a LoRA for this model fails the job with the pipeline's message.
TEST_F(AdapterApiTest, LoraOfAnotherFamilyFailsTheJobNotTheServer) {
  const std::string sdxl = fixtures_dir() + "/v2/sdxl/lora/lora_kohya.safetensors";
  ASSERT_TRUE(fs::exists(sdxl)) << sdxl;
  fs::copy_file(sdxl, lora_dir_ + "/xl_style.safetensors");
  const Json out = txt2img("a fox <lora:xl_style:1>", 422);
  EXPECT_NE(out["detail"].get<std::string>().find("xl_style"), std::string::npos) << out.dump();
  expect_alive();
  EXPECT_EQ(txt2img("a fox <lora:inkstyle:1>")["images"].size(), 1u);
}

TEST_F(AdapterApiTest, NativeJobAndOpenAiApplyTheTag) {
  auto r = post_json(*c_, "/api/jobs",
                     {{"prompt", "a red fox <lora:inkstyle:0.8>"}, {"negative_prompt", "blurry <lora:inkstyle:1>"},
                      {"steps", 2}, {"seed", 4321}, {"sampler", "euler"}, {"width", kSide}, {"height", kSide},
                      {"cfg_scale", 7}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const Json job = wait_job(*c_, parse_json(r)["id"]);
  ASSERT_EQ(job["state"], "done") << job.dump();
  EXPECT_EQ(job["prompt"], "a red fox <lora:inkstyle:0.8>") << "the queue shows the prompt as written";
  const std::string params = job["images"][0]["parameters"];
  EXPECT_EQ(params.rfind("a red fox <lora:inkstyle:0.8>\nNegative prompt: blurry <lora:inkstyle:1>\n", 0), 0u)
      << params;
  EXPECT_NE(params.find("Lora hashes: \"inkstyle: "), std::string::npos) << params;
  // A1111 applies the positive prompt's tags only: the negative one is text, and we say so.
  bool warned = false;
  for (const Json& w : job["warnings"]) warned |= w.get<std::string>().find("negative prompt") != std::string::npos;
  EXPECT_TRUE(warned) << job["warnings"].dump();
  // The stored PNG is what the job says.
  auto png = c_->Get(job["images"][0]["url"].get<std::string>().c_str());
  ASSERT_TRUE(png);
  EXPECT_NE(png->body.find("a red fox <lora:inkstyle:0.8>"), std::string::npos);
  const Json history = parse_json(c_->Get("/api/history?limit=1"));
  EXPECT_EQ(history["items"][0]["prompt"], "a red fox <lora:inkstyle:0.8>");

  r = post_json(*c_, "/v1/images/generations",
                {{"prompt", "a red fox <lora:inkstyle:0.8>"}, {"size", "64x64"}, {"response_format", "b64_json"},
                 {"steps", 2}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 300);
  const Json out = parse_json(r);
  EXPECT_EQ(out["data"][0]["revised_prompt"], "a red fox <lora:inkstyle:0.8>");
  const std::vector<uint8_t> bytes = server::base64_decode(out["data"][0]["b64_json"].get<std::string>());
  const PngText text = read_png_text(bytes.data(), bytes.size());
  bool hashes = false;
  for (const auto& [k, v] : text) hashes |= k == "parameters" && v.find("Lora hashes") != std::string::npos;
  EXPECT_TRUE(hashes);
}

TEST_F(AdapterApiTest, RefreshRoutesPickUpNewFiles) {
  EXPECT_EQ(parse_json(c_->Get("/sdapi/v1/loras")).size(), 1u);
  write_kohya_lora(model_, lora_dir_ + "/second.safetensors", {}, 7);
  // Listed once refreshed (A1111 clients POST with no body).
  EXPECT_EQ(parse_json(c_->Get("/sdapi/v1/loras")).size(), 1u);
  auto r = c_->Post("/sdapi/v1/refresh-loras");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "null");
  Json list = parse_json(c_->Get("/sdapi/v1/loras"));
  ASSERT_EQ(list.size(), 2u) << list.dump();
  EXPECT_EQ(list[0]["name"], "second") << "natural path order: the folder's own files first";
  EXPECT_EQ(list[0]["alias"], "second");
  EXPECT_TRUE(list[0]["metadata"].is_object());

  // A name that is not listed yet is found without a refresh (A1111 rescans once on a miss).
  write_kohya_lora(model_, lora_dir_ + "/third.safetensors", {}, 9);
  EXPECT_EQ(txt2img("a fox <lora:third:0.5>")["images"].size(), 1u);
  EXPECT_EQ(parse_json(c_->Get("/sdapi/v1/loras")).size(), 3u);

  write_embedding(model_, emb_dir_ + "/otherconcept.pt.safetensors", 1);
  r = c_->Post("/sdapi/v1/refresh-embeddings", "{}", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  const Json emb = parse_json(c_->Get("/sdapi/v1/embeddings"));
  EXPECT_TRUE(emb["loaded"].contains("otherconcept.pt")) << emb.dump();
  EXPECT_TRUE(emb["loaded"].contains("tinyconcept"));

  // The page's refresh: both folders.
  write_kohya_lora(model_, lora_dir_ + "/fourth.safetensors", {}, 13);
  r = c_->Post("/api/adapters/refresh");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(parse_json(c_->Get("/api/loras")).size(), 4u);
}

}  // namespace
}  // namespace diffuse::testing
