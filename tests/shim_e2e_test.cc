// Black-box tests of dex-shim: the documented walkthrough over HTTP, the
// error contract of §2, and the admin command line of §8. Every test
// starts its own server on port 0 over a fresh folder.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <rapidjson/document.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tests/json_check.h"
#include "tests/test_util.h"

extern char** environ;

namespace dex::test {
namespace {

const std::string kHelloBody = R"j({"script":"print(\"hello\")"})j";
const std::string kPrint1Body = R"j({"script":"print(1)"})j";

// Checks the problem+json shape and returns its code.
std::string ProblemCode(const HttpReply& reply) {
  CHECK(reply.Header("content-type") == "application/problem+json");
  CHECK(!reply.Header("x-request-id").empty());
  rapidjson::Document doc = Json(reply.body);
  for (const char* field : {"type", "title", "detail", "code", "request_id"}) {
    CHECK_MESSAGE(doc.HasMember(field), "problem lacks " << field);
  }
  CHECK(Int(doc, "status") == reply.status);
  CHECK(Str(doc, "request_id") == reply.Header("x-request-id"));
  return Str(doc, "code");
}

TEST_CASE("walkthrough: user, keys, a run and its result, disabling a key") {
  TempDir dir;
  std::string user_id;
  std::string first_key = CreateUser(dir.path(), "starter", &user_id);
  CHECK(first_key.rfind("dex_live_", 0) == 0);
  ShimServer server(dir.path());
  REQUIRE(server.started());
  int port = server.port();

  HttpReply me = Http(port, "GET", "/me", first_key);
  REQUIRE(me.status == 200);
  rapidjson::Document doc = Json(me.body);
  CHECK(Str(doc, "user_id") == user_id);
  CHECK(Str(doc, "plan") == "starter");
  CHECK(Str(doc, "effective_plan") == "starter");
  CHECK(Str(doc, "subscription_status") == "active");
  CHECK(Int(doc, "effective_quota_monthly") == 3000);
  CHECK(Int(doc, "usage_this_period") == 0);
  CHECK(Int(doc, "remaining") == 3000);
  CHECK(Str(doc, "period_start").size() == 20);
  CHECK(me.Header("x-ratelimit-limit") == "3000");
  CHECK(me.Header("x-ratelimit-remaining") == "3000");
  CHECK(me.Header("x-ratelimit-used") == "0");
  CHECK(!me.Header("x-ratelimit-reset").empty());

  HttpReply list = Http(port, "GET", "/apikey", first_key);
  REQUIRE(list.status == 200);
  doc = Json(list.body);
  REQUIRE(doc["keys"].IsArray());
  REQUIRE(doc["keys"].Size() == 1);
  const rapidjson::Value& listed = doc["keys"][0];
  CHECK(Str(listed, "status") == "active");
  CHECK(listed["last_used_at"].IsString());  // this very request used it
  CHECK(listed["disabled_at"].IsNull());
  CHECK(list.body.find(first_key) == std::string::npos);

  HttpReply created =
      Http(port, "POST", "/apikey", first_key, R"({"name":"server-key"})");
  REQUIRE(created.status == 201);
  doc = Json(created.body);
  std::string key_id = Str(doc, "id");
  std::string second_key = Str(doc, "api_key");
  CHECK(key_id.rfind("key_", 0) == 0);
  CHECK(second_key.rfind("dex_live_", 0) == 0);
  CHECK(Str(doc, "name") == "server-key");
  CHECK(Str(doc, "hint").substr(0, 9) == "dex_live_");

  HttpReply run = Http(port, "POST", "/run", second_key, kHelloBody);
  REQUIRE(run.status == 202);
  doc = Json(run.body);
  std::string exec_id = Str(doc, "execution_id");
  CHECK(exec_id.rfind("exec_", 0) == 0);
  CHECK(Str(doc, "status") == "queued");
  CHECK(run.Header("x-ratelimit-used") == "1");

  // Liveness bound only: a hello-world finishes in well under a second.
  std::string state;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    HttpReply status = Http(port, "GET", "/status/" + exec_id, second_key);
    REQUIRE(status.status == 200);
    state = Str(Json(status.body), "status");
    if (state == "completed" || state == "failed") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(state == "completed");

  HttpReply result = Http(port, "GET", "/result/" + exec_id, second_key);
  REQUIRE(result.status == 200);
  doc = Json(result.body);
  CHECK(Str(doc, "stdout") == "hello\n");
  CHECK(Str(doc, "stderr") == "");
  CHECK(Int(doc, "exit_code") == 0);
  CHECK(Str(doc, "reason") == "ok");
  CHECK(doc["signal"].IsNull());
  CHECK(Str(doc, "status") == "completed");

  doc = Json(Http(port, "GET", "/me", first_key).body);
  CHECK(Int(doc, "usage_this_period") == 1);

  HttpReply disabled = Http(port, "DELETE", "/apikey/" + key_id, first_key);
  REQUIRE(disabled.status == 200);
  doc = Json(disabled.body);
  CHECK(Str(doc, "status") == "disabled");
  CHECK(doc["disabled_at"].IsString());

  HttpReply refused = Http(port, "GET", "/me", second_key);
  CHECK(refused.status == 401);
  CHECK(ProblemCode(refused) == "key_disabled");
  CHECK(refused.Header("www-authenticate").rfind("Bearer", 0) == 0);
}

TEST_CASE("errors are problem+json in the documented precedence") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  int port = server.port();

