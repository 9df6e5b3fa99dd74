// Containment seen from a run, over HTTP against a real `dex-shim serve`
// (DESIGN §5): no server fd reaches a run, a run sees no host process and
// no host file outside the read-only system folders, links planted by a run
// are never followed by dex, and `serve` refuses to start when it cannot
// build a sandbox.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/json_check.h"
#include "tests/test_util.h"

extern char** environ;

namespace dex::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A JSON string literal holding `text`.
std::string Quoted(const std::string& text) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  writer.String(text.c_str(), static_cast<rapidjson::SizeType>(text.size()));
  return buffer.GetString();
}

// A JSON list of strings.
std::string QuotedList(const std::vector<std::string>& items) {
  std::string out = "[";
  for (const std::string& item : items) {
    out += (out.size() > 1 ? "," : "") + Quoted(item);
  }
  return out + "]";
}

// Runs `script` (with `stdin_data`) to its end and returns GET /result.
rapidjson::Document RunScript(int port, const std::string& key,
                              const std::string& script,
                              const std::string& stdin_data = "") {
  std::string body = "{\"script\":" + Quoted(script);
  if (!stdin_data.empty()) body += ",\"stdin\":" + Quoted(stdin_data);
  body += "}";
  HttpReply run = Http(port, "POST", "/run", key, body);
  REQUIRE_MESSAGE(run.status == 202, run.body);
  std::string id = Str(Json(run.body), "execution_id");
  // Liveness bound only: these scripts end in well under a second.
  auto deadline = Clock::now() + std::chrono::seconds(60);
  std::string state;
  while (Clock::now() < deadline) {
    HttpReply status = Http(port, "GET", "/status/" + id, key);
    REQUIRE(status.status == 200);
    state = Str(Json(status.body), "status");
    if (state == "completed" || state == "failed") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  REQUIRE_MESSAGE(state == "completed", "run ended " << state);
  HttpReply result = Http(port, "GET", "/result/" + id, key);
  REQUIRE(result.status == 200);
  rapidjson::Document doc = Json(result.body);
  INFO("stderr of the run: " << Str(doc, "stderr"));
  REQUIRE(Str(doc, "reason") == "ok");
  REQUIRE(doc["exit_code"].GetInt() == 0);
  return doc;
}

// The run's stdout, parsed as the one JSON document it printed.
rapidjson::Document StdoutJson(const rapidjson::Document& result) {
  return Json(Str(result, "stdout"));
}

// A started server with a starter-plan user.
struct Fixture {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server{dir.path()};
};

TEST_CASE("containment: no fd of the server reaches a run") {
  Fixture f;
  REQUIRE(f.server.started());
  const std::string script = R"py(import json, os
fds = {}
for name in os.listdir('/proc/self/fd'):
    try:
        fds[name] = os.readlink('/proc/self/fd/' + name)
    except OSError as e:
        fds[name] = 'error %d' % e.errno
print(json.dumps(fds))
)py";
  for (const std::string& stdin_data : {std::string(), std::string("x\n")}) {
    rapidjson::Document fds =
        StdoutJson(RunScript(f.server.port(), f.key, script, stdin_data));
    int others = 0;
    for (const auto& m : fds.GetObject()) {
      std::string fd = m.name.GetString();
      std::string link = m.value.GetString();
      INFO("fd " << fd << " -> " << link);
      if (fd == "0" || fd == "1" || fd == "2") {
        CHECK(link.rfind("pipe:[", 0) == 0);
        continue;
      }
      // Only the directory os.listdir held, closed before readlink.
      ++others;
      CHECK((link == "error 2" || link.rfind("/proc/", 0) == 0));
      for (const std::string& bad :
           {std::string("socket:"), std::string("anon_inode"),
            std::string("memfd"), std::string(".mdb"), f.dir.path()}) {
        CHECK(link.find(bad) == std::string::npos);
      }
    }
    CHECK(fds.HasMember("0"));
    CHECK(fds.HasMember("1"));
    CHECK(fds.HasMember("2"));
    CHECK(others <= 1);
  }
}

