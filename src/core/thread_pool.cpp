// A small fork-join pool: parallel_for splits [0, n) into chunks that workers
// (and the caller) claim from an atomic counter, so a slow core (the machine
// is shared) does not hold up the rest. Nested calls run inline.
#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace diffuse {

namespace {

thread_local bool t_inside_pool = false;

int default_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int threads() const { return threads_; }

  void run(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn) {
    std::lock_guard<std::mutex> run_lock(run_mu_);  // one job at a time
    int64_t chunks = (n + chunk - 1) / chunk;
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = &fn;
      n_ = n;
      chunk_ = chunk;
      next_.store(0);
      pending_.store(chunks);
      ++generation_;
    }
    cv_.notify_all();
    t_inside_pool = true;
    work(&fn, n, chunk);
    t_inside_pool = false;
    // Wait for the chunks and for every worker that joined to leave, so that no
    // worker can still touch this job's counter when the next job starts.
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_.load() == 0 && active_ == 0; });
    fn_ = nullptr;
  }

 private:
  void work(const std::function<void(int64_t, int64_t)>* fn, int64_t n, int64_t chunk) {
    for (;;) {
      int64_t c = next_.fetch_add(1);
      int64_t begin = c * chunk;
      if (begin >= n) break;
      (*fn)(begin, std::min(n, begin + chunk));
      if (pending_.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lk(mu_);
        done_cv_.notify_all();
      }
    }
  }

  void worker_loop() {
    t_inside_pool = true;
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int64_t, int64_t)>* fn;
      int64_t n, chunk;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || (generation_ != seen && fn_ != nullptr); });
        if (stop_) return;
        seen = generation_;
        fn = fn_;
        n = n_;
        chunk = chunk_;
        ++active_;
      }
      work(fn, n, chunk);
      {
        std::lock_guard<std::mutex> lk(mu_);
        --active_;
      }
      done_cv_.notify_all();
    }
  }

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_, done_cv_;
  bool stop_ = false;
  uint64_t generation_ = 0;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, chunk_ = 1;
  int active_ = 0;
  std::atomic<int64_t> next_{0}, pending_{0};
};

std::mutex g_pool_mu;
std::shared_ptr<Pool> g_pool;  // process-wide resource (like oneDNN's own pool), not per-request state
std::atomic<int> g_threads{0};

std::shared_ptr<Pool> get_pool() {
  std::lock_guard<std::mutex> lk(g_pool_mu);
  if (!g_pool) {
    int n = g_threads.load() > 0 ? g_threads.load() : default_threads();
    g_pool = std::make_shared<Pool>(n);
  }
  return g_pool;
}

}  // namespace

int num_threads() {
  int n = g_threads.load();
  return n > 0 ? n : default_threads();
}

void set_num_threads(int n) {
  std::shared_ptr<Pool> old;
  {
    std::lock_guard<std::mutex> lk(g_pool_mu);
    g_threads.store(n > 0 ? n : 0);
    old = std::move(g_pool);  // rebuilt lazily with the new size
  }
  // `old` is joined here unless a running parallel_for still holds it.
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int threads = num_threads();
  if (threads <= 1 || n <= grain || t_inside_pool) {
    fn(0, n);
    return;
  }
  // Several chunks per thread for load balance, each at least `grain` items.
  int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, static_cast<int64_t>(threads) * 4);
  int64_t chunk = (n + chunks - 1) / chunks;
  if (chunk >= n) {
    fn(0, n);
    return;
  }
  get_pool()->run(n, chunk, fn);
}

}  // namespace diffuse
