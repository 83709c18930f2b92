// The `diffuse` command line: one binary, one subcommand per file.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace diffuse::cli {

// Each subcommand registers its options and returns the action to run when it
// was chosen. Actions return the process exit code.
using Action = std::function<int()>;
Action add_generate(CLI::App& app);
Action add_devices(CLI::App& app);
Action add_monitor(CLI::App& app);
Action add_pull(CLI::App& app);
Action add_models(CLI::App& app);
Action add_serve(CLI::App& app);
Action add_bench(CLI::App& app);
Action add_make_checkpoint(CLI::App& app);
Action add_demo_eval(CLI::App& app);
Action add_upscale(CLI::App& app);
Action add_worker(CLI::App& app);  // cmd_worker.cpp: the Redis job queue's worker
Action add_preprocess(CLI::App& app);  // cmd_preprocess.cpp: ControlNet preprocessors on a PNG
Action add_probe(CLI::App& app);       // cmd_probe.cpp: what a model file is (ControlNet or checkpoint)

// Exit codes (README): 0 ok, 1 runtime error, 2 usage error, 130 interrupted.
constexpr int kExitOk = 0, kExitRuntime = 1, kExitUsage = 2, kExitInterrupted = 130;

// Set by SIGINT/SIGTERM; long-running commands poll it at step boundaries.
bool interrupted();
void install_signal_handlers();

// Resolves --model: a path, a repo id in the Hugging Face cache, an alias, or
// "demo" (the built-in demo model, models/demo).
std::string resolve_model(const std::string& spec);

}  // namespace diffuse::cli
