// LoRA and textual-inversion embeddings over HTTP (adapters/library.h):
//   GET  /sdapi/v1/loras               A1111 (extensions-builtin/Lora/scripts/lora_script.py):
//                                      [{name, alias, path, metadata}]
//   POST /sdapi/v1/refresh-loras       rescans the LoRA folders -> null
//   GET  /sdapi/v1/embeddings          A1111 (modules/api/api.py get_embeddings):
//                                      {loaded: {name: {step, sd_checkpoint, sd_checkpoint_name, shape,
//                                      vectors}}, skipped: {}}; ours: errors {name: why unreadable}
//   POST /sdapi/v1/refresh-embeddings  reads the embedding folders again -> null
//   GET  /api/loras[?hashes=1]         the page's list: [{name, alias, path, relative, family, hash,
//                                      size_bytes, trained_words, prompt, error}]; hashes=1 computes
//                                      the hashes not known yet (reads each such file once)
//   GET  /api/embeddings               [{name, path, vectors, shape, hash, error}]
//   POST /api/adapters/refresh         rescans both folders -> {"ok": true} (the page's Refresh)
// Every generation route calls apply_prompt_adapters: <lora:name:w> in the
// prompt becomes GenerationParams::loras (an unknown name: 400), and the
// embedding folders go to GenerationParams::embedding_dirs.
#include "server/server_state.h"
#include "text/lora_tags.h"

namespace diffuse::server {
namespace {

constexpr size_t kTrainedWords = 8;

nlohmann::json null_if_empty(const std::string& s) { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); }

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

}  // namespace

void apply_prompt_adapters(Server::State& s, GenerationParams& p, std::string* written_prompt,
                           std::vector<std::string>* warnings) {
  const std::string written = p.prompt;
  const PromptNetworks n = extract_extra_networks(written);  // a bad weight throws, naming the tag
  for (const LoraTag& t : n.loras) {
    p.loras.push_back({s.adapters->resolve_lora(t.name), t.unet_weight, t.te_weight});
    if (!t.ignored.empty()) warnings->push_back(t.text + ": " + join(t.ignored, ", ") + " not applied");
  }
  for (const std::string& tag : n.skipped) {
    warnings->push_back(tag + " not applied: only <lora:...> and <lyco:...> tags are supported");
  }
  if (n.prompt != written) {
    p.prompt = n.prompt;
    *written_prompt = written;
  }
  if (p.negative_prompt) {
    for (const ExtraNetworkTag& t : find_extra_network_tags(*p.negative_prompt)) {
      if (t.network == "lora" || t.network == "lyco") {
        warnings->push_back("the negative prompt's " + t.text +
                            " is not applied (LoRA tags work in the prompt only, as in A1111)");
      }
    }
  }
  p.embedding_dirs = s.adapters->embedding_dirs();
  p.vae = resolve_request_vae(s, p.vae);  // the sd_vae the route put there, or the server's (api_vae.cpp)
}

void register_adapter_routes(Server::State& s) {
  httplib::Server& http = s.http;

  http.Get("/sdapi/v1/loras", [&s](const httplib::Request&, httplib::Response& res) {
    nlohmann::json out = nlohmann::json::array();
    for (const LoraEntry& e : s.adapters->loras()) {
      out.push_back({{"name", e.name}, {"alias", e.alias}, {"path", e.path}, {"metadata", e.metadata}});
    }
    res.set_content(out.dump(), "application/json");
  });

  // A1111 clients POST these with no body (see /sdapi/v1/interrupt in api_a1111.cpp).
  auto no_body = [](const httplib::Request& req, const httplib::ContentReader& read) {
    if (req.has_header("Content-Length") || req.has_header("Transfer-Encoding")) {
      read([](const char*, size_t) { return true; });
    }
  };
  http.Post("/sdapi/v1/refresh-loras",
            [&s, no_body](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
              no_body(req, read);
              s.adapters->refresh_loras();
              res.set_content("null", "application/json");
            });
  http.Post("/sdapi/v1/refresh-embeddings",
            [&s, no_body](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
              no_body(req, read);
              s.adapters->refresh_embeddings();
              res.set_content("null", "application/json");
            });

  http.Post("/api/adapters/refresh", [&s](const httplib::Request&, httplib::Response& res) {
    s.adapters->refresh_loras();
    s.adapters->refresh_embeddings();
    res.set_content(R"({"ok":true})", "application/json");
  });

  http.Get("/sdapi/v1/embeddings", [&s](const httplib::Request&, httplib::Response& res) {
    nlohmann::json loaded = nlohmann::json::object(), errors = nlohmann::json::object();
    for (const EmbeddingInfo& e : s.adapters->embeddings()) {
      if (!e.error.empty()) {
        errors[e.name] = e.error;
        continue;
      }
      // step and the checkpoint fields come from A1111's own training files; not read here.
      loaded[e.name] = {{"step", nullptr},
                        {"sd_checkpoint", nullptr},
                        {"sd_checkpoint_name", nullptr},
                        {"shape", e.shape},
                        {"vectors", e.vectors}};
    }
    nlohmann::json out = {{"loaded", loaded}, {"skipped", nlohmann::json::object()}};
    if (!errors.empty()) out["errors"] = errors;
    res.set_content(out.dump(), "application/json");
  });

  http.Get("/api/loras", [&s](const httplib::Request& req, httplib::Response& res) {
    const bool hashes = req.get_param_value("hashes") == "1" || req.get_param_value("hashes") == "true";
    nlohmann::json out = nlohmann::json::array();
    for (const LoraEntry& e : s.adapters->loras()) {
      std::string hash = e.hash;
      std::string error = e.error;
      if (hashes && hash.empty() && error.empty()) {
        try {
          hash = s.adapters->lora_hash(e.path);
        } catch (const Error& err) {
          error = err.what();
        }
      }
      out.push_back({{"name", e.name},
                     {"alias", e.alias},
                     {"path", e.path},
                     {"relative", e.relative},
                     {"family", null_if_empty(e.family)},
                     {"hash", null_if_empty(hash)},
                     {"size_bytes", e.size},
                     {"trained_words", lora_trained_words(e.metadata, kTrainedWords)},
                     {"prompt", "<lora:" + e.name + ":1>"},
                     {"error", null_if_empty(error)}});
    }
    res.set_content(out.dump(), "application/json");
  });

  http.Get("/api/embeddings", [&s](const httplib::Request&, httplib::Response& res) {
    nlohmann::json out = nlohmann::json::array();
    for (const EmbeddingInfo& e : s.adapters->embeddings()) {
      out.push_back({{"name", e.name},
                     {"path", e.path},
                     {"vectors", e.vectors},
                     {"shape", e.shape},
                     {"hash", null_if_empty(e.hash)},
                     {"error", null_if_empty(e.error)}});
    }
    res.set_content(out.dump(), "application/json");
  });
}

}  // namespace diffuse::server
