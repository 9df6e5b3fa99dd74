// Replays every case of tests/cases/runs.jsonl (see tests/cases/README.md)
// against one real `dex-shim serve` as a starter-plan user, one SUBCASE per
// case id. The replay is driven by the file alone: a new case needs no code,
// and an expect key the checker does not know fails the case. After the
// replay, nothing a run started may be alive, no mount may be left on the
// host and no request may have gone unanswered.
#include <doctest/doctest.h>
#include <httplib.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_util.h"

namespace dex::test {
namespace {

using Clock = std::chrono::steady_clock;

const std::string kCasesPath =
    std::string(DEX_SOURCE_DIR) + "/tests/cases/runs.jsonl";
// Cases dex's own testing found, kept apart so that runs.jsonl stays a
// byte-exact copy of the shared list. Replayed the same way.
const std::string kFoundCasesPath =
    std::string(DEX_SOURCE_DIR) + "/tests/cases/found.jsonl";
const std::string kSharedCasesPath =
    std::string(DEX_SOURCE_DIR) + "/../shared/cases/runs.jsonl";

// SandboxOptions::host_id_base: every sandbox process runs under a host uid
// at or above it.
constexpr uint32_t kHostIdBase = 1'000'000'000;
// Liveness bounds only, with headroom for a loaded 2-core machine: a run
// that ends by itself is observed long before these.
constexpr auto kRunDeadline = std::chrono::seconds(240);
constexpr auto kLeftoverDeadline = std::chrono::seconds(10);
constexpr auto kPollInterval = std::chrono::milliseconds(25);
// probe_status_during: GET /status must answer within this while a run goes.
constexpr int64_t kStatusProbeMs = 1000;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string ToJson(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

// ---- Host-side views: sandbox processes and mounts. ----

struct HostProcess {
  pid_t pid = 0;
  pid_t ppid = 0;
  char state = '?';
  uint64_t max_uid = 0;  // largest of real, effective, saved and fs uid
  uint64_t min_uid = UINT64_MAX;  // smallest of them
  std::string name;
};

std::map<pid_t, HostProcess> ScanProcesses() {
  std::map<pid_t, HostProcess> all;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    std::string pid_text = entry.path().filename().string();
    if (pid_text.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    std::istringstream status(ReadFile(entry.path().string() + "/status"));
    HostProcess proc;
    proc.pid = std::stoi(pid_text);
    std::string line;
    while (std::getline(status, line)) {
      std::istringstream fields(line);
      std::string key;
      fields >> key;
      if (key == "Name:") {
        fields >> proc.name;
      } else if (key == "State:") {
        fields >> proc.state;
      } else if (key == "PPid:") {
        fields >> proc.ppid;
      } else if (key == "Uid:") {
        uint64_t uid;
        while (fields >> uid) {
          proc.max_uid = std::max(proc.max_uid, uid);
          proc.min_uid = std::min(proc.min_uid, uid);
        }
      }
    }
    if (proc.state != '?') all[proc.pid] = proc;  // gone while reading
  }
  return all;
}

bool DescendsFrom(const std::map<pid_t, HostProcess>& all, pid_t pid,
                  pid_t ancestor) {
  for (int depth = 0; depth < 4096 && pid > 1; ++depth) {
    auto it = all.find(pid);
    if (it == all.end()) return false;
    if (it->second.ppid == ancestor) return true;
    pid = it->second.ppid;
  }
  return false;
}

// A pre-built sandbox waiting in the spawner's pool (its init and the
// script process the zygote forked into it): named dex-idle, every uid the
// entry's own root id (an even offset from the base; a run's user 1000 has
// the odd one, and cannot rename init). No run started these; they end
// with the server (checked by "nothing is left once the server is gone").
bool IsIdlePoolMember(const HostProcess& proc) {
  return proc.name == "dex-idle" && proc.min_uid == proc.max_uid &&
         proc.max_uid >= kHostIdBase && (proc.max_uid - kHostIdBase) % 2 == 0;
}

// Every process under a sandbox host uid that descends from `server`, idle
// pool members included.
std::vector<HostProcess> AllSandboxProcessesOf(pid_t server) {
  std::vector<HostProcess> found;
  std::map<pid_t, HostProcess> all = ScanProcesses();
  for (const auto& [pid, proc] : all) {
    if (proc.max_uid >= kHostIdBase && DescendsFrom(all, pid, server)) {
      found.push_back(proc);
    }
  }
  return found;
}

// Processes that runs of `server` started: under a sandbox host uid,
// descending from `server`, not idle pool members. Other
// engineers' dex servers on this machine use the same uid range, so the
// uid alone cannot tell runs apart; every process of a run lives in that
// run's pid namespace, whose init is a child of our server's spawner until
// it exits (and its exit takes the whole namespace down).
std::vector<HostProcess> SandboxProcessesOf(pid_t server) {
  std::vector<HostProcess> found;
  for (const HostProcess& proc : AllSandboxProcessesOf(server)) {
    if (!IsIdlePoolMember(proc)) found.push_back(proc);
  }
  return found;
}

std::string Describe(const std::vector<HostProcess>& procs) {
  std::string text;
  for (const HostProcess& p : procs) {
    text += "pid " + std::to_string(p.pid) + " (" + p.name + ", state " +
            p.state + ", uid " + std::to_string(p.max_uid) + "); ";
  }
  return text;
}

// Waits (bounded) until no sandbox process of `server` is left, zombies
// awaiting their reaper included; returns what is still there.
std::vector<HostProcess> AwaitNoSandboxProcesses(pid_t server) {
  auto deadline = Clock::now() + kLeftoverDeadline;
  std::vector<HostProcess> left = SandboxProcessesOf(server);
  while (!left.empty() && Clock::now() < deadline) {
    std::this_thread::sleep_for(kPollInterval);
    left = SandboxProcessesOf(server);
  }
  return left;
}

std::multiset<std::string> MountLines() {
  std::istringstream in(ReadFile("/proc/self/mountinfo"));
  std::multiset<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.insert(line);
  return lines;
}

// ---- The server every case runs against, shared by the whole replay. ----

// One request to the server. When no answer came (status 0) the body names
// the transport error, which test_util's Http() does not keep.
HttpReply Send(int port, const std::string& key, const std::string& method,
               const std::string& path, const std::string& body) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(60, 0);
  httplib::Request req;
  req.method = method;
  req.path = path;
  req.headers.emplace("Authorization", "Bearer " + key);
  if (!body.empty()) {
    req.headers.emplace("Content-Type", "application/json");
    req.body = body;
  }
  HttpReply reply;
  httplib::Result res = client.send(req);
  if (!res) {
    reply.body = "(no HTTP answer: " + httplib::to_string(res.error()) + ")";
    return reply;
  }
  reply.status = res->status;
  reply.body = res->body;
  return reply;
}

// Counts every request that got no HTTP answer or a 5xx. Thread-safe.
class CountingClient {
 public:
  CountingClient(int port, std::string key) : port_(port), key_(key) {}

