// Soak: the real server in-process under 8 concurrent clients for 500
// requests (cheap 64x64 one-step generations mixed with GETs of models,
// devices and job status). Zero failures, every job done, bounded RSS growth;
// prints p50/p99 latency and RSS before/after (docs/reliability.md).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "server_harness.h"

namespace diffuse {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double rss_mb() {
  std::ifstream f("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  f >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

TEST(Soak, FiveHundredRequestsEightClients) {
  DIFFUSE_REQUIRE_FIXTURES();
  constexpr int kClients = 8;
  constexpr int kRequests = 500;
  testing::InProcessServer srv;
  {
    // Warm-up: load the model and run one job so RSS "before" includes the
    // loaded pipeline and the allocator's steady state.
    auto c = srv.client();
    for (int i = 0; i < 3; ++i) {
      auto r = c.Post("/api/jobs", testing::cheap_job(i), "application/json");
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 202) << r->body;
      ASSERT_EQ(testing::wait_job(c, json::parse(r->body)["id"])["state"], "done");
    }
  }
  const double rss_before = rss_mb();

  std::atomic<int> next{0}, failures{0};
  std::mutex mu;
  std::vector<double> gen_ms, get_ms;
  std::vector<std::string> job_ids, failure_notes;
  auto t0 = Clock::now();
  std::vector<std::thread> clients;
  for (int k = 0; k < kClients; ++k) {
    clients.emplace_back([&, k] {
      auto c = srv.client();
      c.set_keep_alive(k % 2 == 0);  // half reuse connections, half reconnect each time
      std::string last_job;
      for (int i; (i = next.fetch_add(1)) < kRequests;) {
        auto start = Clock::now();
        const bool gen = i % 10 == 0;  // 50 generations: each takes seconds on a loaded 2-core box
        std::string what = gen                                  ? "POST /api/jobs"
                           : (i % 3 == 1 && !last_job.empty()) ? "GET /api/jobs/" + last_job
                           : i % 3 == 2                         ? "GET /api/models"
                                                                : "GET /api/devices";
        httplib::Result r = gen ? c.Post("/api/jobs", testing::cheap_job(1000 + i), "application/json")
                                : c.Get(what.substr(4));
        double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        bool ok = r && r->status >= 200 && r->status < 300;
        std::lock_guard<std::mutex> lock(mu);
        if (!ok) {
          ++failures;
          failure_notes.push_back(what + " -> " + (r ? std::to_string(r->status) + " " + r->body : "no answer"));
          continue;
        }
        (gen ? gen_ms : get_ms).push_back(ms);
        if (gen) {
          last_job = json::parse(r->body)["id"];
          job_ids.push_back(last_job);
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  // Every submitted job finishes successfully.
  auto c = srv.client();
  int done = 0;
  for (const std::string& id : job_ids) {
    json j = testing::wait_job(c, id, 300);
    done += j["state"] == "done";
    if (j["state"] != "done") failure_notes.push_back("job " + id + ": " + j.dump());
  }
  const double wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const double rss_after = rss_mb();
  std::vector<double> all = gen_ms;
  all.insert(all.end(), get_ms.begin(), get_ms.end());

  std::printf(
      "[ soak ] %d requests (%zu job submissions, %zu GETs), %d clients, %d failures, %d/%zu jobs done, %.1f s\n"
      "[ soak ] latency ms: all p50 %.1f p99 %.1f | POST /api/jobs p50 %.1f p99 %.1f | GET p50 %.1f p99 %.1f\n"
      "[ soak ] RSS before %.1f MB, after %.1f MB, growth %.1f MB\n",
      kRequests, gen_ms.size(), get_ms.size(), kClients, failures.load(), done, job_ids.size(), wall_s,
      percentile(all, 0.5), percentile(all, 0.99), percentile(gen_ms, 0.5), percentile(gen_ms, 0.99),
      percentile(get_ms, 0.5), percentile(get_ms, 0.99), rss_before, rss_after, rss_after - rss_before);
  for (size_t i = 0; i < std::min<size_t>(failure_notes.size(), 10); ++i) {
    ADD_FAILURE() << failure_notes[i];
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(static_cast<size_t>(done), job_ids.size());
  EXPECT_EQ(job_ids.size() + get_ms.size(), static_cast<size_t>(kRequests));
  EXPECT_LT(rss_after - rss_before, 200.0) << "RSS grew from " << rss_before << " to " << rss_after << " MB";
}

}  // namespace
}  // namespace diffuse
