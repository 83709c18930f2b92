// Base of the k-diffusion samplers (crowsonkb/k-diffusion, k_diffusion/sampling.py)
// ported as Scheduler subclasses: dpm2, dpm2_a, dpmpp_2s_a, dpmpp_sde (one or
// two model evaluations per step) and dpmpp_2m_sde, dpmpp_3m_sde (one, multistep).
// Internal to src/sampling.
//
// What the base does, so that each sampler file is only its update rule:
//  - the step sigmas s_0 > ... > s_{n-1} > s_n = 0: the config's own sigmas
//    and timesteps as the Euler classes build them (interpolated_sigma_steps:
//    default, karras, and every k-diffusion schedule of sigma_schedules.h);
//  - the evaluation list, like diffusers' KDPM2 / Heun: a two-stage step i
//    lists two entries in timesteps() (its first stage at s_i, with the
//    schedule's timestep, and its second stage at second_sigma(i), with the
//    fractional timestep sigma_to_t of that sigma), a one-stage step one
//    entry; sigmas() holds the sigma of each evaluation, then 0. Only a last
//    step (s_n = 0) is one-stage in these samplers, so n steps are 2n - 1
//    evaluations (order() == 2), like Heun;
//  - VE form as k-diffusion (x = x0 + sigma * eps): scale_model_input is
//    x / sqrt(sigma^2 + 1), init_noise_sigma as the Euler classes, add_noise
//    x + sigma * noise;
//  - the model output becomes k-diffusion's `denoised` (sigma_x0) at the
//    evaluation's sigma, for epsilon, v_prediction and sample models;
//  - the state between the two stages of a step (the step's start sample and
//    first denoised), checked so that a stage-2 index follows its stage 1.
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sampling/schedule_tables.h"
#include "sampling/scheduler.h"

namespace diffuse::sched {

class KSampler : public Scheduler {
 public:
  int order() const override { return 2; }
  bool draws_noise(int k) const override;
  std::pair<double, double> noise_interval(int k) const override;
  std::pair<double, double> noise_domain() const override;

 protected:
  KSampler(const std::string& name, const SchedulerConfig& c);

  // Where step i (from s to s_next) evaluates the model a second time; nullopt: one evaluation.
  virtual std::optional<double> second_sigma(double s, double s_next) const = 0;
  // A one-stage step, or the first stage of a two-stage one (then its result is the
  // sample the second evaluation is made at). x: the step's sample, den: its denoised.
  virtual Tensor first_stage(int i, const Tensor& x, const Tensor& den, const Tensor& noise, bool two_stage) = 0;
  // The second stage: from the step's start sample x (denoised den) and the second
  // evaluation's sample x_2 (denoised den_2).
  virtual Tensor second_stage(int i, const Tensor& x, const Tensor& den, const Tensor& x_2, const Tensor& den_2,
                              const Tensor& noise) {
    throw_error(ErrorCode::kRuntime, "[" + name() + "] has no second stage");
  }
  // Whether stage `stage` of step i takes noise, and (kBrownian) its interval.
  virtual bool stage_draws_noise(int i, int stage, bool two_stage) const { return false; }
  virtual std::pair<double, double> stage_noise_interval(int i, int stage) const { return {0.0, 0.0}; }
  // Multistep samplers forget their history (set_timesteps, set_begin_index).
  virtual void reset_history() {}
  // The step sigmas and the model's timesteps for n steps (no final 0): by default the
  // Euler / KDPM2 classes' rules (interpolated_sigma_steps).
  virtual SigmaSteps step_schedule(int n) const {
    return interpolated_sigma_steps(config_, train_, spacing_, n, name().c_str());
  }

  // The step sigmas s_0 .. s_n (s_n = 0), float-rounded as sigmas() holds them, in double.
  double s(int i) const { return step_sigmas_[static_cast<size_t>(i)]; }
  int num_steps() const { return static_cast<int>(step_sigmas_.size()) - 1; }

  void build_timesteps(int n) override;
  void on_begin_index(int k) override;
  Tensor scale_input(const Tensor& sample, int k) override;
  Tensor step_impl(const Tensor& model_output, int k, const Tensor& sample, const Tensor& noise) override;

  SchedulerConfig config_;
  TrainSchedule train_;
  Prediction prediction_ = Prediction::kEpsilon;
  std::string spacing_;

 private:
  std::vector<double> step_sigmas_;
  std::vector<int> eval_step_, eval_stage_;
  std::vector<bool> two_stage_;
  Tensor x_start_, den_start_;  // the first stage's sample and denoised, for the second
  int first_eval_ = -1;         // the evaluation index of that first stage
};

// k-diffusion's get_ancestral_step(sigma_from, sigma_to, eta = 1): the level to
// step down to and the noise to add, sigma_up = min(sigma_to,
// sqrt(sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2)), sigma_down = sqrt(sigma_to^2 - sigma_up^2).
std::pair<double, double> ancestral_step(double sigma_from, double sigma_to);

// a * x + b * y with double coefficients (rounded to f32 once, as torch's scalar ops do).
Tensor lin(const Tensor& x, double a, const Tensor& y, double b);

}  // namespace diffuse::sched
