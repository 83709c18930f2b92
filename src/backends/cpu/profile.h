// Per-op-family wall-clock timers for the CPU backend, on when the process
// starts with DIFFUSE_PROFILE=1; the table (total ms, calls, share) goes to
// stderr at exit. Off, a scope costs one predictable branch. The counters are
// process-wide on purpose: they describe the whole process, not a request.
#pragma once
#include <chrono>
#include <cstdint>

namespace diffuse::cpu::profile {

bool enabled();
// A stable slot for `name` (a string literal); call once per site.
int slot(const char* name);
void add(int slot, int64_t ns);

class Scope {
 public:
  explicit Scope(int slot) : slot_(enabled() ? slot : -1) {
    if (slot_ >= 0) t0_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (slot_ >= 0) {
      add(slot_, std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0_).count());
    }
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  int slot_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace diffuse::cpu::profile

#define DIFFUSE_CPU_PROFILE_CAT2(a, b) a##b
#define DIFFUSE_CPU_PROFILE_CAT(a, b) DIFFUSE_CPU_PROFILE_CAT2(a, b)
// DIFFUSE_CPU_PROFILE("conv2d"); times the rest of the enclosing scope.
#define DIFFUSE_CPU_PROFILE(name)                                                           \
  static const int DIFFUSE_CPU_PROFILE_CAT(profile_slot_, __LINE__) =                       \
      ::diffuse::cpu::profile::slot(name);                                                  \
  ::diffuse::cpu::profile::Scope DIFFUSE_CPU_PROFILE_CAT(profile_scope_, __LINE__)(        \
      DIFFUSE_CPU_PROFILE_CAT(profile_slot_, __LINE__))
