// libFuzzer target: a PyTorch .ckpt (zip archive + data.pkl + storages)
// through parse_torch_checkpoint: zip central directory, local headers,
// deflate, the restricted unpickler and torch's rebuild calls.
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> buf(data, data + size);
  try {
    diffuse::Checkpoint ck = diffuse::parse_torch_checkpoint(buf.data(), buf.size(), nullptr, "fuzz.ckpt");
    volatile uint64_t sink = diffuse::fuzz::touch_tensors(ck.tensors);
    (void)sink;
  } catch (const diffuse::Error&) {
  }
  return 0;
}
