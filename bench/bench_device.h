// The benches' main() for those that run on either device: `--device cpu|cuda`
// (before Google Benchmark's own flags) sets `device`, the rest goes to Google
// Benchmark.
#pragma once
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "core/tensor.h"

namespace diffuse {

inline int run_benchmarks_on_device(int argc, char** argv, Device& device) {
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      device = std::strcmp(argv[++i], "cuda") == 0 ? Device::kCUDA : Device::kCPU;
      continue;
    }
    rest.push_back(argv[i]);
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace diffuse
