// Test helper: reads the F32 tensors of a fixture safetensors file.
// The sampling tests link only diffuse_sampling (not diffuse_io), so this is a
// minimal reader: 8-byte little-endian header length, JSON header, raw data.
#pragma once
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace diffuse::testing {

struct FixtureTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

class FixtureTensors {
 public:
  explicit FixtureTensors(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + path);
    uint64_t header_len = 0;
    f.read(reinterpret_cast<char*>(&header_len), 8);
    std::string header(header_len, '\0');
    f.read(header.data(), static_cast<std::streamsize>(header_len));
    header_ = nlohmann::json::parse(header);
    data_.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }

  bool has(const std::string& key) const { return header_.contains(key); }

  FixtureTensor get(const std::string& key) const {
    if (!header_.contains(key)) throw std::runtime_error("no tensor " + key);
    const auto& e = header_.at(key);
    if (e.at("dtype").get<std::string>() != "F32") throw std::runtime_error(key + " is not F32");
    FixtureTensor t;
    t.shape = e.at("shape").get<std::vector<int64_t>>();
    const auto begin = e.at("data_offsets").at(0).get<size_t>();
    const auto end = e.at("data_offsets").at(1).get<size_t>();
    t.data.resize((end - begin) / 4);
    std::memcpy(t.data.data(), data_.data() + begin, end - begin);
    return t;
  }

 private:
  nlohmann::json header_;
  std::vector<char> data_;
};

// Distance in units in the last place between two floats (0 when bit-identical).
inline int64_t ulp_distance(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  if (ia < 0) ia = INT32_MIN - ia;
  if (ib < 0) ib = INT32_MIN - ib;
  return ia > ib ? int64_t{ia} - ib : int64_t{ib} - ia;
}

}  // namespace diffuse::testing
