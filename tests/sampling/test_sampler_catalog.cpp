// The sampler catalogue (src/sampling/sampler_catalog.h): every row builds its
// scheduler and agrees with it; every spelling the server and the web page
// accepted before the catalogue still resolves the same way; the JSON shapes
// the A1111 API and the web page read.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "sampling/rng.h"
#include "sampling/sampler_catalog.h"
#include "sampling/scheduler.h"

namespace diffuse {
namespace {

const nlohmann::json kSd1Config = {{"beta_end", 0.012},      {"beta_schedule", "scaled_linear"},
                                   {"beta_start", 0.00085},  {"num_train_timesteps", 1000},
                                   {"set_alpha_to_one", false}, {"skip_prk_steps", true},
                                   {"steps_offset", 1},       {"clip_sample", false}};

TEST(SamplerCatalog, EveryRowBuildsItsSchedulerWithEachSchedule) {
  const SchedulerConfig cfg = SchedulerConfig::from_json(kSd1Config);
  ASSERT_EQ(sampler_catalog().size(), 16u);  // A1111's list, lcm, and tcd (docs/few-step.md)
  for (const SamplerSpec& r : sampler_catalog()) {
    SCOPED_TRACE(r.name);
    for (const ScheduleSpec& sc : schedule_catalog()) {
      if (r.supports(sc.id)) {
        auto s = make_scheduler(r.name, cfg, sc.name);
        EXPECT_EQ(s->name(), r.name);
        s->set_timesteps(6);
        EXPECT_FALSE(s->timesteps().empty());
      } else {
        try {
          make_scheduler(r.name, cfg, sc.name);
          ADD_FAILURE() << "schedule " << sc.name << " accepted";
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::kUnsupported) << e.what();
        }
      }
    }
  }
}

TEST(SamplerCatalog, PredictionsAreWhatTheSchedulersAccept) {
  for (const SamplerSpec& r : sampler_catalog()) {
    for (Prediction p : {Prediction::kEpsilon, Prediction::kVPrediction, Prediction::kSample}) {
      SCOPED_TRACE(std::string(r.name) + " " + prediction_name(p));
      nlohmann::json j = kSd1Config;
      j["prediction_type"] = prediction_name(p);
      const SchedulerConfig cfg = SchedulerConfig::from_json(j);
      if (r.supports(p)) {
        EXPECT_NO_THROW(make_scheduler(r.name, cfg));
      } else {
        try {
          make_scheduler(r.name, cfg);
          ADD_FAILURE() << "accepted";
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
          EXPECT_NE(std::string(e.what()).find(prediction_name(p)), std::string::npos) << e.what();
        }
      }
    }
  }
  EXPECT_EQ(SchedulerConfig::from_json({{"prediction_type", "original_sample"}}).prediction_type, Prediction::kSample);
  EXPECT_THROW(SchedulerConfig::from_json({{"prediction_type", "flow"}}), Error);
}

// The catalogue's noise flag and evaluation count are what the schedulers do.
TEST(SamplerCatalog, NoiseAndEvaluationsMatchTheSchedulers) {
  const SchedulerConfig cfg = SchedulerConfig::from_json(kSd1Config);
  for (const SamplerSpec& r : sampler_catalog()) {
    SCOPED_TRACE(r.name);
    auto s = make_scheduler(r.name, cfg);
    const int n = 8;
    s->set_timesteps(n);
    bool any_noise = false;
    for (size_t k = 0; k < s->timesteps().size(); ++k) any_noise |= s->draws_noise(static_cast<int>(k));
    EXPECT_EQ(any_noise, r.stochastic);
    if (r.ancestral) {
      EXPECT_TRUE(r.stochastic);
    }
    const size_t evals = s->timesteps().size();
    if (r.evals_per_step == 2) {
      EXPECT_EQ(evals, static_cast<size_t>(2 * n - 1));  // the last step evaluates once
    } else {
      EXPECT_EQ(r.evals_per_step, 1);
      EXPECT_EQ(evals, std::string(r.name) == "pndm" ? static_cast<size_t>(n + 1) : static_cast<size_t>(n));
    }
    EXPECT_EQ(scheduler_names().size(), sampler_catalog().size());
  }
}

// Every spelling canonical_sampler() (server) and the web page's alias map
// accepted before the catalogue existed, and what it meant.
TEST(SamplerCatalog, ResolvesEverySpellingAcceptedBefore) {
  const std::map<std::string, std::string> before = {
      {"euler a", "euler_a"},   {"euler_ancestral", "euler_a"}, {"euler_a", "euler_a"}, {"euler", "euler"},
      {"lms", "lms"},           {"ddim", "ddim"},               {"plms", "pndm"},       {"pndm", "pndm"},
      {"dpm++ 2m", "dpmpp_2m"}, {"dpmpp_2m", "dpmpp_2m"},       {"dpm++2m", "dpmpp_2m"}, {"unipc", "unipc"},
      {"uni_pc", "unipc"},      {"lcm", "lcm"},                 {"dpm++ 2m karras", "dpmpp_2m"},
      // A1111 display names and k-diffusion names, any case.
      {"Euler a", "euler_a"},   {"k_euler_a", "euler_a"},       {"K_EULER", "euler"},   {"k_lms", "lms"},
      {"DPM++ 2M", "dpmpp_2m"}, {"k_dpmpp_2m", "dpmpp_2m"},     {"DDIM", "ddim"},       {"PLMS", "pndm"},
      {"UniPC", "unipc"},       {"LCM", "lcm"},                 {"k_ddim", "ddim"},     {"k_euler_ancestral", "euler_a"},
  };
  for (const auto& [spelling, name] : before) {
    const std::optional<SamplerChoice> c = resolve_sampler(spelling);
    ASSERT_TRUE(c.has_value()) << spelling;
    EXPECT_EQ(c->sampler->name, name) << spelling;
  }
  EXPECT_EQ(resolve_sampler("DPM++ 2M Karras")->schedule, Schedule::kKarras);
  EXPECT_FALSE(resolve_sampler("dpm++ 2m")->schedule.has_value());
  EXPECT_EQ(resolve_sampler("LMS Karras")->sampler->name, std::string("lms"));
  EXPECT_EQ(resolve_sampler("Heun")->sampler->name, std::string("heun"));
  EXPECT_EQ(resolve_sampler("k_heun")->sampler->name, std::string("heun"));
  EXPECT_EQ(resolve_sampler("HeunDiscreteScheduler")->sampler->name, std::string("heun"));
  EXPECT_EQ(resolve_sampler("Euler a Karras")->schedule, Schedule::kKarras);  // k-diffusion runs it on any sigmas
  EXPECT_FALSE(resolve_sampler("DDIM Karras"));  // ddim has no karras schedule
  EXPECT_EQ(resolve_sampler("DPM++ SDE Karras")->sampler->name, std::string("dpmpp_sde"));
  EXPECT_EQ(resolve_sampler("DPM2 a")->sampler->name, std::string("dpm2_a"));
  EXPECT_EQ(resolve_sampler("k_dpm_2")->sampler->name, std::string("dpm2"));
  EXPECT_EQ(resolve_sampler("dpmpp_2s_ancestral")->sampler->name, std::string("dpmpp_2s_a"));
  EXPECT_EQ(resolve_sampler("DPM++ 3M SDE")->sampler->name, std::string("dpmpp_3m_sde"));
  EXPECT_EQ(resolve_sampler("k_dpmpp_2m_sde")->sampler->name, std::string("dpmpp_2m_sde"));
  EXPECT_EQ(resolve_sampler("KDPM2AncestralDiscreteScheduler")->sampler->name, std::string("dpm2_a"));
  EXPECT_FALSE(resolve_sampler("nope"));
  EXPECT_FALSE(resolve_sampler(""));
  EXPECT_FALSE(resolve_sampler(std::string("euler\0x", 7)));
}

TEST(SamplerCatalog, NoSpellingNamesTwoSamplers) {
  std::map<std::string, std::string> owner;
  auto claim = [&](const std::string& spelling, const std::string& name) {
    std::string k;
    for (char c : spelling) k += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (k.empty()) return;
    auto [it, fresh] = owner.emplace(k, name);
    EXPECT_TRUE(fresh || it->second == name) << "'" << spelling << "' names " << it->second << " and " << name;
  };
  for (const SamplerSpec& r : sampler_catalog()) {
    for (const char* s : {r.name, r.label, r.a1111_name, r.diffusers_class, r.comfyui}) claim(s, r.name);
    for (const char* s : r.a1111_aliases) claim(s, r.name);
    for (const char* s : r.aliases) claim(s, r.name);
    EXPECT_EQ(find_sampler(r.name), &r);
    EXPECT_EQ(&sampler_spec(r.name), &r);
    if (*r.diffusers_class) EXPECT_EQ(sampler_for_diffusers_class(r.diffusers_class), &r);
  }
  EXPECT_EQ(find_sampler("Euler"), nullptr);  // find_sampler takes our names only
  EXPECT_EQ(sampler_for_diffusers_class("KDPM2DiscreteScheduler")->name, std::string("dpm2"));
  EXPECT_EQ(sampler_for_diffusers_class(""), nullptr);
  EXPECT_EQ(sampler_for_diffusers_class("DEISMultistepScheduler"), nullptr);
  try {
    sampler_spec("euler_b");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("euler_a, euler, lms, heun"), std::string::npos) << e.what();
  }
}