TEST_CASE("containment: a run sees no host process and no host file") {
  Fixture f;
  REQUIRE(f.server.started());
  const std::vector<std::string> host_only = {
      "/root",        "/home",      "/var",       "/var/lib",
      "/etc/shadow",  "/opt",       "/srv",       "/run",
      "/etc/ssh",     "/dev/shm",   f.dir.path(), f.dir.path() + "/data.mdb",
      DEX_SOURCE_DIR, DEX_SHIM_PATH};
  const std::string script = R"py(import errno, json, os, sys
host_only = json.load(sys.stdin)
out = {}
out['self'] = os.getpid()
out['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
cmdlines = []
for p in out['pids']:
    with open('/proc/%d/cmdline' % p, 'rb') as f:
        cmdlines.append(f.read().decode('utf-8', 'replace'))
out['cmdlines'] = cmdlines
out['root'] = sorted(os.listdir('/'))
def create(path):
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        return 'created'
    except OSError as e:
        return errno.errorcode[e.errno]
def append(path):
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        return 'opened'
    except OSError as e:
        return errno.errorcode[e.errno]
dirs = ['/'] + ['/' + e for e in out['root']]
dirs += ['/usr/bin', '/usr/lib', '/usr/local', '/etc/python3']
out['create'] = {d: create(os.path.join(d, 'dex-probe')) for d in dirs}
out['append'] = {p: append(p) for p in (
    '/etc/passwd', '/etc/hosts', '/etc/ld.so.cache', '/usr/bin/python3',
    '/proc/sys/kernel/core_pattern',
    '/proc/sys/kernel/hostname')}
out['host_only'] = {p: os.path.lexists(p) for p in host_only}
print(json.dumps(out))
)py";
  rapidjson::Document seen = StdoutJson(
      RunScript(f.server.port(), f.key, script, QuotedList(host_only)));

  // hidepid=invisible: only the script itself, never init or the host.
  const rapidjson::Value& pids = seen["pids"];
  REQUIRE(pids.IsArray());
  CHECK(pids.Size() <= 3);
  REQUIRE(pids.Size() == 1);
  CHECK(pids[0].GetInt() == seen["self"].GetInt());
  for (const auto& pid : pids.GetArray()) {
    CHECK(pid.GetInt() != f.server.pid());
    CHECK(pid.GetInt() != 1);
  }
  for (const auto& cmdline : seen["cmdlines"].GetArray()) {
    std::string text = cmdline.GetString();
    INFO("cmdline " << text);
    CHECK(text.find("dex-shim") == std::string::npos);
    CHECK(text.find("dex-spawner") == std::string::npos);
    CHECK(text.rfind("/usr/bin/python3", 0) == 0);
  }

  // The new root of DESIGN §5: the system binds, a minimal /etc and /dev,
  // a fresh /proc, and the scratch /tmp and /work; nothing else.
  const std::set<std::string> allowed = {"usr",   "bin",   "sbin",   "lib",
                                         "lib32", "lib64", "libx32", "etc",
                                         "dev",   "proc",  "tmp",    "work"};
  std::set<std::string> root;
  for (const auto& e : seen["root"].GetArray()) root.insert(e.GetString());
  for (const std::string& entry : root) {
    CHECK_MESSAGE(allowed.count(entry), "unexpected /" << entry);
  }
  for (const char* needed : {"usr", "etc", "dev", "proc", "tmp", "work"}) {
    CHECK_MESSAGE(root.count(needed), "no /" << needed);
  }

  // Only the scratch tmpfs is writable; every other folder is read-only
  // (EROFS) or not ours (EACCES). procfs cannot create files at all.
  for (const auto& m : seen["create"].GetObject()) {
    std::string dir = m.name.GetString();
    std::string got = m.value.GetString();
    INFO("creating a file in " << dir << ": " << got);
    if (dir == "/tmp" || dir == "/work") {
      CHECK(got == "created");
    } else if (dir == "/proc") {
      CHECK(got == "ENOENT");
    } else {
      CHECK((got == "EROFS" || got == "EACCES"));
    }
  }
  for (const auto& m : seen["append"].GetObject()) {
    std::string path = m.name.GetString();
    std::string got = m.value.GetString();
    INFO("opening " << path << " for writing: " << got);
    CHECK((got == "EROFS" || got == "EACCES"));
  }
  for (const auto& m : seen["host_only"].GetObject()) {
    CHECK_MESSAGE(!m.value.GetBool(), m.name.GetString() << " is visible");
  }
  CHECK(seen["host_only"].MemberCount() == host_only.size());
}

struct FileState {
  std::string content;
  timespec mtime = {};
  mode_t mode = 0;
  nlink_t links = 0;
};

FileState StateOf(const std::string& path) {
  struct stat st = {};
  REQUIRE(lstat(path.c_str(), &st) == 0);
  return {ReadFile(path), st.st_mtim, st.st_mode, st.st_nlink};
}

void CheckUnchanged(const std::string& path, const FileState& before) {
  FileState after = StateOf(path);
  INFO(path);
  CHECK(after.content == before.content);
  CHECK(after.mtime.tv_sec == before.mtime.tv_sec);
  CHECK(after.mtime.tv_nsec == before.mtime.tv_nsec);
  CHECK(after.mode == before.mode);
  CHECK(after.links == before.links);
}

