// Black-box tests of issue 5, "nothing acknowledged is lost; no tenant
// starves another": crash recovery, fairness, the bounded queue, queue
// deadlines, retention, graceful shutdown and a full store, each against
// a real dex-shim over a fresh folder. Time bounds are liveness bounds
// with ample headroom; readiness is always polled, never slept for.
#include <dirent.h>
#include <doctest/doctest.h>
#include <rapidjson/document.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dex/store.h"
#include "libdex/records.h"
#include "tests/json_check.h"
#include "tests/test_util.h"

namespace dex::test {
namespace {

using Clock = std::chrono::steady_clock;

// A JSON string literal of `text` (quotes, backslashes and newlines only;
// the scripts here use nothing else that needs escaping).
std::string Quote(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string RunBody(const std::string& script) {
  return "{\"script\":" + Quote(script) + "}";
}

// A user on plan "big" (plenty of quota) allowed `concurrent` runs at once.
std::string BigUser(const std::string& data, int concurrent = 64) {
  auto plan =
      RunShim({"plan", "set", "--data", data, "big", "--quota", "100000",
               "--max-concurrent", std::to_string(concurrent)});
  REQUIRE_MESSAGE(plan.exit_code == 0, plan.err);
  return CreateUser(data, "big");
}

std::string Submit(int port, const std::string& key, const std::string& script,
                   HttpReply* reply_out = nullptr) {
  HttpReply reply = Http(port, "POST", "/run", key, RunBody(script));
  if (reply_out) *reply_out = reply;
  if (reply.status != 202) return "";
  return Str(Json(reply.body), "execution_id");
}

std::string State(int port, const std::string& key, const std::string& id) {
  HttpReply reply = Http(port, "GET", "/status/" + id, key);
  if (reply.status != 200) return "http " + std::to_string(reply.status);
  return Str(Json(reply.body), "status");
}

bool Terminal(const std::string& state) {
  return state == "completed" || state == "failed";
}

// Polls until the run is terminal; its last state either way.
std::string AwaitTerminal(int port, const std::string& key,
                          const std::string& id, int seconds = 120) {
  auto deadline = Clock::now() + std::chrono::seconds(seconds);
  std::string state;
  do {
    state = State(port, key, id);
    if (Terminal(state)) return state;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (Clock::now() < deadline);
  return state;
}

// Polls until the run has the given state (or is terminal).
std::string AwaitState(int port, const std::string& key, const std::string& id,
                       const std::string& wanted, int seconds = 60) {
  auto deadline = Clock::now() + std::chrono::seconds(seconds);
  std::string state;
  do {
    state = State(port, key, id);
    if (state == wanted || Terminal(state)) return state;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  } while (Clock::now() < deadline);
  return state;
}

rapidjson::Document Result(int port, const std::string& key,
                           const std::string& id) {
  HttpReply reply = Http(port, "GET", "/result/" + id, key);
  REQUIRE_MESSAGE(reply.status == 200, reply.body);
  return Json(reply.body);
}

int64_t Usage(int port, const std::string& key) {
  HttpReply reply = Http(port, "GET", "/me", key);
  REQUIRE(reply.status == 200);
  return Int(Json(reply.body), "usage_this_period");
}

// The executions' states as stored, read through the library while no
// server runs.
std::map<std::string, ExecState> StoredStates(
    const std::string& data, const std::vector<std::string>& ids) {
  StoreOptions options;
  options.path = data;
  auto store = Store::Open(options);
  REQUIRE_MESSAGE(store.ok(), store.status().ToString());
  auto txn = (*store)->BeginRead();
  REQUIRE(txn.ok());
  std::map<std::string, ExecState> states;
  for (const std::string& id : ids) {
    std::string bytes;
    REQUIRE(txn->Get(Table::kExecutions, id, &bytes).ok());
    Execution e;
    REQUIRE(internal::DecodeExecution(bytes, &e).ok());
    states[id] = e.state;
  }
  return states;
}

// The children of `parent` (for dex-shim: its dex-spawner).
std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> children;
  DIR* proc = opendir("/proc");
  if (!proc) return children;
  while (dirent* entry = readdir(proc)) {
    pid_t pid = atoi(entry->d_name);
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // pid (comm) state ppid ...; comm may hold spaces, so parse after ')'.
    size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) == 2 &&
        ppid == parent) {
      children.push_back(pid);
    }
  }
  closedir(proc);
  return children;
}

// True once none of `pids` is alive (zombies of other parents count as
// gone), polling for up to `seconds`.
bool AllGone(const std::vector<pid_t>& pids, int seconds) {
  auto deadline = Clock::now() + std::chrono::seconds(seconds);
  for (;;) {
    bool alive = false;
    for (pid_t pid : pids) {
      std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
      std::string line;
      if (std::getline(stat, line) && line.rfind(')') != std::string::npos &&
          line[line.rfind(')') + 2] != 'Z') {
        alive = true;
      }
    }
    if (!alive) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

bool ExitedZero(int status) {
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST_CASE("every acknowledged run survives a SIGKILL, charged exactly once") {
  TempDir dir;
  std::string key = BigUser(dir.path());
  constexpr int kRuns = 200;
  // Every request carries an Idempotency-Key, so the requests that got no
  // answer can be replayed after the restart: a stored one answers with
  // its first id and charges nothing, a lost one is stored anew.
  std::vector<std::string> ids(kRuns);
  std::vector<int> statuses(kRuns, 0);
  {
    ShimServer server(dir.path(), {"--workers", "2", "--log-level", "warn"});
    REQUIRE(server.started());
    std::atomic<int> next{0}, acked{0};
    std::vector<std::thread> clients;
    for (int c = 0; c < 4; ++c) {
      clients.emplace_back([&] {
        for (int i; (i = next++) < kRuns;) {
          HttpReply reply =
              Http(server.port(), "POST", "/run", key,
                   RunBody("print(" + std::to_string(i) + ")"),
                   {{"Idempotency-Key", "run-" + std::to_string(i)}});
          statuses[i] = reply.status;
          if (reply.status == 202) {
            ids[i] = Str(Json(reply.body), "execution_id");
            ++acked;
          }
        }
      });
    }
    // Kill part-way: runs are queued, running and being submitted.
    auto deadline = Clock::now() + std::chrono::seconds(120);
    while (acked < kRuns / 2 && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::vector<pid_t> helpers = ChildrenOf(server.pid());
    server.Kill();
    for (auto& t : clients) t.join();
    // A crashed server must not leave its spawner (and so sandboxes)
    // behind. Whatever is left is ended here, so the suite cannot hang on
    // a leftover holding its output pipe.
    bool gone = AllGone(helpers, 15);
    CHECK_MESSAGE(gone, "dex-spawner outlived its SIGKILLed server");
    if (!gone) {
      for (pid_t pid : helpers) kill(pid, SIGKILL);
    }
  }
  int acknowledged = 0;
  for (int i = 0; i < kRuns; ++i) {
    CHECK_MESSAGE((statuses[i] == 202 || statuses[i] == 0),
                  "run " << i << " answered " << statuses[i]);
    if (statuses[i] == 202) ++acknowledged;
  }
  CHECK(acknowledged >= kRuns / 2);
  CHECK(acknowledged < kRuns);  // the kill came part-way

  ShimServer server(dir.path(), {"--workers", "2", "--log-level", "warn"});
  REQUIRE(server.started());
  for (int i = 0; i < kRuns; ++i) {
    if (statuses[i] == 202) continue;
    HttpReply reply = Http(server.port(), "POST", "/run", key,
                           RunBody("print(" + std::to_string(i) + ")"),
                           {{"Idempotency-Key", "run-" + std::to_string(i)}});
    REQUIRE_MESSAGE(reply.status == 202, reply.body);
    ids[i] = Str(Json(reply.body), "execution_id");
  }
  int completed = 0, interrupted = 0;
  for (int i = 0; i < kRuns; ++i) {
    std::string state = AwaitTerminal(server.port(), key, ids[i]);
    REQUIRE_MESSAGE(Terminal(state), "run " << i << " is " << state);
    auto result = Result(server.port(), key, ids[i]);
    if (state == "completed") {
      ++completed;
      CHECK(Str(result, "stdout") == std::to_string(i) + "\n");
    } else {
      ++interrupted;
      CHECK(Str(result, "detail") == "interrupted");
      CHECK(statuses[i] == 202);  // only a run of the killed server
    }
  }
  MESSAGE(acknowledged << " acknowledged before the kill; " << completed
                       << " completed, " << interrupted << " interrupted");
  // Completed runs are charged once; interrupted ones are refunded.
  CHECK(Usage(server.port(), key) == completed);
}

TEST_CASE("one user's burst does not starve another user's single run") {
  TempDir dir;
  std::string key_a = BigUser(dir.path());
  std::string key_b = CreateUser(dir.path(), "big");
  ShimServer server(dir.path(), {"--workers", "2", "--log-level", "warn",
                                 "--shutdown-grace-ms", "1000"});
  REQUIRE(server.started());
  // Four clients, so few of A's runs end while A is still submitting.
  std::atomic<int> next{0}, accepted{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      while (next++ < 100) {
        if (!Submit(server.port(), key_a, "import time\ntime.sleep(0.5)")
                 .empty()) {
          ++accepted;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  REQUIRE(accepted == 100);
  HttpReply reply = Http(server.port(), "POST", "/run?wait=true", key_b,
                         RunBody("print('b')"));
  REQUIRE_MESSAGE(reply.status == 200, reply.body);
  auto result = Json(reply.body);
  CHECK(Str(result, "status") == "completed");
  CHECK(Str(result, "stdout") == "b\n");
  // Most of A's runs are still waiting.
  auto health = Json(Http(server.port(), "GET", "/healthz").body);
  CHECK(Int(health, "queue_depth") >= 50);
}

TEST_CASE("a full queue answers 503 unavailable with Retry-After, free") {
  TempDir dir;
  std::string key = BigUser(dir.path(), 1);
  ShimServer server(
      dir.path(), {"--workers", "1", "--max-queued", "3", "--log-level", "warn",
                   "--shutdown-grace-ms", "500"});
  REQUIRE(server.started());
  int accepted = 0;
  HttpReply refused;
  for (int i = 0; i < 10; ++i) {
    HttpReply reply;
    Submit(server.port(), key, "import time\ntime.sleep(5)", &reply);
    if (reply.status != 202) {
      refused = reply;
      break;
    }
    ++accepted;
  }
  // Three queued, plus at most the one the worker took.
  CHECK(accepted >= 3);
  CHECK(accepted <= 4);
  CHECK(refused.status == 503);
  CHECK(Str(Json(refused.body), "code") == "unavailable");
  CHECK(!refused.Header("retry-after").empty());
  CHECK(Usage(server.port(), key) == accepted);
}

TEST_CASE("a run queued past the deadline fails as queue_timeout, refunded") {
  TempDir dir;
  std::string key = BigUser(dir.path(), 1);
  ShimServer server(dir.path(), {"--workers", "1", "--queue-timeout-ms", "1000",
                                 "--log-level", "warn"});
  REQUIRE(server.started());
  std::string slow =
      Submit(server.port(), key, "import time\ntime.sleep(4)\nprint('slow')");
  REQUIRE(!slow.empty());
  std::string waiting = Submit(server.port(), key, "print(1)");
  REQUIRE(!waiting.empty());
  CHECK(AwaitTerminal(server.port(), key, waiting) == "failed");
  auto result = Result(server.port(), key, waiting);
  CHECK(Str(result, "detail") == "queue_timeout");
  CHECK(Str(result, "reason") == "sandbox_error");
  CHECK(AwaitTerminal(server.port(), key, slow) == "completed");
  CHECK(Usage(server.port(), key) == 1);  // the slow run only
}

TEST_CASE("a finished run is purged after the retention time") {
  TempDir dir;
  std::string key = BigUser(dir.path());
  ShimServer server(dir.path(),
                    {"--retention-ms", "500", "--log-level", "warn"});
  REQUIRE(server.started());
  std::string id = Submit(server.port(), key, "print(1)");
  REQUIRE(!id.empty());
  CHECK(AwaitTerminal(server.port(), key, id) == "completed");
  auto deadline = Clock::now() + std::chrono::seconds(60);
  int status = 200;
  while (status != 404 && Clock::now() < deadline) {
    status = Http(server.port(), "GET", "/status/" + id, key).status;
    if (status != 404) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  CHECK(status == 404);
  CHECK(Http(server.port(), "GET", "/result/" + id, key).status == 404);
}

TEST_CASE("SIGTERM lets the running run finish and keeps queued runs") {
  TempDir dir;
  std::string key = BigUser(dir.path(), 1);
  std::string running;
  std::vector<std::string> queued;
  {
    ShimServer server(dir.path(), {"--workers", "1", "--log-level", "warn"});
    REQUIRE(server.started());
    running = Submit(server.port(), key,
                     "import time\ntime.sleep(1.5)\nprint('finished')");
    REQUIRE(!running.empty());
    REQUIRE(AwaitState(server.port(), key, running, "running") == "running");
    for (int i = 0; i < 2; ++i) {
      queued.push_back(
          Submit(server.port(), key, "print(" + std::to_string(i) + ")"));
      REQUIRE(!queued.back().empty());
    }
    CHECK(ExitedZero(server.Stop()));
  }
  auto states = StoredStates(dir.path(), {running, queued[0], queued[1]});
  CHECK(states[running] == ExecState::kCompleted);
  CHECK(states[queued[0]] == ExecState::kQueued);
  CHECK(states[queued[1]] == ExecState::kQueued);

  ShimServer server(dir.path(), {"--workers", "1", "--log-level", "warn"});
  REQUIRE(server.started());
  CHECK(Str(Result(server.port(), key, running), "stdout") == "finished\n");
  for (int i = 0; i < 2; ++i) {
    CHECK(AwaitTerminal(server.port(), key, queued[i]) == "completed");
    CHECK(Str(Result(server.port(), key, queued[i]), "stdout") ==
          std::to_string(i) + "\n");
  }
  CHECK(Usage(server.port(), key) == 3);
}

TEST_CASE("SIGTERM exits within the grace even when a run outlasts it") {
  TempDir dir;
  std::string key = BigUser(dir.path(), 1);
  std::string slow;
  {
    ShimServer server(dir.path(), {"--workers", "1", "--log-level", "warn",
                                   "--shutdown-grace-ms", "300"});
    REQUIRE(server.started());
    slow = Submit(server.port(), key, "import time\ntime.sleep(20)");
    REQUIRE(!slow.empty());
    REQUIRE(AwaitState(server.port(), key, slow, "running") == "running");
    auto start = Clock::now();
    CHECK(ExitedZero(server.Stop()));
    CHECK(Clock::now() - start < std::chrono::seconds(10));
  }
  ShimServer server(dir.path(), {"--workers", "1", "--log-level", "warn"});
  REQUIRE(server.started());
  CHECK(State(server.port(), key, slow) == "failed");
  CHECK(Str(Result(server.port(), key, slow), "detail") == "interrupted");
  CHECK(Usage(server.port(), key) == 0);
}

TEST_CASE("a full store answers 503 to new runs and keeps serving reads") {
  TempDir dir;
  std::string key = BigUser(dir.path(), 1);
  const std::vector<std::string> args = {
      "--workers",   "1",     "--max-store-mb",      "1",
      "--log-level", "error", "--shutdown-grace-ms", "300"};
  // Scripts of 100 KiB wait in the queue behind a slow run until the
  // 1 MiB store has no room for another.
  const std::string big = "print('big')\n#" + std::string(100 << 10, 'x');
  std::string slow;
  std::vector<std::string> stored;
  {
    ShimServer server(dir.path(), args);
    REQUIRE(server.started());
    slow = Submit(server.port(), key, "import time\ntime.sleep(20)");
    REQUIRE(!slow.empty());
    HttpReply refused;
    for (int i = 0; i < 40; ++i) {
      HttpReply reply;
      std::string id = Submit(server.port(), key, big, &reply);
      if (id.empty()) {
        refused = reply;
        break;
      }
      stored.push_back(id);
    }
    CHECK(stored.size() >= 2);
    REQUIRE(refused.status == 503);
    auto problem = Json(refused.body);
    CHECK(Str(problem, "code") == "unavailable");
    CHECK(Str(problem, "detail").find("full") != std::string::npos);
    CHECK(!refused.Header("retry-after").empty());
    // Reads keep working, and so does the refusal.
    CHECK(Http(server.port(), "GET", "/me", key).status == 200);
    CHECK(Http(server.port(), "GET", "/status/" + slow, key).status == 200);
    CHECK(Http(server.port(), "GET", "/status/" + stored[0], key).status ==
          200);
    CHECK(Http(server.port(), "POST", "/run", key, RunBody(big)).status == 503);
    CHECK(Usage(server.port(), key) == static_cast<int64_t>(stored.size()) + 1);
    CHECK(ExitedZero(server.Stop()));
  }
  // The store opens again; the slow run was interrupted and refunded, the
  // queued ones run, and their scripts' room takes new work again.
  ShimServer server(dir.path(), args);
  REQUIRE(server.started());
  CHECK(AwaitTerminal(server.port(), key, slow) == "failed");
  for (const std::string& id : stored) {
    CHECK(AwaitTerminal(server.port(), key, id) == "completed");
  }
  CHECK(Str(Result(server.port(), key, stored.back()), "stdout") == "big\n");
  CHECK(Usage(server.port(), key) == static_cast<int64_t>(stored.size()));
  CHECK(!Submit(server.port(), key, "print(2)").empty());
}

}  // namespace
}  // namespace dex::test