  // Unknown route and wrong method win over missing credentials.
  HttpReply r = Http(port, "GET", "/nope");
  CHECK(r.status == 404);
  CHECK(ProblemCode(r) == "not_found");
  r = Http(port, "PUT", "/me", "", "{}");
  CHECK(r.status == 405);
  CHECK(ProblemCode(r) == "method_not_allowed");
  CHECK(r.Header("allow") == "GET, HEAD");

  r = Http(port, "GET", "/me");
  CHECK(r.status == 401);
  CHECK(ProblemCode(r) == "missing_credentials");
  CHECK(r.Header("www-authenticate").rfind("Bearer", 0) == 0);
  r = Http(port, "GET", "/me", "dex_live_fake");
  CHECK(r.status == 401);
  CHECK(ProblemCode(r) == "invalid_token");
  // Credentials come before the body's type.
  r = Http(port, "POST", "/run", "", "x", {{"Content-Type", "text/plain"}});
  CHECK(r.status == 401);

  r = Http(port, "POST", "/run", key, "print(1)",
           {{"Content-Type", "text/plain"}});
  CHECK(r.status == 415);
  CHECK(ProblemCode(r) == "unsupported_media_type");
  r = Http(port, "POST", "/run", key, R"({"script":)");
  CHECK(r.status == 400);
  CHECK(ProblemCode(r) == "invalid_json");
  r = Http(port, "POST", "/run", key, std::string(100'000, '['));
  CHECK(r.status == 400);
  CHECK(ProblemCode(r) == "invalid_json");
  r = Http(port, "POST", "/run", key, "{\"script\":\"\xff\"}");
  CHECK(r.status == 400);
  CHECK(ProblemCode(r) == "invalid_json");
  r = Http(port, "POST", "/run", key,
           "{\"script\":\"" + std::string(3 << 20, 'a') + "\"}");
  CHECK(r.status == 413);
  CHECK(ProblemCode(r) == "payload_too_large");

  for (const char* bad : {"0", "-1", "1.5", "1e3", "\"5\"", "true", "null",
                          "99999999999999999999"}) {
    r = Http(port, "POST", "/run", key,
             std::string(R"j({"script":"print(1)","limits":{"wall_ms":)j") +
                 bad + "}}");
    CHECK_MESSAGE(r.status == 400, "wall_ms " << bad);
    CHECK(Str(Json(r.body), "detail").find("limits.wall_ms") !=
          std::string::npos);
  }
  r = Http(port, "POST", "/run", key,
           R"j({"script":"print(1)","limits":{"wall_ms":600000}})j");
  CHECK(r.status == 400);
  CHECK(Str(Json(r.body), "detail").find("limits.wall_ms") !=
        std::string::npos);
  r = Http(port, "POST", "/run", key, R"({"script":"x","limits":{"bogus":1}})");
  CHECK(r.status == 400);
  CHECK(Str(Json(r.body), "detail").find("bogus") != std::string::npos);

  r = Http(port, "GET", "/result/exec_unknown", key);
  CHECK(r.status == 404);
  CHECK(ProblemCode(r) == "not_found");
  r = Http(port, "GET", "/" + std::string(10'000, 'a'), key);
  CHECK(r.status == 414);
  CHECK(ProblemCode(r) == "invalid_request");

  // Nothing above was charged.
  CHECK(Int(Json(Http(port, "GET", "/me", key).body), "usage_this_period") ==
        0);
  HttpReply health = Http(port, "GET", "/healthz");
  CHECK(health.status == 200);
  CHECK(Str(Json(health.body), "status") == "ok");
}

TEST_CASE("another user's execution and key answer 404") {
  TempDir dir;
  std::string alice = CreateUser(dir.path(), "starter");
  std::string bob = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  HttpReply run =
      Http(server.port(), "POST", "/run?wait=true", alice, kPrint1Body);
  REQUIRE(run.status == 200);
  std::string exec_id = Str(Json(run.body), "execution_id");
  CHECK(Http(server.port(), "GET", "/result/" + exec_id, bob).status == 404);
  CHECK(Http(server.port(), "GET", "/status/" + exec_id, bob).status == 404);
  std::string alice_key_id = Str(
      Json(Http(server.port(), "GET", "/apikey", alice).body)["keys"][0], "id");
  CHECK(Http(server.port(), "DELETE", "/apikey/" + alice_key_id, bob).status ==
        404);
  // Alice's only key: disabling it would lock her out.
  HttpReply last =
      Http(server.port(), "DELETE", "/apikey/" + alice_key_id, alice);
  CHECK(last.status == 409);
  CHECK(ProblemCode(last) == "last_active_key");
}

constexpr char kBigPrintBody[] = "{\"script\":\"print('x' * 100000)\"}";

// Regression: cpp-httplib applied Range to every answer, copying the body
// once per range; 500 ranges of "0-" turned a 1 MiB result into 524 MB.
TEST_CASE("a Range header is ignored: answers stay whole JSON") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  HttpReply me =
      Http(server.port(), "GET", "/me", key, "", {{"Range", "bytes=0-5"}});
  CHECK(me.status == 200);
  CHECK(me.Header("content-range").empty());
  CHECK(Str(Json(me.body), "effective_plan") == "starter");

  HttpReply run =
      Http(server.port(), "POST", "/run?wait=true", key, kBigPrintBody);
  REQUIRE(run.status == 200);
  std::string path = "/result/" + Str(Json(run.body), "execution_id");
  HttpReply whole = Http(server.port(), "GET", path, key);
  std::string ranges = "bytes=0-";
  for (int i = 0; i < 200; ++i) ranges += ",0-";
  HttpReply ranged =
      Http(server.port(), "GET", path, key, "", {{"Range", ranges}});
  CHECK(ranged.status == 200);
  CHECK(ranged.Header("content-type") == "application/json");
  CHECK(ranged.body.size() == whole.body.size());
  CHECK(Str(Json(ranged.body), "stdout").size() == 100001);
}

// Regression: ?encoding was honoured on GET /result only; on POST /run it
// was ignored, a bad value included (and the run charged).
TEST_CASE("POST /run?wait=true takes ?encoding like GET /result") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  const std::string bytes_body =
      R"j({"script":"import sys; sys.stdout.buffer.write(b'ok \\xfe\\n')"})j";
  HttpReply run = Http(server.port(), "POST", "/run?wait=true&encoding=base64",
                       key, bytes_body);
  REQUIRE_MESSAGE(run.status == 200, run.body);
  rapidjson::Document doc = Json(run.body);
  CHECK(Str(doc, "stdout") == "b2sg/go=");
  CHECK(Str(doc, "encoding") == "base64");

  HttpReply bad =
      Http(server.port(), "POST", "/run?encoding=hex", key, kPrint1Body);
  CHECK(bad.status == 400);
  CHECK(ProblemCode(bad) == "invalid_request");
  CHECK(Int(Json(Http(server.port(), "GET", "/me", key).body),
            "usage_this_period") == 1);
}

TEST_CASE("an Idempotency-Key replays the first run and charges once") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  std::map<std::string, std::string> idem = {{"Idempotency-Key", "abc-1"}};
  HttpReply first = Http(server.port(), "POST", "/run", key, kPrint1Body, idem);
  REQUIRE(first.status == 202);
  // Same request, members in another order: the same run.
  HttpReply again = Http(server.port(), "POST", "/run", key,
                         R"j({ "script" : "print(1)" })j", idem);
  REQUIRE(again.status == 202);
  CHECK(Str(Json(again.body), "execution_id") ==
        Str(Json(first.body), "execution_id"));
  HttpReply other = Http(server.port(), "POST", "/run", key,
                         R"j({"script":"print(2)"})j", idem);
  CHECK(other.status == 422);
  CHECK(ProblemCode(other) == "idempotency_key_reused");
  CHECK(Int(Json(Http(server.port(), "GET", "/me", key).body),
            "usage_this_period") == 1);
}

TEST_CASE("plan set prints the documented shape") {
  TempDir dir;
  CommandResult r = RunShim({"plan", "set", "team", "--data", dir.path(),
                             "--quota", "500", "--max-wall-ms", "20000"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  rapidjson::Document doc = Json(r.out);
  CHECK(Str(doc, "name") == "team");
  CHECK(Int(doc, "quota_monthly") == 500);
  const rapidjson::Value& max = doc["max"];
  CHECK(Int(max, "wall_ms") == 20000);
  CHECK(Int(max, "cpu_ms") == 20000);
  // The rest come from starter.
  CHECK(Int(max, "memory_mb") == 256);
  CHECK(Int(max, "output_bytes") == 1 << 20);
  CHECK(Int(max, "processes") == 64);
  CHECK(Int(max, "concurrent") == 4);

  // An existing plan keeps what is not given.
  r = RunShim({"plan", "set", "--data", dir.path(), "team", "--quota", "7"});
  REQUIRE(r.exit_code == 0);
  CHECK(Int(Json(r.out)["max"], "wall_ms") == 20000);
}

TEST_CASE("user update --status canceled falls back to the free plan") {
  TempDir dir;
  std::string user_id;
  CreateUser(dir.path(), "pro", &user_id);
  CommandResult r = RunShim({"user", "update", "--data", dir.path(), "--user",
                             user_id, "--status", "canceled"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  rapidjson::Document doc = Json(r.out);
  CHECK(Str(doc, "plan") == "pro");
  CHECK(Str(doc, "subscription_status") == "canceled");
  CHECK(Str(doc, "effective_plan") == "free");
  CHECK(Int(doc, "effective_quota_monthly") == 100);
}

TEST_CASE("command line errors exit non-zero with a message on stderr") {
  TempDir dir;
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  std::vector<Case> cases = {
      {{"frobnicate"}, "unknown command"},
      {{"user", "create", "--data", dir.path()}, "--plan"},
      {{"user", "create", "--data", dir.path(), "--plan", "nope"}, "nope"},
      {{"user", "update", "--data", dir.path(), "--user", "user_x", "--status",
        "dormant"},
       "--status"},
      {{"plan", "set", "--data", dir.path(), "x", "--quota", "1.5"}, "--quota"},
      {{"plan", "set", "--data", dir.path(), "x", "--quota", "5",
        "--max-wall-ms", "-3"},
       "--max-wall-ms"},
      {{"serve", "--data", dir.path(), "--workers", "many"}, "--workers"},
      {{"serve", "--data", dir.path(), "--listen", "nowhere"}, "--listen"},
      {{"user", "create", "--bogus", "1"}, "--bogus"},
  };
  for (const Case& c : cases) {
    CommandResult r = RunShim(c.args);
    CHECK_MESSAGE(r.exit_code != 0, c.args[0]);
    CHECK(r.out.empty());
    CHECK_MESSAGE(r.err.find(c.message) != std::string::npos, r.err);
  }
}

TEST_CASE("--help prints usage on stdout and exits 0") {
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"--help"},
                                             {"serve", "--help"},
                                             {"quickstart", "--help"},
                                             {"user", "--help"},
                                             {"user", "create", "--help"},
                                             {"user", "update", "--help"},
                                             {"plan", "set", "--help"}}) {
    CommandResult r = RunShim(args);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("Usage") != std::string::npos);
  }
}

// `serve` prints one line on stdout and nothing more, even after serving
// requests and stopping; SIGTERM exits 0.
TEST_CASE("serve prints exactly one line on stdout") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  std::string out_path = dir.path() + "/serve.out";
  int out_fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  REQUIRE(out_fd >= 0);
  std::vector<std::string> args = {DEX_SHIM_PATH, "serve",  "--listen",
                                   "127.0.0.1:0", "--data", dir.path()};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out_fd);
  REQUIRE(rc == 0);