TEST(SamplerCatalog, Schedules) {
  EXPECT_EQ(find_schedule("karras")->id, Schedule::kKarras);
  EXPECT_EQ(find_schedule("Karras")->id, Schedule::kKarras);
  EXPECT_EQ(find_schedule("default")->id, Schedule::kDefault);
  EXPECT_EQ(find_schedule("Automatic")->id, Schedule::kDefault);
  EXPECT_EQ(find_schedule("exponential")->id, Schedule::kExponential);
  EXPECT_EQ(find_schedule("ddim_uniform")->id, Schedule::kDdim);  // ComfyUI's name
  EXPECT_EQ(find_schedule("SGMUniform")->id, Schedule::kSgmUniform);  // A1111's alias
  EXPECT_EQ(find_schedule("SGM Uniform")->id, Schedule::kSgmUniform);  // A1111's label
  EXPECT_EQ(find_schedule("Align Your Steps")->id, Schedule::kAlignYourSteps);
  EXPECT_EQ(find_schedule("linear_quadratic"), nullptr);
  EXPECT_EQ(find_schedule(""), nullptr);
  EXPECT_STREQ(schedule_spec(Schedule::kKarras).name, "karras");
  EXPECT_STREQ(schedule_spec("automatic").name, "default");
  try {
    schedule_spec("karas");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("default, uniform, karras, exponential, polyexponential, sgm_uniform, "
                                         "kl_optimal, align_your_steps, simple, normal, ddim, beta"),
              std::string::npos)
        << e.what();
  }
  // make_scheduler takes any spelling of a schedule; an unknown one is an invalid argument.
  EXPECT_NO_THROW(make_scheduler("euler", SchedulerConfig::from_json(kSd1Config), "Karras"));
  try {
    make_scheduler("euler", SchedulerConfig::from_json(kSd1Config), "karas");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
}

