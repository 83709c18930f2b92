#include "io/json_util.h"

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace diffuse {

nlohmann::json parse_python_json(const std::string& text, const std::string& where) {
  // Rewrite bare NaN/Infinity tokens outside strings into strings.
  std::string out;
  out.reserve(text.size() + 16);
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) {
        out += text[++i];
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      continue;
    }
    bool matched = false;
    for (const char* tok : {"-Infinity", "Infinity", "NaN"}) {
      size_t n = std::char_traits<char>::length(tok);
      if (text.compare(i, n, tok) == 0) {
        out += '"';
        out += tok;
        out += '"';
        i += n - 1;
        matched = true;
        break;
      }
    }
    if (!matched) out += c;
  }
  try {
    return nlohmann::json::parse(out);
  } catch (const nlohmann::json::exception& e) {
    throw_error(ErrorCode::kIo, where + ": invalid JSON: " + e.what());
  }
}

nlohmann::json read_python_json_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw_error(ErrorCode::kIo, "cannot open " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_python_json(ss.str(), path);
}

}  // namespace diffuse
