// JSON as Python writes it: json.dump emits NaN, Infinity and -Infinity, which
// are not JSON. diffusers does this in configs it saves (e.g. DPMSolver's
// lambda_min_clipped: -Infinity). These become the strings "NaN", "Infinity",
// "-Infinity" (what SchedulerConfig::from_json accepts).
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace diffuse {

// Throws Error(kIo) naming `where` when the text is not JSON even so.
nlohmann::json parse_python_json(const std::string& text, const std::string& where);
nlohmann::json read_python_json_file(const std::string& path);

}  // namespace diffuse
