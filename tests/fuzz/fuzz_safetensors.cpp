// libFuzzer target: a whole .safetensors file (8-byte header length, JSON
// header, tensor bytes) through parse_safetensors.
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // parse_safetensors returns zero-copy views into the buffer: keep a private,
  // exactly-sized copy so any read past the end is an ASan report.
  std::vector<uint8_t> buf(data, data + size);
  try {
    diffuse::Checkpoint ck = diffuse::parse_safetensors(buf.data(), buf.size(), nullptr, "fuzz.safetensors");
    volatile uint64_t sink = diffuse::fuzz::touch_tensors(ck.tensors);
    (void)sink;
  } catch (const diffuse::Error&) {
  }
  return 0;
}
