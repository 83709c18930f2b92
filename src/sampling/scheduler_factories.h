// Constructors of the scheduler ports (one per file), named by the rows of
// sampler_catalog.cpp. Internal to src/sampling.
#pragma once
#include <memory>
#include <vector>

#include "sampling/scheduler.h"

namespace diffuse::sched {

std::unique_ptr<Scheduler> make_ddim(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_pndm(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_lms(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_euler(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_euler_ancestral(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_heun(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_dpmpp_2m(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_unipc(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_lcm(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_tcd(const SchedulerConfig& c);

// The timesteps of LCMScheduler / TCDScheduler.set_timesteps (strength 1): n of the
// original_steps distillation timesteps k - 1, 2k - 1, ... (k = N // original_steps), evenly
// spaced by index from the top. Throws kInvalidArgument naming `who` when n is not in
// [1, original_steps].
std::vector<float> consistency_timesteps(int num_train_timesteps, int original_steps, int n, const char* who);
// The k-diffusion samplers (k_sampler.h), one file each.
std::unique_ptr<Scheduler> make_dpm2(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_dpm2_ancestral(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_dpmpp_2s_ancestral(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_dpmpp_sde(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_dpmpp_2m_sde(const SchedulerConfig& c);
std::unique_ptr<Scheduler> make_dpmpp_3m_sde(const SchedulerConfig& c);

}  // namespace diffuse::sched
