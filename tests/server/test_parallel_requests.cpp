// Several users at once (issue 17): generation requests sent to the server
// concurrently, on the built-in demo model, each get exactly the image that
// the same request gets when it is sent alone. A race in the CPU ops once
// mixed one request's numbers into another's on AVX-512 machines.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "pipeline/demo_model.h"
#include "server_harness.h"
#include "server_test_util.h"

namespace diffuse::testing {
namespace {

constexpr int kClients = 4;

Json request(int64_t seed) {
  return {{"prompt", "a large red square in the centre, on a blue background"},
          {"negative_prompt", ""},
          {"seed", seed},
          {"steps", 6},
          {"width", 128},
          {"height", 128},
          {"sampler_name", "Euler a"},
          {"cfg_scale", 7.5}};
}

std::string first_image(httplib::Client& c, const Json& body) {
  auto r = post_json(c, "/sdapi/v1/txt2img", body);
  EXPECT_TRUE(r);
  if (!r) return "";
  EXPECT_EQ(r->status, 200) << r->body;
  Json out = parse_json(r);
  EXPECT_EQ(out["images"].size(), 1u);
  return out["images"].empty() ? "" : out["images"][0].get<std::string>();
}

TEST(ParallelRequests, EachImageEqualsTheOneMadeAlone) {
  auto demo = demo_model_path();
  ASSERT_TRUE(demo) << "the built-in demo model (models/demo) was not found";
  server::ServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.model_files = {*demo};
  o.scan_hf_cache = false;
  o.data_dir = temp_dir();
  RunningServer server(o);

  // Alone: one request at a time.
  std::vector<std::string> alone(kClients);
  {
    auto c = server.client();
    for (int i = 0; i < kClients; ++i) alone[i] = first_image(*c, request(100 + i));
  }
  for (int i = 1; i < kClients; ++i) EXPECT_NE(alone[i], alone[0]) << "seeds must give different images";

  // Together: every client at once, twice over.
  for (int round = 0; round < 2; ++round) {
    std::vector<std::string> together(kClients);
    std::atomic<int> ready{0};
    std::vector<std::thread> clients;
    for (int i = 0; i < kClients; ++i)
      clients.emplace_back([&, i] {
        auto c = server.client();
        ready.fetch_add(1);
        while (ready.load() < kClients) std::this_thread::yield();
        together[i] = first_image(*c, request(100 + i));
      });
    for (auto& t : clients) t.join();
    for (int i = 0; i < kClients; ++i) EXPECT_EQ(together[i], alone[i]) << "round " << round << ", seed " << 100 + i;
  }
}

}  // namespace
}  // namespace diffuse::testing
