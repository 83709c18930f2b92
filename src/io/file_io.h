// File helpers shared by the readers and writers of src/io.
//
// MappedFile: a read-only view of a whole file through mmap, shared by the tensors that
// point into it (Tensor::from_blob owner). Private copy-on-write mapping: a
// stray in-place write to a loaded weight changes this process only, never the
// file, and never faults.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace diffuse {

class MappedFile {
 public:
  // Throws Error(kIo) naming the path when the file cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Writes to a temporary file beside `path`; commit() fsyncs it and renames it
// over `path`, so readers never see a half-written file. Destroying an
// uncommitted AtomicFile removes the temporary. Throws Error(kIo).
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, size_t size);
  void commit();

 private:
  [[noreturn]] void fail(const std::string& what, int err);
  std::string path_, temp_path_;
  int fd_ = -1;
};

void write_file_atomic(const std::string& path, const void* data, size_t size);

// The file name without directories, for error messages ("model.safetensors").
std::string file_display_name(const std::string& path);

}  // namespace diffuse
