#include "io/file_io.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

namespace diffuse {

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ErrorCode code = errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo;
    throw_error(code, path + ": cannot open: " + std::strerror(errno));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw_error(ErrorCode::kIo, path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw_error(ErrorCode::kIo, path + ": not a regular file");
  }
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      throw_error(ErrorCode::kIo, path + ": mmap of " + std::to_string(f->size_) + " bytes failed: " + std::strerror(err));
    }
    f->data_ = static_cast<uint8_t*>(p);
  }
  ::close(fd);  // the mapping stays valid without the descriptor
  return f;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

AtomicFile::AtomicFile(const std::string& path) : path_(path), temp_path_(path + ".tmp-XXXXXX") {
  fd_ = ::mkstemp(temp_path_.data());
  if (fd_ < 0)
    throw_error(ErrorCode::kIo, path + ": cannot create a temporary file beside it: " + std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_path_.c_str());
  }
}

void AtomicFile::fail(const std::string& what, int err) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(temp_path_.c_str());
  throw_error(ErrorCode::kIo, path_ + ": " + what + ": " + std::strerror(err));
}

void AtomicFile::write(const void* data, size_t size) {
  DIFFUSE_CHECK(fd_ >= 0, ErrorCode::kIo, path_ + ": write after commit or failure");
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("write failed", n < 0 ? errno : EIO);
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  DIFFUSE_CHECK(fd_ >= 0, ErrorCode::kIo, path_ + ": commit after commit or failure");
  // mkstemp creates 0600; outputs are meant to be shared like any written file.
  // (Reading the umask would mean setting it, which races with other threads.)
  ::fchmod(fd_, 0644);
  if (::fsync(fd_) != 0) fail("fsync failed", errno);
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) {
    int err = errno;
    ::unlink(temp_path_.c_str());
    throw_error(ErrorCode::kIo, path_ + ": close failed: " + std::strerror(err));
  }
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    ::unlink(temp_path_.c_str());
    throw_error(ErrorCode::kIo, path_ + ": rename from " + temp_path_ + " failed: " + std::strerror(err));
  }
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  AtomicFile f(path);
  f.write(data, size);
  f.commit();
}

std::string file_display_name(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace diffuse