TEST(SamplerCatalog, JsonForTheWebPage) {
  const nlohmann::json j = sampler_catalog_json();
  ASSERT_EQ(j.at("samplers").size(), sampler_catalog().size());
  for (size_t i = 0; i < sampler_catalog().size(); ++i) {
    const SamplerSpec& r = sampler_catalog()[i];
    const nlohmann::json& s = j.at("samplers").at(i);
    EXPECT_EQ(s.at("name"), r.name);
    EXPECT_EQ(s.at("label"), r.label);
    EXPECT_EQ(s.at("a1111_name"), r.a1111_name);
    EXPECT_EQ(s.at("diffusers_class"), r.diffusers_class);
    EXPECT_EQ(s.at("evals_per_step"), r.evals_per_step);
    EXPECT_TRUE(s.at("a1111_aliases").is_array());
    EXPECT_TRUE(s.at("aliases").is_array());
    EXPECT_EQ(s.at("schedules").at(0), "default");
    EXPECT_EQ(s.at("predictions").at(0), "epsilon");
  }
  const nlohmann::json& heun = j.at("samplers").at(3);
  EXPECT_EQ(heun.at("name"), "heun");
  EXPECT_EQ(heun.at("schedules").size(), schedule_catalog().size());
  EXPECT_EQ(heun.at("predictions"), nlohmann::json({"epsilon", "v_prediction", "sample"}));
  EXPECT_EQ(j.at("samplers").at(8).at("name"), "dpmpp_sde");
  EXPECT_EQ(j.at("samplers").at(8).at("noise"), "brownian");
  EXPECT_EQ(j.at("samplers").at(13).at("schedules"), nlohmann::json({"default", "karras"}));  // unipc
  EXPECT_EQ(j.at("schedules").size(), 12u);
  EXPECT_EQ(j.at("schedules").at(2).at("name"), "karras");
  EXPECT_EQ(j.at("schedules").at(10).at("aliases"), nlohmann::json({"ddim_uniform"}));
}