  HttpReply Call(const std::string& method, const std::string& path,
                 const std::string& body = "") {
    HttpReply reply = Send(port_, key_, method, path, body);
    if (reply.status == 0 || reply.status >= 500) {
      std::lock_guard<std::mutex> lock(mu_);
      failures_.push_back(method + " " + path + " -> " +
                          std::to_string(reply.status) + " " + reply.body);
    }
    ++requests_;
    return reply;
  }

  int64_t requests() const { return requests_; }
  std::vector<std::string> failures() {
    std::lock_guard<std::mutex> lock(mu_);
    return failures_;
  }

 private:
  const int port_;
  const std::string key_;
  std::atomic<int64_t> requests_{0};
  std::mutex mu_;
  std::vector<std::string> failures_;  // guarded by mu_
};

struct Replay {
  TempDir dir;
  std::string key;
  std::unique_ptr<ShimServer> server;
  std::unique_ptr<CountingClient> client;
  std::string memory_mode;
  std::multiset<std::string> mounts_before;
  std::set<std::string> cases_run;
};

// Started by the first case; stopped at exit.
Replay* TheReplay() {
  static std::unique_ptr<Replay> replay = [] {
    auto r = std::make_unique<Replay>();
    r->mounts_before = MountLines();
    r->key = CreateUser(r->dir.path(), "starter");
    r->server = std::make_unique<ShimServer>(r->dir.path());
    if (r->server->started()) {
      r->client = std::make_unique<CountingClient>(r->server->port(), r->key);
      rapidjson::Document health;
      std::string body = Http(r->server->port(), "GET", "/healthz").body;
      health.Parse(body.c_str(), body.size());
      if (!health.HasParseError() && health.IsObject() &&
          health.HasMember("memory_mode") && health["memory_mode"].IsString()) {
        r->memory_mode = health["memory_mode"].GetString();
      }
    }
    return r;
  }();
  return replay.get();
}

// ---- One case: its shape, its runs, and the checks of its expect. ----

struct Case {
  std::string id;
  const rapidjson::Value* json = nullptr;  // borrowed from the parsed file
  std::string request_body;
  int concurrent = 1;
  int repeat = 1;
  bool then_clean = false;
  bool probe_status_during = false;
  std::string note;
};

struct CaseFile {
  std::vector<std::unique_ptr<rapidjson::Document>> docs;
  std::vector<Case> cases;
  std::vector<std::string> errors;  // malformed lines or fields
};

// The fields a case line may have; anything else is an error.
bool ParseCase(const rapidjson::Value& json, Case* c, std::string* error) {
  static const std::set<std::string> kKnown = {
      "id",         "title",  "request",    "expect",
      "concurrent", "repeat", "then_clean", "probe_status_during",
      "note"};
  if (!json.IsObject()) return (*error = "not an object", false);
  for (const auto& m : json.GetObject()) {
    if (!kKnown.count(m.name.GetString())) {
      *error = std::string("unknown case field ") + m.name.GetString();
      return false;
    }
  }
  if (!json.HasMember("id") || !json["id"].IsString()) {
    return (*error = "no string id", false);
  }
  c->id = json["id"].GetString();
  if (!json.HasMember("request") || !json["request"].IsObject() ||
      !json.HasMember("expect") || !json["expect"].IsObject()) {
    return (*error = c->id + ": request and expect must be objects", false);
  }
  c->json = &json;
  c->request_body = ToJson(json["request"]);
  for (auto [name, slot] : {std::pair{"concurrent", &c->concurrent},
                            std::pair{"repeat", &c->repeat}}) {
    if (!json.HasMember(name)) continue;
    if (!json[name].IsInt() || json[name].GetInt() < 1) {
      return (*error = c->id + ": " + name + " must be a positive integer",
              false);
    }
    *slot = json[name].GetInt();
  }
  for (auto [name, slot] :
       {std::pair{"then_clean", &c->then_clean},
        std::pair{"probe_status_during", &c->probe_status_during}}) {
    if (!json.HasMember(name)) continue;
    if (!json[name].IsBool()) {
      return (*error = c->id + ": " + name + " must be a boolean", false);
    }
    *slot = json[name].GetBool();
  }
  if (json.HasMember("note") && json["note"].IsString()) {
    c->note = json["note"].GetString();
  }
  return true;
}

const CaseFile& Cases() {
  static const CaseFile file = [] {
    CaseFile f;
    std::istringstream in(ReadFile(kCasesPath) + ReadFile(kFoundCasesPath));
    std::string line;
    std::set<std::string> ids;
    for (int number = 1; std::getline(in, line); ++number) {
      if (line.empty()) continue;
      auto doc = std::make_unique<rapidjson::Document>();
      doc->Parse(line.c_str(), line.size());
      Case c;
      std::string error;
      if (doc->HasParseError()) {
        error = "not JSON";
      } else if (ParseCase(*doc, &c, &error) && !ids.insert(c.id).second) {
        error = "duplicate id " + c.id;
      }
      if (!error.empty()) {
        f.errors.push_back("line " + std::to_string(number) + ": " + error);
        continue;
      }
      f.docs.push_back(std::move(doc));
      f.cases.push_back(c);
    }
    return f;
  }();
  return file;
}

// What one copy of a case gave.
struct CopyOutcome {
  std::vector<std::string> problems;  // the run itself could not be observed
  rapidjson::Document status;         // final GET /status
  rapidjson::Document result;         // GET /result
  rapidjson::Document result_base64;  // GET /result?encoding=base64
  int64_t slowest_probe_ms = 0;       // GET /status while queued or running
  int probes_during = 0;
};

bool ParseInto(const HttpReply& reply, rapidjson::Document* doc) {
  doc->Parse(reply.body.c_str(), reply.body.size());
  return !doc->HasParseError() && doc->IsObject();
}

// Submits the case once and waits for its end. Safe to call from many
// threads at once.
void RunCopy(const Case& c, CountingClient* client, CopyOutcome* out) {
  HttpReply submitted = client->Call("POST", "/run", c.request_body);
  rapidjson::Document doc;
  if (submitted.status != 202 || !ParseInto(submitted, &doc) ||
      !doc.HasMember("execution_id") || !doc["execution_id"].IsString()) {
    out->problems.push_back("POST /run answered " +
                            std::to_string(submitted.status) + " " +
                            submitted.body);
    return;
  }
  std::string id = doc["execution_id"].GetString();
  auto deadline = Clock::now() + kRunDeadline;
  std::string state;
  for (;;) {
    auto asked = Clock::now();
    HttpReply status = client->Call("GET", "/status/" + id);
    int64_t took = std::chrono::duration_cast<std::chrono::milliseconds>(
                       Clock::now() - asked)
                       .count();
    if (status.status != 200 || !ParseInto(status, &out->status) ||
        !out->status.HasMember("status") || !out->status["status"].IsString()) {
      out->problems.push_back("GET /status answered " +
                              std::to_string(status.status) + " " +
                              status.body);
      return;
    }
    state = out->status["status"].GetString();
    if (state == "completed" || state == "failed") break;
    out->slowest_probe_ms = std::max(out->slowest_probe_ms, took);
    ++out->probes_during;
    if (Clock::now() > deadline) {
      out->problems.push_back("still " + state + " after " +
                              std::to_string(kRunDeadline.count()) + " s");
      return;
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  HttpReply result = client->Call("GET", "/result/" + id);
  if (result.status != 200 || !ParseInto(result, &out->result)) {
    out->problems.push_back("GET /result answered " +
                            std::to_string(result.status) + " " + result.body);
    return;
  }
  HttpReply raw = client->Call("GET", "/result/" + id + "?encoding=base64");
  if (raw.status != 200 || !ParseInto(raw, &out->result_base64)) {
    out->problems.push_back("GET /result?encoding=base64 answered " +
                            std::to_string(raw.status) + " " + raw.body);
  }
}

// Collects "field: expected X, got Y" for every check of `expect` that the
// copy fails, and for every expect key the checker does not know.
class Checker {
 public:
  Checker(const CopyOutcome& copy, std::vector<std::string>* mismatches)
      : copy_(copy), out_(mismatches) {}

  void Check(const rapidjson::Value& expect) {
    for (const auto& m : expect.GetObject()) {
      CheckOne(m.name.GetString(), m.value);
    }
  }

 private:
  void Mismatch(const std::string& field, const std::string& expected,
                const std::string& got) {
    out_->push_back(field + ": expected " + expected + ", got " + got);
  }

  // The result's member, or null when missing.
  const rapidjson::Value& Field(const rapidjson::Document& doc,
                                const char* name) {
    static const rapidjson::Value kNull;
    if (!doc.IsObject() || !doc.HasMember(name)) return kNull;
    return doc[name];
  }

  std::string Stdout() {
    const rapidjson::Value& v = Field(copy_.result, "stdout");
    return v.IsString() ? std::string(v.GetString(), v.GetStringLength())
                        : std::string();
  }

  std::string Stderr() {
    const rapidjson::Value& v = Field(copy_.result, "stderr");
    return v.IsString() ? std::string(v.GetString(), v.GetStringLength())
                        : std::string();
  }

  bool NeedType(const std::string& key, const rapidjson::Value& value, bool ok,
                const char* type) {
    if (!ok)
      out_->push_back(key + ": the case gives " + ToJson(value) +
                      ", which is not " + type);
    return ok;
  }

  void CheckLength(const std::string& key, const rapidjson::Value& want) {
    if (!NeedType(key, want, want.IsInt64(), "an integer")) return;
    int64_t length = static_cast<int64_t>(Stdout().size());
    int64_t bound = want.GetInt64();
    bool ok = key == "stdout_len_bytes"       ? length == bound
              : key == "stdout_len_bytes_max" ? length <= bound
                                              : length >= bound;
    if (!ok) Mismatch(key, std::to_string(bound), std::to_string(length));
  }

  // `name` in the result is an integer within `bound` (at most or least).
  void CheckBound(const std::string& key, const char* name,
                  const rapidjson::Value& want, bool at_most) {
    if (!NeedType(key, want, want.IsInt64(), "an integer")) return;
    const rapidjson::Value& got = Field(copy_.result, name);
    bool ok = got.IsInt64() && (at_most ? got.GetInt64() <= want.GetInt64()
                                        : got.GetInt64() >= want.GetInt64());
    if (!ok) {
      Mismatch(key,
               std::string(name) + (at_most ? " <= " : " >= ") + ToJson(want),
               ToJson(got));
    }
  }

  void CheckOne(const std::string& key, const rapidjson::Value& want) {
    static const std::set<std::string> kPlain = {"reason", "stdout",
                                                 "stderr", "exit_code",
                                                 "signal", "stdout_truncated"};
    const std::string out = Stdout();
    if (key == "status") {
      // Both views of the run must agree with the case.
      if (!(Field(copy_.status, "status") == want)) {
        Mismatch("status (GET /status)", ToJson(want),
                 ToJson(Field(copy_.status, "status")));
      }
      if (!(Field(copy_.result, "status") == want)) {
        Mismatch("status (GET /result)", ToJson(want),
                 ToJson(Field(copy_.result, "status")));
      }
    } else if (kPlain.count(key)) {
      const rapidjson::Value& got = Field(copy_.result, key.c_str());
      if (!(got == want)) Mismatch(key, ToJson(want), ToJson(got));
    } else if (key == "reason_in") {
      if (!NeedType(key, want, want.IsArray(), "a list")) return;
      const rapidjson::Value& got = Field(copy_.result, "reason");
      bool found = false;
      for (const auto& r : want.GetArray()) found = found || r == got;
      if (!found) Mismatch(key, "one of " + ToJson(want), ToJson(got));
    } else if (key == "stdout_prefix") {
      if (!NeedType(key, want, want.IsString(), "a string")) return;
      if (out.rfind(want.GetString(), 0) != 0) {
        Mismatch(key, ToJson(want), "stdout " + Quote(out));
      }
    } else if (key == "stderr_contains") {
      if (!NeedType(key, want, want.IsString(), "a string")) return;
      if (Stderr().find(want.GetString()) == std::string::npos) {
        Mismatch(key, ToJson(want), "stderr " + Quote(Stderr()));
      }
    } else if (key == "stdout_not_contains") {
      if (!NeedType(key, want, want.IsArray(), "a list")) return;
      for (const auto& s : want.GetArray()) {
        if (!NeedType(key, s, s.IsString(), "a string")) continue;
        if (out.find(s.GetString()) != std::string::npos) {
          Mismatch(key, "no " + ToJson(s), "stdout " + Quote(out));
        }
      }
    } else if (key == "stdout_len_bytes" || key == "stdout_len_bytes_max" ||
               key == "stdout_len_bytes_min") {
      CheckLength(key, want);
    } else if (key == "stdout_base64") {
      const rapidjson::Value& got = Field(copy_.result_base64, "stdout");
      if (!(got == want)) Mismatch(key, ToJson(want), ToJson(got));
    } else if (key == "stdout_int_max") {
      if (!NeedType(key, want, want.IsInt64(), "an integer")) return;
      std::string text = out;
      while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
        text.pop_back();
      }
      char* end = nullptr;
      long long value = std::strtoll(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0' || value > want.GetInt64()) {
        Mismatch(key, "an integer <= " + ToJson(want), "stdout " + Quote(out));
      }
    } else if (key == "max_wall_ms") {
      CheckBound(key, "wall_ms", want, true);
    } else if (key == "cpu_ms_max") {
      CheckBound(key, "cpu_ms", want, true);
    } else if (key == "peak_memory_kb_min") {
      CheckBound(key, "peak_memory_kb", want, false);
    } else if (key == "stdout_no_replacement") {
      if (!NeedType(key, want, want.IsBool(), "a boolean")) return;
      bool has = out.find("\xEF\xBF\xBD") != std::string::npos;
      if (want.GetBool() && has) {
        Mismatch(key, "no U+FFFD", "stdout " + Quote(out));
      }
    } else {
      out_->push_back(key +
                      ": unknown expect key; teach cases_test.cc "
                      "to check it");
    }
  }

  static std::string Quote(const std::string& text) {
    rapidjson::Value v(text.c_str(), static_cast<rapidjson::SizeType>(
                                         std::min<size_t>(text.size(), 300)));
    return ToJson(v) + (text.size() > 300 ? "..." : "");
  }

  const CopyOutcome& copy_;
  std::vector<std::string>* out_;
};

// The run's own verdict in one line, for failure messages.
std::string Summary(const CopyOutcome& copy) {
  std::string text;
  for (const char* name : {"status", "reason", "exit_code", "signal", "wall_ms",
                           "cpu_ms", "peak_memory_kb", "detail"}) {
    if (copy.result.IsObject() && copy.result.HasMember(name)) {
      text += std::string(name) + "=" + ToJson(copy.result[name]) + " ";
    }
  }
  if (copy.result.IsObject() && copy.result.HasMember("stderr") &&
      copy.result["stderr"].IsString()) {
    std::string err = copy.result["stderr"].GetString();
    text += "stderr=" + err.substr(0, 400);
  }
  return text;
}

void ReplayCase(const Case& c, Replay* replay) {
  const rapidjson::Value& expect = (*c.json)["expect"];
  const int copies = c.concurrent * c.repeat;
  std::vector<CopyOutcome> outcomes(copies);
  for (int round = 0; round < c.repeat; ++round) {
    std::vector<std::thread> threads;
    for (int i = 0; i < c.concurrent; ++i) {
      CopyOutcome* out = &outcomes[round * c.concurrent + i];
      threads.emplace_back(
          [&c, replay, out] { RunCopy(c, replay->client.get(), out); });
    }
    for (auto& t : threads) t.join();
  }

  for (int i = 0; i < copies; ++i) {
    const CopyOutcome& copy = outcomes[i];
    std::vector<std::string> mismatches = copy.problems;
    if (copy.problems.empty()) Checker(copy, &mismatches).Check(expect);
    if (c.probe_status_during) {
      if (copy.probes_during == 0) {
        mismatches.push_back(
            "probe_status_during: the run ended before any probe");
      } else if (copy.slowest_probe_ms > kStatusProbeMs) {
        mismatches.push_back("probe_status_during: GET /status took " +
                             std::to_string(copy.slowest_probe_ms) + " ms");
      }
    }
    for (const std::string& m : mismatches) {
      FAIL_CHECK("case " << c.id << " copy " << i + 1 << "/" << copies << ": "
                         << m << "\n  run: " << Summary(copy));
    }
  }

  if (c.then_clean) {
    std::vector<HostProcess> left =
        AwaitNoSandboxProcesses(replay->server->pid());
    CHECK_MESSAGE(left.empty(), "case " << c.id << ": then_clean: left on "
                                        << "the host: " << Describe(left));
    HttpReply me = replay->client->Call("GET", "/me");
    CHECK_MESSAGE(me.status == 200, "case " << c.id << ": then_clean: GET /me "
                                            << "answered " << me.status);
  }
}

TEST_CASE("cases file: every line is a well-formed case") {
  const CaseFile& file = Cases();
  for (const std::string& error : file.errors) {
    FAIL_CHECK(kCasesPath << ": " << error);
  }
  CHECK(file.cases.size() >= 32);
}

TEST_CASE("cases file: tests/cases/runs.jsonl is the shared list") {
  if (!std::filesystem::exists(kSharedCasesPath)) {
    MESSAGE("shared cases not found; sync not checked");
    return;
  }
  std::string shared = ReadFile(kSharedCasesPath);
  std::string copy = ReadFile(kCasesPath);
  CHECK_MESSAGE(copy == shared, kCasesPath << " differs from "
                                           << kSharedCasesPath
                                           << "; copy it over");
}

// then_clean and the final check trust the uid scan; it must see a run
// that is still going, or it would pass vacuously.
TEST_CASE("cases: the leftover scan sees the processes of a live run") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  CountingClient client(server.port(), key);
  HttpReply run = client.Call(
      "POST", "/run",
      R"j({"script":"import subprocess, time\nsubprocess.Popen(['sleep', '60'])\nprint('up')\ntime.sleep(60)\n","limits":{"wall_ms":3000}})j");
  REQUIRE(run.status == 202);
  rapidjson::Document doc;
  REQUIRE(ParseInto(run, &doc));
  std::string id = doc["execution_id"].GetString();

  // Once the script has started both processes: init, python and sleep.
  auto deadline = Clock::now() + kRunDeadline;
  std::vector<HostProcess> seen;
  while (seen.size() < 3 && Clock::now() < deadline) {
    std::this_thread::sleep_for(kPollInterval);
    seen = SandboxProcessesOf(server.pid());
  }
  INFO("seen: " << Describe(seen));
  CHECK(seen.size() == 3);
  for (const HostProcess& p : seen) CHECK(p.max_uid >= kHostIdBase);

  std::string state;
  while (state != "completed" && Clock::now() < deadline) {
    std::this_thread::sleep_for(kPollInterval);
    HttpReply status = client.Call("GET", "/status/" + id);
    REQUIRE(ParseInto(status, &doc));
    state = doc["status"].GetString();
  }
  REQUIRE(state == "completed");
  REQUIRE(ParseInto(client.Call("GET", "/result/" + id), &doc));
  CHECK(std::string(doc["reason"].GetString()) == "wall_timeout");
  std::vector<HostProcess> left = AwaitNoSandboxProcesses(server.pid());
  CHECK_MESSAGE(left.empty(), "left on the host: " << Describe(left));
  CHECK(client.failures().empty());
}

// Idle pool members are excluded from the scans above; they must still
// die with the server. Once it has exited its processes are reparented, so
// they are remembered (pid and name) while it runs.
TEST_CASE("cases: nothing is left once the server is gone") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  CountingClient client(server.port(), key);
  HttpReply run =
      client.Call("POST", "/run?wait=true", R"j({"script":"print('hi')\n"})j");
  CHECK(run.status == 200);
  auto deadline = Clock::now() + kRunDeadline;
  std::vector<HostProcess> before;
  while (before.empty() && Clock::now() < deadline) {
    before = AllSandboxProcessesOf(server.pid());  // the refilled pool
    if (before.empty()) std::this_thread::sleep_for(kPollInterval);
  }
  CHECK(!before.empty());  // else the check below would pass vacuously
  CHECK(server.Stop() == 0);
  auto still_there = [&before] {
    std::vector<HostProcess> left;
    std::map<pid_t, HostProcess> now = ScanProcesses();
    for (const HostProcess& p : before) {
      auto it = now.find(p.pid);
      if (it != now.end() && it->second.max_uid >= kHostIdBase) {
        left.push_back(it->second);
      }
    }
    return left;
  };
  auto left_deadline = Clock::now() + kLeftoverDeadline;
  std::vector<HostProcess> left = still_there();
  while (!left.empty() && Clock::now() < left_deadline) {
    std::this_thread::sleep_for(kPollInterval);
    left = still_there();
  }
  CHECK_MESSAGE(left.empty(), "left on the host: " << Describe(left));
}

TEST_CASE("cases: replay every case against a real server") {
  const CaseFile& file = Cases();
  REQUIRE_MESSAGE(!file.cases.empty(), "no cases in " << kCasesPath);
  Replay* replay = TheReplay();
  REQUIRE_MESSAGE(
      replay->server->started(),
      "dex-shim serve did not start: " << replay->server->ready_line());
  for (const Case& c : file.cases) {
    SUBCASE(c.id.c_str()) {
      INFO("case " << c.id << " (memory mode " << replay->memory_mode << ")");
      if (!c.note.empty()) MESSAGE("case " << c.id << " note: " << c.note);
      replay->cases_run.insert(c.id);
      ReplayCase(c, replay);
    }
  }
}

// Declared after the replay, so doctest's default file/line order runs it
// last.
TEST_CASE("cases: after the replay nothing is left and nothing failed") {
  Replay* replay = TheReplay();
  REQUIRE(replay->server->started());
  if (replay->cases_run.size() != Cases().cases.size()) {
    MESSAGE("only " << replay->cases_run.size() << " of "
                    << Cases().cases.size()
                    << " cases ran (filtered?); checking what they left");
  }
  std::vector<HostProcess> left =
      AwaitNoSandboxProcesses(replay->server->pid());
  CHECK_MESSAGE(left.empty(), "left on the host: " << Describe(left));

  std::multiset<std::string> after = MountLines();
  std::vector<std::string> added, removed;
  std::set_difference(after.begin(), after.end(), replay->mounts_before.begin(),
                      replay->mounts_before.end(), std::back_inserter(added));
  std::set_difference(replay->mounts_before.begin(),
                      replay->mounts_before.end(), after.begin(), after.end(),
                      std::back_inserter(removed));
  for (const std::string& line : added) {
    FAIL_CHECK("mount left on the host: " << line);
  }
  for (const std::string& line : removed) {
    FAIL_CHECK("host mount gone during the replay: " << line);
  }

  CHECK(Http(replay->server->port(), "GET", "/me", replay->key).status == 200);
  std::vector<std::string> failures = replay->client->failures();
  MESSAGE(replay->client->requests() << " requests during the replay");
  CHECK_MESSAGE(failures.empty(), failures.size()
                                      << " requests got no answer or a 5xx, "
                                         "first: "
                                      << (failures.empty() ? "" : failures[0]));
}

}  // namespace
}  // namespace dex::test
