#include "server/history.h"

#include <sqlite3.h>

#include <filesystem>
#include <set>

#include "core/error.h"

namespace fs = std::filesystem;

namespace diffuse::server {

History::History(const std::string& data_dir) : images_dir_((fs::path(data_dir) / "images").string()) {
  fs::create_directories(images_dir_);
  std::string db_path = (fs::path(data_dir) / "history.db").string();
  if (sqlite3_open(db_path.c_str(), &db_) != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw_error(ErrorCode::kIo, "cannot open history database " + db_path + ": " + msg);
  }
  sqlite3_busy_timeout(db_, 5000);
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=NORMAL");
  exec("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, created REAL, model TEXT, prompt TEXT, "
       "params TEXT, images TEXT)");
  // Remove PNGs whose row never committed (a crash between file and row).
  std::set<std::string> referenced;
  for (const HistoryEntry& e : list(1 << 30, 0)) {
    for (const HistoryImage& im : e.images) referenced.insert(im.file);
  }
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(images_dir_, ec)) {
    std::string name = f.path().filename().string();
    if (!referenced.count(name)) fs::remove(f.path(), ec);
  }
}

History::~History() {
  if (db_) sqlite3_close(db_);
}

void History::exec(const char* sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw_error(ErrorCode::kIo, std::string("history database: ") + msg);
  }
}

void History::add(const HistoryEntry& e) {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json images = nlohmann::json::array();
  for (const HistoryImage& im : e.images) {
    images.push_back({{"file", im.file}, {"seed", im.seed}, {"width", im.width}, {"height", im.height},
                      {"parameters", im.parameters}});
  }
  sqlite3_stmt* st = nullptr;
  const char* sql = "INSERT OR REPLACE INTO jobs (id, created, model, prompt, params, images) VALUES (?,?,?,?,?,?)";
  if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK) {
    throw_error(ErrorCode::kIo, std::string("history database: ") + sqlite3_errmsg(db_));
  }
  std::string params = e.params.dump(), imgs = images.dump();
  sqlite3_bind_text(st, 1, e.id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_double(st, 2, e.created);
  sqlite3_bind_text(st, 3, e.model.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 4, e.prompt.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 5, params.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 6, imgs.c_str(), -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) throw_error(ErrorCode::kIo, std::string("history database: ") + sqlite3_errmsg(db_));
}

std::vector<HistoryEntry> History::list(int limit, int offset) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<HistoryEntry> out;
  sqlite3_stmt* st = nullptr;
  const char* sql = "SELECT id, created, model, prompt, params, images FROM jobs ORDER BY created DESC LIMIT ? OFFSET ?";
  if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK) return out;
  sqlite3_bind_int(st, 1, limit);
  sqlite3_bind_int(st, 2, offset);
  auto text = [&](int col) {
    const unsigned char* t = sqlite3_column_text(st, col);
    return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
  };
  while (sqlite3_step(st) == SQLITE_ROW) {
    HistoryEntry e;
    e.id = text(0);
    e.created = sqlite3_column_double(st, 1);
    e.model = text(2);
    e.prompt = text(3);
    e.params = nlohmann::json::parse(text(4), nullptr, false);
    nlohmann::json images = nlohmann::json::parse(text(5), nullptr, false);
    if (images.is_array()) {
      for (const auto& im : images) {
        HistoryImage h;
        h.file = im.value("file", "");
        h.seed = im.value("seed", int64_t{0});
        h.width = im.value("width", 0);
        h.height = im.value("height", 0);
        h.parameters = im.value("parameters", "");
        e.images.push_back(h);
      }
    }
    out.push_back(std::move(e));
  }
  sqlite3_finalize(st);
  return out;
}

int History::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_stmt* st = nullptr;
  int n = 0;
  if (sqlite3_prepare_v2(db_, "SELECT COUNT(*) FROM jobs", -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW) {
    n = sqlite3_column_int(st, 0);
  }
  sqlite3_finalize(st);
  return n;
}

}  // namespace diffuse::server
