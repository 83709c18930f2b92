// ControlNet folders (controlnet_library.h).
#include "pipeline/controlnet_library.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/sha256.h"
#include "models/probe.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

bool weights_extension(const fs::path& p) {
  const std::string e = p.extension().string();
  return e == ".safetensors" || e == ".pth" || e == ".ckpt" || e == ".bin" || e == ".pt";
}

bool controlnet_folder(const fs::path& dir) {
  const fs::path cfg = dir / "config.json";
  if (!fs::is_regular_file(cfg)) return false;
  try {
    std::ifstream in(cfg);
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false, true);
    return j.is_object() && j.value("_class_name", std::string()) == "ControlNetModel";
  } catch (...) {
    return false;
  }
}

}  // namespace

std::string controlnet_short_hash(const std::string& path) {
  std::string file = path;
  if (fs::is_directory(path)) file = find_component_weights(path);
  std::ifstream in(file, std::ios::binary);
  if (!in) return "";
  in.seekg(0x100000);
  std::vector<char> buf(0x10000);
  size_t got = 0;
  if (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    got = static_cast<size_t>(in.gcount());
  }
  return sha256_hex(buf.data(), got).substr(0, 8);
}

std::vector<ControlNetEntry> list_controlnets(const std::vector<std::string>& dirs) {
  std::vector<ControlNetEntry> out;
  for (const auto& d : dirs) {
    std::error_code ec;
    if (!fs::is_directory(d, ec)) continue;
    for (const auto& e : fs::directory_iterator(d, ec)) {
      const fs::path p = e.path();
      ControlNetEntry entry;
      if (e.is_regular_file() && weights_extension(p)) {
        entry.name = p.stem().string();
      } else if (e.is_directory() && controlnet_folder(p)) {
        entry.name = p.filename().string();
      } else {
        continue;
      }
      entry.path = p.string();
      try {
        entry.hash = controlnet_short_hash(entry.path);
      } catch (const Error&) {
        entry.hash.clear();
      }
      out.push_back(std::move(entry));
    }
  }
  std::sort(out.begin(), out.end(), [](const ControlNetEntry& a, const ControlNetEntry& b) { return a.name < b.name; });
  return out;
}

std::string resolve_controlnet(const std::string& name_or_path, const std::vector<std::string>& dirs) {
  DIFFUSE_CHECK_ARG(!name_or_path.empty() && name_or_path != "None" && name_or_path != "none",
                    "a ControlNet unit needs a model");
  if (fs::exists(name_or_path)) return name_or_path;
  // "name [hash]" as /controlnet/model_list gives it.
  std::string name = name_or_path;
  const size_t br = name.rfind(" [");
  if (br != std::string::npos && name.back() == ']') name = name.substr(0, br);
  const std::vector<ControlNetEntry> all = list_controlnets(dirs);
  for (const auto& e : all) {
    if (e.name == name || fs::path(e.path).filename().string() == name) return e.path;
  }
  std::string have;
  for (const auto& e : all) have += (have.empty() ? "" : ", ") + e.name;
  std::string where;
  for (const auto& d : dirs) where += (where.empty() ? "" : ", ") + d;
  throw_error(ErrorCode::kNotFound, "ControlNet '" + name_or_path + "' not found (looked in " +
                                        (where.empty() ? std::string("no folder") : where) + "; they hold " +
                                        (have.empty() ? std::string("none") : have) + ")");
}

}  // namespace diffuse
