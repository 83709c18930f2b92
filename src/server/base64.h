// Base64 (RFC 4648, standard alphabet, padded) for image payloads.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace diffuse::server {

std::string base64_encode(std::string_view data);
// Accepts an optional "data:...;base64," prefix; throws Error(kInvalidArgument) on bad input.
std::vector<uint8_t> base64_decode(std::string_view text);

}  // namespace diffuse::server
