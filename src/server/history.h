// Persistent gallery: finished jobs in SQLite (WAL, one transaction per job)
// and their PNGs on disk. A PNG is written (atomically: temp file + rename)
// before its row is committed, so after a crash every row's images exist;
// PNGs without a row are removed at start-up.
#pragma once
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

struct sqlite3;

namespace diffuse::server {

struct HistoryImage {
  std::string file;  // name inside images_dir, e.g. "3f2a9c-1.png"
  int64_t seed = 0;
  int width = 0, height = 0;
  std::string parameters;
};

struct HistoryEntry {
  std::string id;
  double created = 0;  // unix seconds
  std::string model;
  std::string prompt;
  nlohmann::json params;
  std::vector<HistoryImage> images;
};

class History {
 public:
  explicit History(const std::string& data_dir);  // creates data_dir/history.db and data_dir/images
  ~History();
  History(const History&) = delete;
  History& operator=(const History&) = delete;

  const std::string& images_dir() const { return images_dir_; }
  void add(const HistoryEntry& entry);
  std::vector<HistoryEntry> list(int limit, int offset) const;  // newest first
  int count() const;

 private:
  void exec(const char* sql) const;
  std::string images_dir_;
  sqlite3* db_ = nullptr;
  mutable std::mutex mu_;
};

}  // namespace diffuse::server
