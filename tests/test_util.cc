#include "tests/test_util.h"

#include <fcntl.h>
#include <httplib.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace dex::test {
namespace {

std::string ReadAll(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      out.append(buf, n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return out;
    }
  }
}

std::vector<char*> Argv(std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return argv;
}

}  // namespace

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string tmpl =
      std::string(base && *base ? base : "/tmp") + "/dex-test-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

int64_t UtcMs(int year, int month, int day, int hour, int minute, int second) {
  struct tm tm = {};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

CommandResult RunShim(const std::vector<std::string>& args) {
  std::vector<std::string> all = {DEX_SHIM_PATH};
  all.insert(all.end(), args.begin(), args.end());
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe failed");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  pid_t pid;
  auto argv = Argv(all);
  int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (rc != 0) throw std::runtime_error("posix_spawn dex-shim failed");
  CommandResult result;
  std::thread err_reader([&] { result.err = ReadAll(err_pipe[0]); });
  result.out = ReadAll(out_pipe[0]);
  err_reader.join();
  close(out_pipe[0]);
  close(err_pipe[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code =
      WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

ShimServer::ShimServer(const std::string& data_dir,
                       const std::vector<std::string>& extra_args) {
  std::vector<std::string> all = {DEX_SHIM_PATH, "serve",    "--data",
                                  data_dir,      "--listen", "127.0.0.1:0"};
  all.insert(all.end(), extra_args.begin(), extra_args.end());
  int out_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  auto argv = Argv(all);
  int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out_pipe[1]);
  if (rc != 0) {
    close(out_pipe[0]);
    pid_ = -1;
    return;
  }
  // Reads the first line, waiting at most 30 s for readiness.
  std::string line;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (line.find('\n') == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    struct pollfd pfd = {out_pipe[0], POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) break;
    char c;
    if (read(out_pipe[0], &c, 1) != 1) break;
    line.push_back(c);
  }
  close(out_pipe[0]);
  if (!line.empty() && line.back() == '\n') line.pop_back();
  ready_line_ = line;
  auto colon = line.rfind(':');
  if (line.rfind("listening on http://", 0) == 0 &&
      colon != std::string::npos) {
    port_ = atoi(line.c_str() + colon + 1);
  }
}

ShimServer::~ShimServer() {
  if (pid_ > 0) Stop();
}

int ShimServer::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 2000; ++i) {
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

void ShimServer::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string HttpReply::Header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? "" : it->second;
}

HttpReply Http(int port, const std::string& method, const std::string& path,
               const std::string& key, const std::string& body,
               const std::map<std::string, std::string>& headers) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(60, 0);
  httplib::Headers h;
  if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
  for (auto& [k, v] : headers) h.emplace(k, v);
  httplib::Request req;
  req.method = method;
  req.path = path;
  req.headers = h;
  req.body = body;
  if (!body.empty() && !headers.count("Content-Type")) {
    req.headers.emplace("Content-Type", "application/json");
  }
  auto res = client.send(req);
  HttpReply reply;
  if (!res) return reply;
  reply.status = res->status;
  reply.body = res->body;
  for (auto& [k, v] : res->headers) {
    std::string lower = k;
    for (auto& c : lower) c = static_cast<char>(tolower(c));
    reply.headers.emplace(lower, v);
  }
  return reply;
}

std::string CreateUser(const std::string& data_dir, const std::string& plan,
                       std::string* user_id) {
  auto r = RunShim({"user", "create", "--data", data_dir, "--plan", plan});
  if (r.exit_code != 0) throw std::runtime_error("user create: " + r.err);
  rapidjson::Document doc;
  doc.Parse(r.out.c_str());
  if (doc.HasParseError() || !doc.IsObject()) {
    throw std::runtime_error("user create printed: " + r.out);
  }
  if (user_id) *user_id = doc["user_id"].GetString();
  return doc["api_key"].GetString();
}

}  // namespace dex::test