TEST(SamplerCatalog, A1111Shapes) {
  const nlohmann::json samplers = a1111_samplers_json();
  ASSERT_EQ(samplers.size(), sampler_catalog().size());
  std::set<std::string> names;
  for (const nlohmann::json& s : samplers) {
    names.insert(s.at("name").get<std::string>());
    EXPECT_TRUE(s.at("aliases").is_array());
    EXPECT_TRUE(s.at("options").is_object());
  }
  for (const char* want : {"Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ 2M", "DPM++ SDE",
                           "DPM++ 2M SDE", "DPM++ 3M SDE", "DDIM", "PLMS", "UniPC", "LCM"})
    EXPECT_TRUE(names.count(want)) << want;
  EXPECT_EQ(samplers.at(0).at("options"), nlohmann::json({{"uses_ensd", "True"}}));    // Euler a
  EXPECT_EQ(samplers.at(3).at("options"), nlohmann::json({{"second_order", "True"}}));  // Heun
  EXPECT_EQ(samplers.at(3).at("aliases"), nlohmann::json({"k_heun"}));
  EXPECT_EQ(samplers.at(5).at("options"), nlohmann::json({{"uses_ensd", "True"}, {"second_order", "True"}}));  // DPM2 a
  EXPECT_EQ(samplers.at(8).at("options"), nlohmann::json({{"second_order", "True"}, {"brownian_noise", "True"}}));
  const nlohmann::json schedulers = a1111_schedulers_json();
  ASSERT_EQ(schedulers.size(), 12u);
  // A1111's modules/sd_schedulers.py, in its order.
  std::vector<std::string> a1111 = {"automatic", "uniform", "karras", "exponential", "polyexponential", "sgm_uniform",
                                    "kl_optimal", "align_your_steps", "simple", "normal", "ddim", "beta"};
  for (size_t i = 0; i < a1111.size(); ++i) EXPECT_EQ(schedulers.at(i).at("name"), a1111[i]);
  EXPECT_TRUE(schedulers.at(0).at("aliases").is_null());
  EXPECT_EQ(schedulers.at(2).at("name"), "karras");
  EXPECT_EQ(schedulers.at(2).at("label"), "Karras");
  EXPECT_EQ(schedulers.at(2).at("default_rho"), 7.0);
  EXPECT_EQ(schedulers.at(2).at("need_inner_model"), false);
  EXPECT_EQ(schedulers.at(4).at("default_rho"), 1.0);  // polyexponential
  EXPECT_EQ(schedulers.at(5).at("label"), "SGM Uniform");
  EXPECT_EQ(schedulers.at(5).at("aliases"), nlohmann::json({"SGMUniform"}));
  EXPECT_EQ(schedulers.at(5).at("need_inner_model"), true);
}

TEST(SamplerCatalog, HelpTextListsEverySampler) {
  const std::string help = sampler_help_text();
  for (const SamplerSpec& r : sampler_catalog()) {
    EXPECT_NE(help.find(std::string("  ") + r.name + " "), std::string::npos) << r.name;
  }
  EXPECT_NE(help.find("heun"), std::string::npos);
  EXPECT_NE(help.find("karras"), std::string::npos);
  EXPECT_EQ(sampler_names_list(),
            "euler_a, euler, lms, heun, dpm2, dpm2_a, dpmpp_2s_a, dpmpp_2m, dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde, "
            "ddim, pndm, unipc, lcm, tcd");
  EXPECT_NE(help.find("align_your_steps"), std::string::npos);
}

}  // namespace
}  // namespace diffuse
