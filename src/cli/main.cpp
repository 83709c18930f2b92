// diffuse: Stable Diffusion text-to-image engine and playground.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iostream>

#include "cli/cli.h"
#include "core/runtime_options.h"
#include "cli/version.h"
#include "core/error.h"

namespace diffuse::cli {
namespace {
std::atomic<bool> g_interrupted{false};  // written by the signal handler only
extern "C" void on_signal(int) { g_interrupted.store(true); }
}  // namespace

bool interrupted() { return g_interrupted.load(); }

void install_signal_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

namespace {

// oneDNN's OpenMP threads spin while they wait for work. On a machine that is
// busy with anything else (a browser, a build, a second diffuse) the spinning
// threads steal the cores the working ones need: the demo image took 37-80 s
// instead of 3.5 s on a loaded 2-core box. libgomp reads OMP_WAIT_POLICY once,
// when it is loaded, so the variable is set here and the program executes
// itself again, once. A policy the user set is kept.
void prefer_passive_openmp(char** argv) {
  if (!runtime_options().omp_wait_policy.empty()) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  execv("/proc/self/exe", argv);
  // exec failed (no /proc): run on with the library's default policy.
}

}  // namespace
}  // namespace diffuse::cli

int main(int argc, char** argv) {
  using namespace diffuse;
  try {
    (void)runtime_options();  // a bad environment variable is an error before anything runs
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << " (see diffuse --help-env)\n";
    return cli::kExitUsage;
  }
  cli::prefer_passive_openmp(argv);
  CLI::App app{"diffuse " DIFFUSE_VERSION
               " - Stable Diffusion (SD 1.x, SD 2.x, SDXL) text-to-image engine and playground.\n"
               "Run `diffuse <command> --help` for a command's options."};
  app.require_subcommand(1);
  app.add_flag_callback(
         "--help-env",
         [] {
           std::cout << runtime_options_help();
           std::exit(0);
         },
         "Print the environment variables diffuse reads (docs/runtime-options.md), and exit")
      ->trigger_on_parse();
  app.set_version_flag("--version", [] { return cli::version_text(); },
                       "Print the version, commit, backends and data directory, and exit");
  std::vector<cli::Action> actions = {cli::add_generate(app), cli::add_devices(app), cli::add_monitor(app),
                                      cli::add_pull(app),     cli::add_models(app),  cli::add_serve(app),
                                      cli::add_bench(app),    cli::add_make_checkpoint(app),
                                      cli::add_demo_eval(app),    cli::add_upscale(app),
                                      cli::add_worker(app),   cli::add_preprocess(app),
                                      cli::add_probe(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return cli::kExitUsage;
  }
  const auto subs = app.get_subcommands();
  try {
    for (size_t i = 0; i < app.get_subcommands({}).size(); ++i) {
      if (app.get_subcommands({})[i]->parsed()) return actions[i]();
    }
    return cli::kExitUsage;
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    switch (e.code()) {
      case ErrorCode::kInvalidArgument: return cli::kExitUsage;
      case ErrorCode::kCancelled: return cli::kExitInterrupted;
      default: return cli::kExitRuntime;
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return cli::kExitRuntime;
  }
}