TEST_CASE("containment: links planted by a run are never followed by dex") {
  Fixture f;
  REQUIRE(f.server.started());
  TempDir host;
  const std::string canary = host.path() + "/canary.txt";
  {
    std::ofstream out(canary, std::ios::binary);
    out << "canary: dex must never write here\n";
  }
  // A fixed old mtime, so any write shows whatever the clock's resolution.
  timespec old[2] = {{978307200, 0}, {978307200, 0}};
  REQUIRE(utimensat(AT_FDCWD, canary.c_str(), old, 0) == 0);
  FileState canary_before = StateOf(canary);
  FileState passwd_before = StateOf("/etc/passwd");

  // Every name dex, its janitor or a careless host tool might touch: output
  // and result files, the script itself, core dumps, and folder links.
  const std::vector<std::string> names = {
      "main.py.out", "stdout.txt", "stderr.txt", "stdout", "stderr", "stdin",
      "result.json", "status",     "exit_code",  "run.sh", "output", "input",
      "script.py",   "dex-script", ".dex",       "core",   "log",    "out"};
  const std::string script = R"py(import json, os, sys
plan = json.load(sys.stdin)
planted = 0
for folder, target in (('/work', plan['canary']), ('/tmp', '/etc/passwd'),
                       ('/work/sub', plan['canary'])):
    os.makedirs(folder, exist_ok=True)
    for name in plan['names']:
        os.symlink(target, os.path.join(folder, name))
        planted += 1
os.symlink(plan['canary_dir'], '/work/host-dir')
os.symlink(plan['canary'], '/work/main.py.new')
os.replace('/work/main.py.new', '/work/main.py')
planted += 2
print('planted', planted)
sys.stderr.write('links left behind\n')
)py";
  std::string plan = "{\"canary\":" + Quoted(canary) +
                     ",\"canary_dir\":" + Quoted(host.path()) +
                     ",\"names\":" + QuotedList(names) + "}";
  rapidjson::Document result = RunScript(f.server.port(), f.key, script, plan);
  CHECK(Str(result, "stdout") ==
        "planted " + std::to_string(3 * names.size() + 2) + "\n");
  CHECK(Str(result, "stderr") == "links left behind\n");

  CheckUnchanged(canary, canary_before);
  CheckUnchanged("/etc/passwd", passwd_before);
  std::vector<std::string> beside;
  for (const auto& e : std::filesystem::directory_iterator(host.path())) {
    beside.push_back(e.path().filename().string());
  }
  CHECK(beside == std::vector<std::string>{"canary.txt"});

  // The server is unharmed and the next run is normal.
  rapidjson::Document next =
      RunScript(f.server.port(), f.key, "print(open('main.py').read()[:5])\n");
  CHECK(Str(next, "stdout") == "print\n");
  CheckUnchanged(canary, canary_before);
}

// ---- Start-up self-check. ----

struct ServeExit {
  int status = -1;  // as from waitpid; -1: did not exit in time
  std::string out;
  std::string err;
};

// Runs `dex-shim serve` over `data_dir` with DEX_SPAWNER set to `spawner`
// (the rest of the environment inherited) until it exits, at most 60 s.
ServeExit ServeWithSpawner(const std::string& data_dir,
                           const std::string& spawner) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "DEX_SPAWNER=", 12) != 0) env.push_back(*e);
  }
  env.push_back("DEX_SPAWNER=" + spawner);
  std::vector<std::string> args = {DEX_SHIM_PATH, "serve",    "--data",
                                   data_dir,      "--listen", "127.0.0.1:0"};
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  int out_pipe[2], err_pipe[2];
  REQUIRE(pipe2(out_pipe, O_CLOEXEC) == 0);
  REQUIRE(pipe2(err_pipe, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  pid_t pid = -1;
  int rc =
      posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(out_pipe[1]);
  close(err_pipe[1]);
  REQUIRE(rc == 0);

  ServeExit result;
  std::string* sinks[2] = {&result.out, &result.err};
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while ((fds[0].fd >= 0 || fds[1].fd >= 0) && Clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - Clock::now());
    if (poll(fds, 2, static_cast<int>(left.count()) + 1) < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, n);
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
      }
    }
  }
  bool ended = fds[0].fd < 0 && fds[1].fd < 0;
  for (const pollfd& p : fds) {
    if (p.fd >= 0) close(p.fd);
  }
  if (!ended) kill(pid, SIGKILL);  // our own child, still serving
  int status = 0;
  waitpid(pid, &status, 0);
  result.status = ended ? status : -1;
  return result;
}

// serve exited non-zero, printed nothing on stdout, and said `cause` on
// stderr.
void CheckRefusedToStart(const ServeExit& r, const std::string& cause) {
  INFO("stderr: " << r.err);
  REQUIRE_MESSAGE(r.status != -1, "serve kept running");
  CHECK(WIFEXITED(r.status));
  CHECK(WEXITSTATUS(r.status) != 0);
  CHECK(r.out.empty());
  CHECK(r.err.find("dex-shim serve: ") != std::string::npos);
  CHECK(r.err.find(cause) != std::string::npos);
}

TEST_CASE("start-up: serve refuses to start without a spawner") {
  TempDir dir;
  CheckRefusedToStart(ServeWithSpawner(dir.path(), "/nonexistent/dex-spawner"),
                      "no dex-spawner at /nonexistent/dex-spawner");
}

TEST_CASE("start-up: serve refuses to start when a sandbox fails its check") {
  // An executable that is no spawner: it exits at once, so the self-check's
  // run gets no sandbox.
  TempDir dir;
  CheckRefusedToStart(ServeWithSpawner(dir.path(), "/bin/true"),
                      "sandbox self-check: ");
}

}  // namespace
}  // namespace dex::test
