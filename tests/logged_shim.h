// A `dex-shim serve` child whose stderr (its log) goes to a file, for the
// tests that read the log: log_test, metrics_test, config_test. Like
// ShimServer, it binds 127.0.0.1 port 0 and waits for the readiness line.
#ifndef DEX_TESTS_LOGGED_SHIM_H_
#define DEX_TESTS_LOGGED_SHIM_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace dex::test {

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

inline std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class LoggedShim {
 public:
  // Runs `dex-shim serve` with `args` after "serve" (the caller passes
  // --data and --listen, or --config), stderr appended to `log_path`.
  LoggedShim(const std::vector<std::string>& args,
             const std::string& log_path) {
    std::vector<std::string> all = {DEX_SHIM_PATH, "serve"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
    posix_spawn_file_actions_addopen(&actions, 2, log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
    int rc =
        posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out_pipe[1]);
    if (rc != 0) {
      pid_ = -1;
      close(out_pipe[0]);
      return;
    }
    std::string line;
    while (line.find('\n') == std::string::npos) {
      struct pollfd pfd = {out_pipe[0], POLLIN, 0};
      if (poll(&pfd, 1, 30'000) <= 0) break;
      char c;
      if (read(out_pipe[0], &c, 1) != 1) break;
      line.push_back(c);
    }
    close(out_pipe[0]);
    size_t colon = line.rfind(':');
    if (line.rfind("listening on http://", 0) == 0 &&
        colon != std::string::npos) {
      port_ = std::atoi(line.c_str() + colon + 1);
    }
  }
  ~LoggedShim() { Stop(); }
  LoggedShim(const LoggedShim&) = delete;
  LoggedShim& operator=(const LoggedShim&) = delete;

  int port() const { return port_; }

  // SIGTERM, then waits (SIGKILL after 20 s); the log is complete after.
  // Returns the exit code, or -1.
  int Stop() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 2000 && waitpid(pid_, &status, WNOHANG) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (i == 1999) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
      }
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace dex::test

#endif  // DEX_TESTS_LOGGED_SHIM_H_
