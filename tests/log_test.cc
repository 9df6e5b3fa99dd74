// The shim's log on stderr: one access line per request that names the
// key id but never the key, and the lifecycle lines of `serve`.
#include <doctest/doctest.h>
#include <httplib.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/logged_shim.h"
#include "tests/test_util.h"

namespace dex::test {
namespace {

size_t CountContaining(const std::vector<std::string>& lines,
                       const std::string& needle) {
  return std::count_if(lines.begin(), lines.end(), [&](const std::string& l) {
    return l.find(needle) != std::string::npos;
  });
}

TEST_CASE("a request writes exactly one access line with the key id only") {
  TempDir dir;
  std::string log = dir.path() + "/shim.log";
  std::string key = CreateUser(dir.path() + "/data", "starter");
  std::string key_id;
  {
    LoggedShim shim({"--data", dir.path() + "/data", "--listen", "127.0.0.1:0"},
                    log);
    REQUIRE(shim.port() > 0);
    HttpReply keys = Http(shim.port(), "GET", "/apikey", key);
    REQUIRE(keys.status == 200);
    rapidjson::Document doc;
    doc.Parse(keys.body.c_str());
    key_id = doc["keys"][0]["id"].GetString();
    HttpReply me = Http(shim.port(), "GET", "/me", key, "",
                        {{"X-Request-Id", "log-test-1"}});
    REQUIRE(me.status == 200);
    REQUIRE(shim.Stop() == 0);
  }
  std::vector<std::string> lines = Lines(ReadFile(log));
  CHECK(CountContaining(lines, " http ") == 2);
  REQUIRE(CountContaining(lines, "log-test-1") == 1);
  auto line = *std::find_if(lines.begin(), lines.end(), [](auto& l) {
    return l.find("log-test-1") != std::string::npos;
  });
  CHECK(line.find(" info http log-test-1 GET /me 200 ") != std::string::npos);
  CHECK(line.find("key=" + key_id) != std::string::npos);
  CHECK(ReadFile(log).find(key) == std::string::npos);
  CHECK(ReadFile(log).find(key.substr(9, 20)) == std::string::npos);
}

// Without a client's own id, each answer gets a fresh one (the log line
// carries it): req_ and 16 lower-case hex digits, distinct across the
// server's threads.
TEST_CASE("generated request ids are well formed and distinct") {
  TempDir dir;
  LoggedShim shim({"--data", dir.path(), "--listen", "127.0.0.1:0"},
                  dir.path() + "/shim.log");
  REQUIRE(shim.port() > 0);
  std::set<std::string> ids;
  std::mutex mu;
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        std::string id =
            Http(shim.port(), "GET", "/healthz").Header("x-request-id");
        std::lock_guard<std::mutex> lock(mu);
        ids.insert(id);
      }
    });
  }
  for (auto& t : clients) t.join();
  CHECK(ids.size() == 400);
  for (const std::string& id : ids) {
    CHECK(id.size() == 20);
    CHECK(id.rfind("req_", 0) == 0);
    CHECK(id.find_first_not_of("0123456789abcdef", 4) == std::string::npos);
  }
}

// A pool thread keeps its access context from one request to the next:
// the second request on a keep-alive connection (same thread) must log its
// own route, a fresh request id and no key, not the first one's.
TEST_CASE("a keep-alive connection's second request logs only its own") {
  TempDir dir;
  std::string log = dir.path() + "/shim.log";
  std::string key = CreateUser(dir.path() + "/data", "starter");
  {
    LoggedShim shim({"--data", dir.path() + "/data", "--listen", "127.0.0.1:0"},
                    log);
    REQUIRE(shim.port() > 0);
    httplib::Client client("127.0.0.1", shim.port());
    client.set_keep_alive(true);
    auto me = client.Get("/me", {{"Authorization", "Bearer " + key},
                                 {"X-Request-Id", "first-request"}});
    REQUIRE(me);
    CHECK(me->status == 200);
    auto health = client.Get("/healthz");
    REQUIRE(health);
    CHECK(health->status == 200);
    std::string second_id = health->get_header_value("X-Request-Id");
    CHECK(second_id.rfind("req_", 0) == 0);
    client.stop();
    REQUIRE(shim.Stop() == 0);
  }
  std::vector<std::string> lines = Lines(ReadFile(log));
  auto health_line = std::find_if(lines.begin(), lines.end(), [](auto& l) {
    return l.find(" GET /healthz ") != std::string::npos;
  });
  REQUIRE(health_line != lines.end());
  CHECK(health_line->find("first-request") == std::string::npos);
  CHECK(health_line->find(" http req_") != std::string::npos);
  CHECK(health_line->find("key=-") != std::string::npos);
  CHECK(CountContaining(lines, "http first-request GET /me 200") == 1);
}

TEST_CASE("an unauthenticated request is logged without a key id") {
  TempDir dir;
  std::string log = dir.path() + "/shim.log";
  {
    LoggedShim shim({"--data", dir.path(), "--listen", "127.0.0.1:0"}, log);
    REQUIRE(shim.port() > 0);
    CHECK(Http(shim.port(), "GET", "/me", "dex_live_nottherightshape").status ==
          401);
    shim.Stop();
  }
  std::string text = ReadFile(log);
  CHECK(text.find("GET /me 401 ") != std::string::npos);
  CHECK(text.find("key=-") != std::string::npos);
  CHECK(text.find("nottherightshape") == std::string::npos);
}

TEST_CASE("serve logs start, memory mode, address and shutdown in order") {
  TempDir dir;
  std::string log = dir.path() + "/shim.log";
  int port = 0;
  {
    LoggedShim shim({"--data", dir.path(), "--listen", "127.0.0.1:0"}, log);
    REQUIRE(shim.port() > 0);
    port = shim.port();
    REQUIRE(shim.Stop() == 0);
  }
  std::string text = ReadFile(log);
  std::vector<std::string> steps = {
      "dex-shim " DEX_TEST_VERSION " starting; data " + dir.path(),
      "sandbox: memory mode ",
      "dex-shim serving on http://127.0.0.1:" + std::to_string(port),
      "dex-shim stopping", "dex-shim stopped"};
  size_t at = 0;
  for (const std::string& step : steps) {
    size_t found = text.find(step, at);
    CHECK_MESSAGE(found != std::string::npos, step);
    if (found != std::string::npos) at = found;
  }
}

TEST_CASE("--log-level warn silences the access log") {
  TempDir dir;
  std::string log = dir.path() + "/shim.log";
  {
    LoggedShim shim({"--data", dir.path(), "--listen", "127.0.0.1:0",
                     "--log-level", "warn"},
                    log);
    REQUIRE(shim.port() > 0);
    CHECK(Http(shim.port(), "GET", "/healthz").status == 200);
    shim.Stop();
  }
  CHECK(ReadFile(log).find(" http ") == std::string::npos);
}

}  // namespace
}  // namespace dex::test