  // Readiness is the line itself; poll the file for it.
  std::string text;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (text.find('\n') == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::ifstream in(out_path);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  REQUIRE(text.rfind("listening on http://127.0.0.1:", 0) == 0);
  int port = std::stoi(text.substr(text.rfind(':') + 1));
  CHECK(Http(port, "GET", "/me", key).status == 200);
  CHECK(Http(port, "POST", "/run?wait=true", key, kPrint1Body).status == 200);

  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  std::ifstream in(out_path);
  text.assign(std::istreambuf_iterator<char>(in), {});
  CHECK(std::count(text.begin(), text.end(), '\n') == 1);
}

}  // namespace
}  // namespace dex::test

namespace dex::test {
namespace {

std::string ExeOf(pid_t pid) {
  std::error_code ec;
  auto path = std::filesystem::read_symlink(
      "/proc/" + std::to_string(pid) + "/exe", ec);
  return ec ? "" : path.string();
}

pid_t ParentOf(const std::string& pid) {
  std::ifstream status("/proc/" + pid + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("PPid:", 0) == 0) return std::atoi(line.c_str() + 5);
  }
  return -1;
}

}  // namespace

// Regression: an installed dex-shim looked for its spawner only beside
// itself, in the build tree and at the configured prefix, so a prefix
// given to `cmake --install --prefix` was never found. The spawner then
// finds the zygote's helper beside itself: its zygote (a python3 child)
// exists only when the helper loaded.
TEST_CASE("an installed layout finds its spawner in ../libexec/dex") {
  TempDir prefix;
  namespace fs = std::filesystem;
  fs::create_directories(prefix.path() + "/bin");
  fs::create_directories(prefix.path() + "/libexec/dex");
  std::string shim = prefix.path() + "/bin/dex-shim";
  std::string spawner = prefix.path() + "/libexec/dex/dex-spawner";
  fs::copy_file(DEX_SHIM_PATH, shim);
  fs::copy_file(fs::path(DEX_SHIM_PATH).parent_path() / "dex-spawner", spawner);
  fs::copy_file(fs::path(DEX_SHIM_PATH).parent_path() / "dex-zygote-helper.so",
                prefix.path() + "/libexec/dex/dex-zygote-helper.so");
  TempDir data;
  int out[2];
  REQUIRE(pipe2(out, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  std::vector<std::string> args = {shim,        "serve",    "--data",
                                   data.path(), "--listen", "127.0.0.1:0"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  REQUIRE(posix_spawn(&pid, shim.c_str(), &actions, nullptr, argv.data(),
                      environ) == 0);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  std::string line;
  char c;
  while (line.find('\n') == std::string::npos && read(out[0], &c, 1) == 1) {
    line.push_back(c);
  }
  close(out[0]);
  CHECK(line.rfind("listening on http://", 0) == 0);
  // The child of `parent` whose executable's path holds `part`.
  auto child_running = [](pid_t parent, const std::string& part, pid_t* child) {
    for (const auto& entry : fs::directory_iterator("/proc")) {
      std::string name = entry.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      if (ParentOf(name) != parent) continue;
      std::string exe = ExeOf(std::atoi(name.c_str()));
      if (exe.find(part) == std::string::npos) continue;
      *child = std::atoi(name.c_str());
      return exe;
    }
    return std::string();
  };
  pid_t spawner_pid = -1, zygote_pid = -1;
  CHECK(child_running(pid, "dex-spawner", &spawner_pid) == spawner);
  CHECK(child_running(spawner_pid, "python3", &zygote_pid) != "");
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

}  // namespace dex::test
