#include "pipeline/demo_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "pipeline/data_dir.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

constexpr int kBorder = 4;
constexpr double kForegroundDistance = 60.0;
constexpr double kMinForeground = 0.003;

double median(std::vector<double>& v) {
  const size_t n = v.size();
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n / 2), v.end());
  double hi = v[n / 2];
  if (n % 2) return hi;
  double lo = *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n / 2));
  return (lo + hi) / 2;  // numpy's median of an even count
}

std::array<double, 3> channel_medians(const std::vector<std::array<double, 3>>& px) {
  std::array<double, 3> out{};
  std::vector<double> ch(px.size());
  for (int c = 0; c < 3; ++c) {
    for (size_t i = 0; i < px.size(); ++i) ch[i] = px[i][c];
    out[c] = median(ch);
  }
  return out;
}

std::string nearest(const std::map<std::string, std::array<int, 3>>& palette, const std::array<double, 3>& rgb) {
  std::string best;
  double best_d = std::numeric_limits<double>::infinity();
  for (const auto& [name, ref] : palette) {
    double d = 0;
    for (int c = 0; c < 3; ++c) d += (ref[c] - rgb[c]) * (ref[c] - rgb[c]);
    if (d < best_d) {
      best_d = d;
      best = name;
    }
  }
  return best;
}

}  // namespace

std::optional<std::string> demo_model_path() {
  if (std::optional<fs::path> p = find_data("models/demo/model_index.json")) return p->parent_path().string();
  return std::nullopt;
}

DemoEvalSet load_demo_eval_set(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw_error(ErrorCode::kIo, "cannot open the demo evaluation set '" + path + "'");
  DemoEvalSet set;
  try {
    nlohmann::json j = nlohmann::json::parse(f);
    for (const auto& [name, rgb] : j.at("palette").items()) {
      set.palette[name] = {rgb.at(0).get<int>(), rgb.at(1).get<int>(), rgb.at(2).get<int>()};
    }
    set.image_size = j.value("image_size", 128);
    for (const auto& c : j.at("cases")) {
      set.cases.push_back({c.at("caption").get<std::string>(), c.at("background").get<std::string>(),
                           c.at("colour").get<std::string>(), c.at("shape").get<std::string>(),
                           c.at("position").get<std::string>(), c.at("size").get<std::string>()});
    }
  } catch (const nlohmann::json::exception& e) {
    throw_error(ErrorCode::kIo, "bad demo evaluation set '" + path + "': " + e.what());
  }
  if (set.palette.empty() || set.cases.empty()) {
    throw_error(ErrorCode::kIo, "demo evaluation set '" + path + "' has no palette or no cases");
  }
  return set;
}

GenerationParams demo_eval_params(const DemoEvalSet& set, int steps, int64_t seed) {
  GenerationParams p;
  for (const DemoCase& c : set.cases) p.prompts.push_back(c.caption);
  p.images = static_cast<int>(p.prompts.size());
  p.negative_prompt = "";
  p.width = p.height = set.image_size;
  p.steps = steps;
  p.seed = seed;
  p.seed_per_image = true;
  return p;
}

void AdherenceScore::add(const DemoCase& expected, const SceneReading& got) {
  ++images;
  background += got.background == expected.background;
  colour += got.colour == expected.colour;
  position += got.position == expected.position;
  shape += got.shape == expected.shape;
}

SceneReading read_scene(const uint8_t* rgb, int width, int height,
                        const std::map<std::string, std::array<int, 3>>& palette) {
  DIFFUSE_CHECK(width > 2 * kBorder && height > 2 * kBorder, ErrorCode::kInvalidArgument,
                "read_scene needs an image larger than its border ring");
  auto pixel = [&](int x, int y) {
    const uint8_t* p = rgb + (static_cast<size_t>(y) * width + x) * 3;
    return std::array<double, 3>{double(p[0]), double(p[1]), double(p[2])};
  };
  std::vector<std::array<double, 3>> ring;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      bool edge = y < kBorder || y >= height - kBorder || x < kBorder || x >= width - kBorder;
      if (edge) ring.push_back(pixel(x, y));
    }
  }
  const std::array<double, 3> bg = channel_medians(ring);
  SceneReading out;
  out.background = nearest(palette, bg);

  std::vector<std::array<double, 3>> fg;
  std::vector<std::pair<int, int>> xy;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      std::array<double, 3> p = pixel(x, y);
      double d = 0;
      for (int c = 0; c < 3; ++c) d += (p[c] - bg[c]) * (p[c] - bg[c]);
      if (std::sqrt(d) > kForegroundDistance) {
        fg.push_back(p);
        xy.emplace_back(x, y);
      }
    }
  }
  const double area = static_cast<double>(fg.size());
  if (area < kMinForeground * width * height) return out;
  out.colour = nearest(palette, channel_medians(fg));

  double sx = 0, sy = 0;
  int x0 = width, x1 = -1, y0 = height, y1 = -1;
  for (auto [x, y] : xy) {
    sx += x;
    sy += y;
    x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
  }
  const double cx = (sx / area + 0.5) / width, cy = (sy / area + 0.5) / height;
  const double dx = cx - 0.5, dy = cy - 0.5;
  if (std::abs(dx) < 0.12 && std::abs(dy) < 0.12) {
    out.position = "centre";
  } else if (std::abs(dx) >= std::abs(dy)) {
    out.position = dx < 0 ? "left" : "right";
  } else {
    out.position = dy < 0 ? "top" : "bottom";
  }
  double r2 = 0;
  for (auto [x, y] : xy) {
    double ex = x + 0.5 - cx * width, ey = y + 0.5 - cy * height;
    r2 = std::max(r2, ex * ex + ey * ey);
  }
  const double roundness = r2 > 0 ? area / (M_PI * r2) : 0.0;
  const double box = double(x1 - x0 + 1) * double(y1 - y0 + 1);
  if (roundness > 0.8) {
    out.shape = "circle";
  } else if (roundness > 0.52) {
    out.shape = "square";
  } else {
    out.shape = area / box > 0.42 ? "triangle" : "star";
  }
  return out;
}

}  // namespace diffuse
