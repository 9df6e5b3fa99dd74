// Shared test fixtures: fresh temporary folders, a settable clock, and a
// real dex-shim server started on port 0.
#ifndef DEX_TESTS_TEST_UTIL_H_
#define DEX_TESTS_TEST_UTIL_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dex/env.h"

namespace dex::test {

// A fresh folder under $TMPDIR (or /tmp), removed with its contents when
// destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A clock the test sets. Thread-safe.
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t now_ms) : now_ms_(now_ms) {}
  int64_t NowMs() override { return now_ms_.load(); }
  void Set(int64_t now_ms) { now_ms_ = now_ms; }
  void Advance(int64_t delta_ms) { now_ms_ += delta_ms; }

 private:
  std::atomic<int64_t> now_ms_;
};

// Unix ms of a UTC calendar time.
int64_t UtcMs(int year, int month, int day, int hour = 0, int minute = 0,
              int second = 0);

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs the dex-shim binary with `args` (no shell) and captures its output.
CommandResult RunShim(const std::vector<std::string>& args);

// A `dex-shim serve` child on 127.0.0.1 port 0 over `data_dir`. The
// constructor waits for its "listening on" line; the destructor sends
// SIGTERM and reaps it (SIGKILL after 20 s).
class ShimServer {
 public:
  explicit ShimServer(const std::string& data_dir,
                      const std::vector<std::string>& extra_args = {});
  ~ShimServer();
  ShimServer(const ShimServer&) = delete;
  ShimServer& operator=(const ShimServer&) = delete;

  bool started() const { return port_ > 0; }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& host() const { return host_; }
  // The line printed on stdout, e.g. "listening on http://127.0.0.1:4711".
  const std::string& ready_line() const { return ready_line_; }
  // Sends SIGTERM and waits; returns the exit status as from waitpid.
  int Stop();
  // Sends SIGKILL and waits.
  void Kill();

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string host_ = "127.0.0.1";
  std::string ready_line_;
};

struct HttpReply {
  int status = 0;  // 0: no answer (connection error)
  std::string body;
  std::multimap<std::string, std::string> headers;  // lower-case names
  std::string Header(const std::string& lower_name) const;
};

// One HTTP request to 127.0.0.1:port. `key` empty means no Authorization.
HttpReply Http(int port, const std::string& method, const std::string& path,
               const std::string& key = "", const std::string& body = "",
               const std::map<std::string, std::string>& headers = {});

// Creates a user on `plan` through the admin command line; returns the raw
// key and sets *user_id.
std::string CreateUser(const std::string& data_dir, const std::string& plan,
                       std::string* user_id = nullptr);

}  // namespace dex::test

#endif  // DEX_TESTS_TEST_UTIL_H_
