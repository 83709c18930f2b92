// DIFFUSE_PROFILE=1 op timers (see profile.h).
#include "backends/cpu/profile.h"
#include "core/runtime_options.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace diffuse::cpu::profile {

namespace {

constexpr int kMaxSlots = 64;

struct Table {
  std::mutex mu;
  const char* names[kMaxSlots] = {};
  int count = 0;
  std::atomic<int64_t> ns[kMaxSlots] = {};
  std::atomic<int64_t> calls[kMaxSlots] = {};

  ~Table() {
    if (!enabled() || count == 0) return;
    std::vector<int> order(count);
    for (int i = 0; i < count; ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return ns[a] > ns[b]; });
    double total = 0;
    for (int i = 0; i < count; ++i) total += ns[i].load() * 1e-6;
    std::fprintf(stderr, "\nDIFFUSE_PROFILE: CPU op time (nested scopes such as conv2d.* are inside their parent)\n");
    std::fprintf(stderr, "%-24s %12s %10s %10s\n", "op", "total ms", "calls", "ms/call");
    for (int i : order) {
      double ms = ns[i].load() * 1e-6;
      int64_t c = calls[i].load();
      std::fprintf(stderr, "%-24s %12.1f %10lld %10.3f\n", names[i], ms, static_cast<long long>(c),
                   c ? ms / c : 0.0);
    }
  }
};

Table& table() {
  static Table t;
  return t;
}

}  // namespace

bool enabled() {
  static const bool on = runtime_options().profile;
  return on;
}

int slot(const char* name) {
  Table& t = table();
  std::lock_guard<std::mutex> lk(t.mu);
  for (int i = 0; i < t.count; ++i) {
    if (std::strcmp(t.names[i], name) == 0) return i;
  }
  if (t.count == kMaxSlots) return kMaxSlots - 1;  // shares the last slot rather than failing
  t.names[t.count] = name;
  return t.count++;
}

void add(int s, int64_t ns) {
  Table& t = table();
  t.ns[s].fetch_add(ns, std::memory_order_relaxed);
  t.calls[s].fetch_add(1, std::memory_order_relaxed);
}

}  // namespace diffuse::cpu::profile
