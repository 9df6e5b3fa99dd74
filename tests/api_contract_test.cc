// The HTTP contract of DESIGN §2-§4, exactly: every request a user gets
// wrong answers a standard problem and costs nothing; each key and quota
// rule holds over a real server, also under concurrency. Every test starts
// its own `dex-shim serve` on port 0 over a fresh folder.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/json_check.h"
#include "tests/test_util.h"

namespace dex::test {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Checks every field of a problem+json answer against `status` and
// `code`, and returns its detail.
std::string CheckProblem(const HttpReply& reply, int status,
                         const std::string& code) {
  CHECK(reply.status == status);
  CHECK(reply.Header("content-type") == "application/problem+json");
  std::string request_id = reply.Header("x-request-id");
  CHECK(!request_id.empty());
  rapidjson::Document doc = Json(reply.body);
  CHECK(Str(doc, "type") == "https://dex.dev/problems/" + code);
  CHECK(!Str(doc, "title").empty());
  CHECK(Int(doc, "status") == status);
  CHECK(Str(doc, "code") == code);
  CHECK(Str(doc, "request_id") == request_id);
  std::string detail = Str(doc, "detail");
  CHECK(!detail.empty());
  return detail;
}

int64_t UsageOf(int port, const std::string& key) {
  HttpReply me = Http(port, "GET", "/me", key);
  REQUIRE(me.status == 200);
  return Int(Json(me.body), "usage_this_period");
}

// A TCP connection to the server on loopback; closed when destroyed.
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~RawConnection() { close(fd_); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  void Send(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n =
          send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      REQUIRE(n > 0);
      done += static_cast<size_t>(n);
    }
  }

  // Reads one answer: its head, then Content-Length bytes of body (or
  // until the server closes). Liveness bound 30 s.
  std::string ReadAnswer() {
    std::string out;
    auto deadline = SteadyClock::now() + std::chrono::seconds(30);
    char buf[65536];
    while (SteadyClock::now() < deadline && !Complete(out)) {
      pollfd pfd = {fd_, POLLIN, 0};
      if (poll(&pfd, 1, 1000) <= 0) continue;
      ssize_t n = read(fd_, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

 private:
  static bool Complete(const std::string& text) {
    size_t head_end = text.find("\r\n\r\n");
    if (head_end == std::string::npos) return false;
    std::string head = text.substr(0, head_end);
    for (char& c : head) c = static_cast<char>(tolower(c));
    size_t at = head.find("\r\ncontent-length:");
    if (at == std::string::npos) return true;
    size_t length = std::strtoul(head.c_str() + at + 17, nullptr, 10);
    return text.size() >= head_end + 4 + length;
  }

  int fd_ = -1;
};

// Sends raw bytes as one request and parses the answer.
HttpReply RawHttp(int port, const std::string& request) {
  RawConnection conn(port);
  conn.Send(request);
  std::string text = conn.ReadAnswer();
  HttpReply reply;
  size_t head_end = text.find("\r\n\r\n");
  if (text.rfind("HTTP/1.1 ", 0) != 0 || head_end == std::string::npos) {
    return reply;
  }
  reply.status = std::atoi(text.c_str() + 9);
  reply.body = text.substr(head_end + 4);
  std::istringstream head(text.substr(0, head_end));
  std::string line;
  std::getline(head, line);  // the status line
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(tolower(c));
    size_t start = line.find_first_not_of(' ', colon + 1);
    reply.headers.emplace(name,
                          start == std::string::npos ? "" : line.substr(start));
  }
  return reply;
}

std::string SetPlan(const std::string& data_dir,
                    const std::vector<std::string>& args) {
  std::vector<std::string> all = {"plan", "set", "--data", data_dir};
  all.insert(all.end(), args.begin(), args.end());
  CommandResult r = RunShim(all);
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  return r.out;
}

void UpdateUser(const std::string& data_dir, const std::string& user_id,
                const std::string& status) {
  CommandResult r = RunShim({"user", "update", "--data", data_dir, "--user",
                             user_id, "--status", status});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
}

// The same key with its checksum broken in the last character.
std::string BreakChecksum(std::string key) {
  key.back() = key.back() == 'A' ? 'B' : 'A';
  return key;
}

const std::string kPrint1 = R"j({"script":"print(1)"})j";

std::string RunBody(const std::string& limits_json) {
  return R"j({"script":"print(1)","limits":)j" + limits_json + "}";
}

// ---- The table of wrong requests ----------------------------------------

struct Row {
  Row(std::string name, std::string method, std::string path)
      : name(std::move(name)),
        method(std::move(method)),
        path(std::move(path)) {}
  Row& Key(std::string k) { return key = std::move(k), *this; }
  Row& Body(std::string b) { return body = std::move(b), *this; }
  Row& Headers(std::map<std::string, std::string> h) {
    return headers = std::move(h), *this;
  }
  // Sends these bytes as they are instead.
  Row& Raw(std::string r) { return raw = std::move(r), *this; }
  Row& Expect(int s, std::string c, std::string d) {
    status = s;
    code = std::move(c);
    detail_part = std::move(d);
    return *this;
  }
  // A header the answer must carry, and its exact value ("*": any).
  Row& Want(std::string h, std::string v) {
    want_header = std::move(h);
    want_value = std::move(v);
    return *this;
  }
  // The user whose usage must not change (a valid key of theirs); the
  // main user's by default.
  Row& Usage(std::string k) { return usage_key = std::move(k), *this; }

  std::string name, method, path;
  std::string key;  // empty: no Authorization header
  std::string body;
  std::map<std::string, std::string> headers;
  std::string raw;
  int status = 0;
  std::string code;
  std::string detail_part;  // the detail must contain this
  std::string want_header, want_value;
  std::string usage_key;
};

TEST_CASE("every wrong request answers a precise problem and costs nothing") {
  TempDir dir;
  std::string main_user;
  std::string key = CreateUser(dir.path(), "starter", &main_user);
  std::string bob = CreateUser(dir.path(), "starter");
  SetPlan(dir.path(), {"one", "--quota", "1"});
  std::string spent = CreateUser(dir.path(), "one");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  const int port = server.port();

  // A run that is still going while the table runs (ends at its wall limit).
  HttpReply slow = Http(
      port, "POST", "/run", key,
      R"j({"script":"import time\ntime.sleep(60)","limits":{"wall_ms":8000}})j");
  REQUIRE(slow.status == 202);
  std::string slow_id = Str(Json(slow.body), "execution_id");

  // Bob's run and key, which nobody else may see.
  HttpReply bob_run = Http(port, "POST", "/run?wait=true", bob, kPrint1);
  REQUIRE(bob_run.status == 200);
  std::string bob_exec = Str(Json(bob_run.body), "execution_id");
  std::string bob_key_id =
      Str(Json(Http(port, "GET", "/apikey", bob).body)["keys"][0], "id");

  // A user whose month is used up.
  REQUIRE(Http(port, "POST", "/run", spent, kPrint1).status == 202);

  // A disabled second key of the main user.
  HttpReply second =
      Http(port, "POST", "/apikey", key, R"({"name":"to-disable"})");
  REQUIRE(second.status == 201);
  std::string disabled_key = Str(Json(second.body), "api_key");
  REQUIRE(Http(port, "DELETE", "/apikey/" + Str(Json(second.body), "id"), key)
              .status == 200);

  // An Idempotency-Key already used for print(1).
  std::map<std::string, std::string> idem = {{"Idempotency-Key", "table-1"}};
  REQUIRE(Http(port, "POST", "/run", key, kPrint1, idem).status == 202);

  std::map<std::string, std::string> flood;
  for (int i = 0; i < 200; ++i) {
    flood["X-Flood-" + std::to_string(i)] = "x";
  }
  std::string two_mib_plus_one(2u << 20, ' ');
  two_mib_plus_one += "{";

  const std::string bearer_lower = "bearer " + BreakChecksum(key);
  const std::string no_type =
      "POST /run HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
      "Authorization: Bearer " +
      key + "\r\nContent-Length: " + std::to_string(kPrint1.size()) +
      "\r\n\r\n" + kPrint1;
  auto get = [&](std::string name, std::string path) {
    return Row(std::move(name), "GET", std::move(path)).Key(key);
  };
  auto run = [&](std::string name, std::string body) {
    return Row(std::move(name), "POST", "/run").Key(key).Body(std::move(body));
  };
  auto limit = [&](std::string limits, std::string field) {
    return run("limits " + limits, RunBody(limits))
        .Expect(400, "invalid_request", "limits." + field);
  };
  std::vector<Row> rows = {
      // First, so the run is surely not over yet.
      get("result before the end", "/result/" + slow_id)
          .Expect(409, "not_finished", "not finished"),
      // Routes and methods.
      Row("unknown route, no key", "GET", "/nope")
          .Expect(404, "not_found", "no such route"),
      get("unknown route", "/nope").Expect(404, "not_found", "no such route"),
      get("routes are case-sensitive", "/ME")
          .Expect(404, "not_found", "no such route"),
      get("empty id", "/status/").Expect(404, "not_found", "no such route"),
      get("id with a slash", "/status/a/b")
          .Expect(404, "not_found", "no such route"),
      Row("wrong method + no key: 405 first", "PUT", "/me")
          .Body("{}")
          .Expect(405, "method_not_allowed", "PUT")
          .Want("allow", "GET, HEAD"),
      Row("DELETE /run", "DELETE", "/run")
          .Key(key)
          .Expect(405, "method_not_allowed", "DELETE")
          .Want("allow", "POST"),
      get("GET /run", "/run")
          .Expect(405, "method_not_allowed", "GET")
          .Want("allow", "POST"),
      Row("POST /status/{id}", "POST", "/status/x")
          .Key(key)
          .Body("{}")
          .Expect(405, "method_not_allowed", "POST")
          .Want("allow", "GET, HEAD"),
      get("GET /apikey/{id}", "/apikey/key_x")
          .Expect(405, "method_not_allowed", "GET")
          .Want("allow", "DELETE"),
      Row("PATCH /apikey", "PATCH", "/apikey")
          .Key(key)
          .Body("{}")
          .Expect(405, "method_not_allowed", "PATCH")
          .Want("allow", "GET, HEAD, POST"),
      Row("TRACE /me", "", "")
          .Raw("TRACE /me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
          .Expect(405, "method_not_allowed", "TRACE")
          .Want("allow", "GET, HEAD"),
      Row("an unknown method on a known path", "", "")
          .Raw("FOO /me HTTP/1.1\r\nHost: x\r\n\r\n")
          .Expect(405, "method_not_allowed", "FOO")
          .Want("allow", "GET, HEAD"),
      Row("QUERY /run", "", "")
          .Raw("QUERY /run?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
          .Expect(405, "method_not_allowed", "QUERY")
          .Want("allow", "POST"),
      Row("an unknown method on an unknown path", "", "")
          .Raw("FOO /nope HTTP/1.1\r\nHost: x\r\n\r\n")
          .Expect(404, "not_found", "no such route"),
      Row("a request line that is not HTTP", "", "")
          .Raw("\x16\x03\x01 hello\r\n\r\n")
          .Expect(400, "invalid_request", "malformed request line"),
      // Credentials.
      Row("no credentials", "GET", "/me")
          .Expect(401, "missing_credentials", "Bearer")
          .Want("www-authenticate", "Bearer realm=\"dex\""),
      Row("key in ?api_key= does not authenticate", "GET", "/me?api_key=" + key)
          .Expect(401, "missing_credentials", "Authorization"),
      Row("key in ?access_token= does not authenticate", "GET",
          "/me?access_token=" + key)
          .Expect(401, "missing_credentials", "Authorization"),
      Row("Basic scheme", "GET", "/me")
          .Headers({{"Authorization", "Basic eDp5"}})
          .Expect(401, "invalid_token", "Bearer")
          .Want("www-authenticate",
                "Bearer realm=\"dex\", error=\"invalid_token\""),
      Row("scheme without a key", "GET", "/me")
          .Headers({{"Authorization", "Bearer"}})
          .Expect(401, "invalid_token", "Bearer"),
      Row("garbled key", "GET", "/me")
          .Headers({{"Authorization", "Bearer !!garbage!!"}})
          .Expect(401, "invalid_token", "dex_live_"),
      Row("key of the wrong length", "GET", "/me")
          .Key(key.substr(0, key.size() - 1))
          .Expect(401, "invalid_token", "length"),
      Row("bad checksum, checked before any lookup", "GET", "/me")
          .Key(BreakChecksum(key))
          .Expect(401, "invalid_token", "checksum"),
      Row("lowercase scheme: the same scheme, its key still checked", "GET",
          "/me")
          .Headers({{"Authorization", bearer_lower}})
          .Expect(401, "invalid_token", "checksum"),
      get("two Authorization headers", "/me")
          .Headers({{"Authorization", "Bearer " + key}})
          .Expect(401, "invalid_token", "Bearer"),
      Row("disabled key", "GET", "/me")
          .Key(disabled_key)
          .Expect(401, "key_disabled", "disabled")
          .Want("www-authenticate", "*"),
      Row("no key + bad body: 401 first", "POST", "/run")
          .Body("{")
          .Expect(401, "missing_credentials", "Bearer"),
      Row("no key + body above 2 MiB: 401 first", "POST", "/run")
          .Body(two_mib_plus_one)
          .Expect(401, "missing_credentials", "Bearer"),
      // Body size, type and shape.
      run("text/plain body", kPrint1)
          .Headers({{"Content-Type", "text/plain"}})
          .Expect(415, "unsupported_media_type", "application/json"),
      run("JSON in another charset", kPrint1)
          .Headers({{"Content-Type", "application/json; charset=latin1"}})
          .Expect(415, "unsupported_media_type", "application/json"),
      Row("no Content-Type", "", "")
          .Raw(no_type)
          .Expect(415, "unsupported_media_type", "application/json"),
      run("an unknown Content-Encoding", kPrint1)
          .Headers({{"Content-Encoding", "compress"}})
          .Expect(415, "unsupported_media_type", "Content-Encoding"),
      run("a gzip body that is not gzip", kPrint1)
          .Headers({{"Content-Encoding", "gzip"}})
          .Expect(400, "invalid_request", "could not be read"),
      run("body above 2 MiB", two_mib_plus_one)
          .Expect(413, "payload_too_large", "2097152"),
      run("malformed JSON", R"({"script":)")
          .Expect(400, "invalid_json", "not valid JSON"),
      run("invalid UTF-8", "{\"script\":\"\xff\"}")
          .Expect(400, "invalid_json", "not valid JSON"),
      run("100000 [", std::string(100'000, '['))
          .Expect(400, "invalid_json", "nested deeper"),
      run("NUL byte", std::string("{\"script\":\"a\"}\0", 15))
          .Expect(400, "invalid_json", "NUL"),
      run("an array", "[]").Expect(400, "invalid_request", "object"),
      run("a string", R"j("print(1)")j")
          .Expect(400, "invalid_request", "object"),
      run("no script", "{}")
          .Expect(400, "invalid_request", "script is required"),
      run("empty script", R"({"script":""})")
          .Expect(400, "invalid_request", "script must not be empty"),
      run("script not a string", R"({"script":42})")
          .Expect(400, "invalid_request", "script must be a string"),
      run("unknown field", R"({"script":"1","scirpt":"1"})")
          .Expect(400, "invalid_request", "scirpt"),
      run("stdin not a string", R"({"script":"1","stdin":5})")
          .Expect(400, "invalid_request", "stdin must be a string"),
      run("bad language", R"({"script":"1","language":"ruby"})")
          .Expect(400, "invalid_request", "language"),
      run("language not a string", R"({"script":"1","language":3})")
          .Expect(400, "invalid_request", "language must be a string"),
      // Every bad limit names its field.
      limit(R"({"wall_ms":0})", "wall_ms"),
      limit(R"({"cpu_ms":-1})", "cpu_ms"),
      limit(R"({"memory_mb":1.5})", "memory_mb"),
      limit(R"({"output_bytes":1e3})", "output_bytes"),
      limit(R"({"processes":"100"})", "processes"),
      limit(R"({"wall_ms":true})", "wall_ms"),
      limit(R"({"wall_ms":null})", "wall_ms"),
      limit(R"({"wall_ms":99999999999999999999})", "wall_ms"),
      limit(R"({"wall_ms":600000})",
            "wall_ms: 600000 is above the maximum 30000 of plan starter"),
      limit(R"({"memory_mb":100000})", "memory_mb"),
      run("unknown limit name", RunBody(R"({"gpu":1})"))
          .Expect(400, "invalid_request", "gpu"),
      run("limits not an object", RunBody("[]"))
          .Expect(400, "invalid_request", "limits must be an object"),
      // Query, headers and URL.
      Row("?wait=maybe", "POST", "/run?wait=maybe")
          .Key(key)
          .Body(kPrint1)
          .Expect(400, "invalid_request", "wait"),
      get("?encoding=hex", "/result/" + bob_exec + "?encoding=hex")
          .Expect(400, "invalid_request", "encoding"),
      get("URL above 8 KiB", "/" + std::string(10'000, 'a'))
          .Expect(414, "invalid_request", "URI"),
      get("200 header lines", "/me")
          .Headers(flood)
          .Expect(431, "invalid_request", "header"),
      run("Idempotency-Key above 255 characters", kPrint1)
          .Headers({{"Idempotency-Key", std::string(256, 'k')}})
          .Expect(400, "invalid_request", "Idempotency-Key"),
      run("Idempotency-Key reused for another body", R"j({"script":"2"})j")
          .Headers(idem)
          .Expect(422, "idempotency_key_reused", "different request"),
      // Other users' ids answer exactly as unknown ones.
      get("another user's result", "/result/" + bob_exec)
          .Expect(404, "not_found", bob_exec),
      get("another user's status", "/status/" + bob_exec)
          .Expect(404, "not_found", bob_exec),
      get("an unknown execution", "/status/exec_unknown")
          .Expect(404, "not_found", "exec_unknown"),
      Row("another user's key", "DELETE", "/apikey/" + bob_key_id)
          .Key(key)
          .Expect(404, "not_found", bob_key_id),
      // Keys.
      Row("key name empty after trimming", "POST", "/apikey")
          .Key(key)
          .Body(R"({"name":"   "})")
          .Expect(400, "invalid_request", "name"),
      Row("key name not a string", "POST", "/apikey")
          .Key(key)
          .Body(R"({"name":7})")
          .Expect(400, "invalid_request", "name must be a string"),
      // Quota comes last.
      Row("bad body + quota used up: 400 first", "POST", "/run")
          .Key(spent)
          .Body(RunBody(R"({"wall_ms":0})"))
          .Expect(400, "invalid_request", "limits.wall_ms")
          .Usage(spent),
      Row("quota used up", "POST", "/run")
          .Key(spent)
          .Body(kPrint1)
          .Expect(429, "quota_exceeded", "quota")
          .Want("retry-after", "*")
          .Usage(spent),
  };
  REQUIRE(rows.size() >= 30);

  for (const Row& row : rows) {
    CAPTURE(row.name);
    std::string usage_key = row.usage_key.empty() ? key : row.usage_key;
    int64_t before = UsageOf(port, usage_key);
    HttpReply reply = row.raw.empty() ? Http(port, row.method, row.path,
                                             row.key, row.body, row.headers)
                                      : RawHttp(port, row.raw);
    std::string detail = CheckProblem(reply, row.status, row.code);
    CHECK_MESSAGE(detail.find(row.detail_part) != std::string::npos, detail);
    if (!row.want_header.empty()) {
      std::string value = reply.Header(row.want_header);
      if (row.want_value == "*") {
        CHECK(!value.empty());
      } else {
        CHECK(value == row.want_value);
      }
    }
    CHECK(UsageOf(port, usage_key) == before);
  }

  // The run of the first row was queued or running, as its problem says.
  HttpReply early = Http(port, "GET", "/result/" + slow_id, key);
  if (early.status == 409) {
    std::string state = Str(Json(early.body), "execution_status");
    CHECK((state == "queued" || state == "running"));
  }
}

TEST_CASE("not_finished carries the run's state in execution_status") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  HttpReply run = Http(
      server.port(), "POST", "/run", key,
      R"j({"script":"import time\ntime.sleep(60)","limits":{"wall_ms":8000}})j");
  REQUIRE(run.status == 202);
  std::string id = Str(Json(run.body), "execution_id");
  HttpReply early = Http(server.port(), "GET", "/result/" + id, key);
  CheckProblem(early, 409, "not_finished");
  std::string state = Str(Json(early.body), "execution_status");
  CHECK((state == "queued" || state == "running"));
}

TEST_CASE("the Authorization scheme is case-insensitive (RFC 7235)") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  HttpReply me = Http(server.port(), "GET", "/me", "", "",
                      {{"Authorization", "bearer " + key}});
  CHECK(me.status == 200);
}

// ---- Keys ---------------------------------------------------------------

TEST_CASE("a bad checksum is refused before any lookup") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  // An unknown but well-formed key reaches the lookup; a broken checksum
  // never does, and says so.
  std::string detail =
      CheckProblem(Http(server.port(), "GET", "/me", BreakChecksum(key)), 401,
                   "invalid_token");
  CHECK(detail.find("checksum") != std::string::npos);
  CHECK(detail.find("unknown key") == std::string::npos);
}

TEST_CASE("listings show the key's hint, never its secret") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  HttpReply created =
      Http(server.port(), "POST", "/apikey", key, R"({"name":"ci"})");
  REQUIRE(created.status == 201);
  std::string second = Str(Json(created.body), "api_key");
  CHECK(Str(Json(created.body), "hint") ==
        "dex_live_\u2026" + second.substr(second.size() - 4));
  HttpReply list = Http(server.port(), "GET", "/apikey", key);
  REQUIRE(list.status == 200);
  CHECK(list.body.find(key) == std::string::npos);
  CHECK(list.body.find(second) == std::string::npos);
  rapidjson::Document doc = Json(list.body);
  REQUIRE(doc["keys"].Size() == 2);
  CHECK(Str(doc["keys"][0], "hint") ==
        "dex_live_\u2026" + second.substr(second.size() - 4));
  CHECK(Str(doc["keys"][1], "hint") ==
        "dex_live_\u2026" + key.substr(key.size() - 4));
}

TEST_CASE("last_used_at is coalesced: repeated use within a minute") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  std::string first =
      Str(Json(Http(server.port(), "GET", "/apikey", key).body)["keys"][0],
          "last_used_at");
  // Whole seconds: even across a second boundary the stored time stays.
  for (int i = 0; i < 5; ++i) {
    REQUIRE(Http(server.port(), "GET", "/me", key).status == 200);
  }
  std::string later =
      Str(Json(Http(server.port(), "GET", "/apikey", key).body)["keys"][0],
          "last_used_at");
  CHECK(later == first);
}

TEST_CASE("a key may disable itself") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  int port = server.port();
  HttpReply created = Http(port, "POST", "/apikey", key, R"({"name":"b"})");
  REQUIRE(created.status == 201);
  std::string other = Str(Json(created.body), "api_key");
  std::string other_id = Str(Json(created.body), "id");
  HttpReply self = Http(port, "DELETE", "/apikey/" + other_id, other);
  REQUIRE(self.status == 200);
  CHECK(Str(Json(self.body), "status") == "disabled");
  CheckProblem(Http(port, "GET", "/me", other), 401, "key_disabled");
  // Idempotent, asked by the key still active.
  HttpReply again = Http(port, "DELETE", "/apikey/" + other_id, key);
  CHECK(again.status == 200);
  CHECK(Str(Json(again.body), "status") == "disabled");
}

TEST_CASE("the last active key: 409, then create another and delete works") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  int port = server.port();
  std::string id =
      Str(Json(Http(port, "GET", "/apikey", key).body)["keys"][0], "id");
  std::string detail = CheckProblem(Http(port, "DELETE", "/apikey/" + id, key),
                                    409, "last_active_key");
  CHECK(detail.find("create another") != std::string::npos);
  CHECK(Http(port, "GET", "/me", key).status == 200);
  HttpReply created = Http(port, "POST", "/apikey", key, R"({"name":"new"})");
  REQUIRE(created.status == 201);
  CHECK(Http(port, "DELETE", "/apikey/" + id, key).status == 200);
  CheckProblem(Http(port, "GET", "/me", key), 401, "key_disabled");
  CHECK(Http(port, "GET", "/me", Str(Json(created.body), "api_key")).status ==
        200);
}

TEST_CASE("disabling two keys at once never leaves a user without one") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  int port = server.port();
  HttpReply created = Http(port, "POST", "/apikey", key, R"({"name":"b"})");
  REQUIRE(created.status == 201);
  std::string other = Str(Json(created.body), "api_key");
  std::string ids[2] = {
      Str(Json(Http(port, "GET", "/apikey", key).body)["keys"][1], "id"),
      Str(Json(created.body), "id")};
  HttpReply replies[2];
  std::thread first(
      [&] { replies[0] = Http(port, "DELETE", "/apikey/" + ids[0], key); });
  replies[1] = Http(port, "DELETE", "/apikey/" + ids[1], other);
  first.join();
  int disabled = 0;
  for (const HttpReply& r : replies) {
    if (r.status == 200) {
      ++disabled;
    } else {
      CheckProblem(r, 409, "last_active_key");
    }
  }
  CHECK(disabled == 1);
  rapidjson::Document list =
      Json(Http(port, "GET", "/apikey", replies[0].status == 200 ? other : key)
               .body);
  int active = 0;
  for (auto& k : list["keys"].GetArray())
    active += Str(k, "status") == "active";
  CHECK(active == 1);
}

TEST_CASE("key names are 1 to 100 characters after trimming, over HTTP") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  int port = server.port();
  auto create = [&](const std::string& json_name) {
    return Http(port, "POST", "/apikey", key, "{\"name\":" + json_name + "}");
  };
  std::string e_acute_100;
  for (int i = 0; i < 100; ++i) e_acute_100 += "\xc3\xa9";

  HttpReply padded = create(R"("  ci  ")");
  REQUIRE(padded.status == 201);
  CHECK(Str(Json(padded.body), "name") == "ci");
  CHECK(create("\"" + std::string(100, 'a') + "\"").status == 201);
  CHECK(create("\"  " + std::string(100, 'a') + "  \"").status == 201);
  CHECK(create("\"" + e_acute_100 + "\"").status == 201);

  for (const std::string& bad :
       {std::string(R"("")"), std::string(R"("   ")"), std::string(R"("\t\n")"),
        "\"" + std::string(101, 'a') + "\"", "\"" + e_acute_100 + "x\"",
        std::string(R"("a\u0001b")")}) {
    CAPTURE(bad);
    std::string detail = CheckProblem(create(bad), 400, "invalid_request");
    CHECK(detail.find("name") != std::string::npos);
  }
  CheckProblem(Http(port, "POST", "/apikey", key, "{}"), 400,
               "invalid_request");
  // Five created above plus the first.
  CHECK(Json(Http(port, "GET", "/apikey", key).body)["keys"].Size() == 5);
}

// ---- Quota --------------------------------------------------------------

TEST_CASE("/me and /run carry X-RateLimit-* for the month") {
  TempDir dir;
  SetPlan(dir.path(), {"three", "--quota", "3"});
  std::string key = CreateUser(dir.path(), "three");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  HttpReply me = Http(server.port(), "GET", "/me", key);
  REQUIRE(me.status == 200);
  rapidjson::Document doc = Json(me.body);
  CHECK(me.Header("x-ratelimit-limit") == "3");
  CHECK(me.Header("x-ratelimit-remaining") == "3");
  CHECK(me.Header("x-ratelimit-used") == "0");
  HttpReply run = Http(server.port(), "POST", "/run", key, kPrint1);
  REQUIRE(run.status == 202);
  CHECK(run.Header("x-ratelimit-limit") == "3");
  CHECK(run.Header("x-ratelimit-remaining") == "2");
  CHECK(run.Header("x-ratelimit-used") == "1");
  // The reset is the period's end, in epoch seconds.
  std::string end = Str(doc, "period_end");
  struct tm tm = {};
  REQUIRE(strptime(end.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm) != nullptr);
  CHECK(run.Header("x-ratelimit-reset") == std::to_string(timegm(&tm)));
  CHECK(me.Header("x-ratelimit-reset") == std::to_string(timegm(&tm)));
}

TEST_CASE("errors of /run to a known user carry X-RateLimit-* too") {
  TempDir dir;
  SetPlan(dir.path(), {"three", "--quota", "3"});
  std::string key = CreateUser(dir.path(), "three");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  HttpReply bad =
      Http(server.port(), "POST", "/run", key, RunBody(R"({"wall_ms":0})"));
  CheckProblem(bad, 400, "invalid_request");
  CHECK(bad.Header("x-ratelimit-limit") == "3");
  CHECK(bad.Header("x-ratelimit-remaining") == "3");
  CHECK(bad.Header("x-ratelimit-used") == "0");
  CHECK(!bad.Header("x-ratelimit-reset").empty());
  CHECK(bad.Header("retry-after").empty());
  // Before the key is known there is no window to tell.
  HttpReply anonymous = Http(server.port(), "POST", "/run", "", kPrint1);
  CheckProblem(anonymous, 401, "missing_credentials");
  CHECK(anonymous.Header("x-ratelimit-limit").empty());
}

TEST_CASE("a body of exactly 2 MiB is read") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  std::string body = R"j({"script":"print(1)")j";
  body += std::string((2u << 20) - body.size() - 1, ' ') + "}";
  REQUIRE(body.size() == 2u << 20);
  CHECK(Http(server.port(), "POST", "/run", key, body).status == 202);
}

TEST_CASE("429 quota_exceeded: Retry-After is the seconds to the period end") {
  TempDir dir;
  SetPlan(dir.path(), {"one", "--quota", "1"});
  std::string key = CreateUser(dir.path(), "one");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  REQUIRE(Http(server.port(), "POST", "/run", key, kPrint1).status == 202);
  HttpReply over = Http(server.port(), "POST", "/run", key, kPrint1);
  CheckProblem(over, 429, "quota_exceeded");
  CHECK(over.Header("x-ratelimit-limit") == "1");
  CHECK(over.Header("x-ratelimit-remaining") == "0");
  CHECK(over.Header("x-ratelimit-used") == "1");
  int64_t reset = std::stoll(over.Header("x-ratelimit-reset"));
  int64_t retry = std::stoll(over.Header("retry-after"));
  int64_t expected = reset - static_cast<int64_t>(time(nullptr));
  // Liveness bound only: the answer left the server a moment ago.
  CHECK(retry >= expected - 5);
  CHECK(retry <= expected + 1);
  CHECK(UsageOf(server.port(), key) == 1);
}

TEST_CASE("402 subscription_inactive when the effective plan allows nothing") {
  TempDir dir;
  std::string user_id;
  std::string key = CreateUser(dir.path(), "starter", &user_id);
  SetPlan(dir.path(), {"free", "--quota", "0"});
  UpdateUser(dir.path(), user_id, "canceled");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  HttpReply me = Http(server.port(), "GET", "/me", key);
  REQUIRE(me.status == 200);
  CHECK(Str(Json(me.body), "effective_plan") == "free");
  CHECK(Int(Json(me.body), "effective_quota_monthly") == 0);
  HttpReply refused = Http(server.port(), "POST", "/run", key, kPrint1);
  std::string detail = CheckProblem(refused, 402, "subscription_inactive");
  CHECK(detail.find("free") != std::string::npos);
  CHECK(refused.Header("x-ratelimit-limit") == "0");
  CHECK(refused.Header("x-ratelimit-remaining") == "0");
  CHECK(UsageOf(server.port(), key) == 0);
}

// Finds the server's dex-spawner: a child process of the server.
pid_t FindSpawner(pid_t server_pid) {
  std::string task_dir = "/proc/" + std::to_string(server_pid) + "/task";
  for (const auto& task : std::filesystem::directory_iterator(task_dir)) {
    std::ifstream children(task.path() / "children");
    pid_t child;
    while (children >> child) {
      std::ifstream comm("/proc/" + std::to_string(child) + "/comm");
      std::string name;
      std::getline(comm, name);
      if (name == "dex-spawner") return child;
    }
  }
  return -1;
}

TEST_CASE("a run dex fails to execute is failed, sandbox_error, refunded") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  pid_t spawner = FindSpawner(server.pid());
  REQUIRE(spawner > 0);
  // Only the spawner this test's own server started.
  REQUIRE(kill(spawner, SIGKILL) == 0);

  HttpReply run = Http(server.port(), "POST", "/run?wait=true", key, kPrint1);
  REQUIRE(run.status == 200);
  rapidjson::Document doc = Json(run.body);
  CHECK(Str(doc, "status") == "failed");
  CHECK(Str(doc, "reason") == "sandbox_error");
  CHECK(doc["exit_code"].IsNull());
  CHECK(doc["signal"].IsNull());
  CHECK(Str(doc, "stdout") == "");
  CHECK(Str(doc, "stderr") == "");
  CHECK(!Str(doc, "detail").empty());
  CHECK(UsageOf(server.port(), key) == 0);
  // The server itself still answers.
  CHECK(Http(server.port(), "GET", "/me", key).status == 200);
  // Regression: the spawner was never replaced, so every later run failed
  // too. The next run starts a new one and completes.
  HttpReply next = Http(server.port(), "POST", "/run?wait=true", key, kPrint1);
  REQUIRE(next.status == 200);
  rapidjson::Document after = Json(next.body);
  CHECK(Str(after, "status") == "completed");
  CHECK(Str(after, "stdout") == "1\n");
  CHECK(UsageOf(server.port(), key) == 1);
  pid_t replacement = FindSpawner(server.pid());
  CHECK(replacement > 0);
  CHECK(replacement != spawner);
}

TEST_CASE("64 concurrent runs with 10 units left: exactly 10 admitted") {
  TempDir dir;
  SetPlan(dir.path(), {"ten", "--quota", "10"});
  std::string key = CreateUser(dir.path(), "ten");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  constexpr int kClients = 64;
  std::vector<HttpReply> replies(kClients);
  std::vector<std::thread> threads;
  std::atomic<bool> go{false};
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      replies[i] = Http(server.port(), "POST", "/run", key, kPrint1);
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  int admitted = 0, refused = 0;
  for (const HttpReply& r : replies) {
    if (r.status == 202) {
      ++admitted;
    } else {
      CheckProblem(r, 429, "quota_exceeded");
      ++refused;
    }
  }
  CHECK(admitted == 10);
  CHECK(refused == kClients - 10);
  CHECK(UsageOf(server.port(), key) == 10);
}

TEST_CASE("64 stalled connections leave GET /me answered within a second") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  std::vector<std::unique_ptr<RawConnection>> stalled;
  for (int i = 0; i < 64; ++i) {
    stalled.push_back(std::make_unique<RawConnection>(server.port()));
    stalled.back()->Send("GET /me HTT");
  }
  auto start = SteadyClock::now();
  HttpReply me = Http(server.port(), "GET", "/me", key);
  auto took = SteadyClock::now() - start;
  CHECK(me.status == 200);
  // A liveness bound, measured once.
  CHECK(took < std::chrono::seconds(1));
}

// ---- Idempotency-Key ----------------------------------------------------

TEST_CASE("a replay of an unfinished run returns it and charges nothing") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  std::map<std::string, std::string> idem = {{"Idempotency-Key", "slow-1"}};
  const std::string body =
      R"j({"script":"import time\ntime.sleep(60)","limits":{"wall_ms":8000}})j";
  HttpReply first = Http(server.port(), "POST", "/run", key, body, idem);
  REQUIRE(first.status == 202);
  CHECK(first.Header("idempotent-replayed").empty());
  HttpReply again = Http(server.port(), "POST", "/run", key, body, idem);
  REQUIRE(again.status == 202);
  CHECK(again.Header("idempotent-replayed") == "true");
  std::string id = Str(Json(first.body), "execution_id");
  CHECK(Str(Json(again.body), "execution_id") == id);
  CHECK(again.Header("location") == "/status/" + id);
  CHECK(UsageOf(server.port(), key) == 1);
}

TEST_CASE("a replay of a finished run returns its result, charges nothing") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  std::map<std::string, std::string> idem = {{"Idempotency-Key", "done-1"}};
  HttpReply first =
      Http(server.port(), "POST", "/run?wait=true", key, kPrint1, idem);
  REQUIRE(first.status == 200);
  HttpReply again =
      Http(server.port(), "POST", "/run?wait=true", key, kPrint1, idem);
  REQUIRE(again.status == 200);
  CHECK(again.Header("idempotent-replayed") == "true");
  rapidjson::Document doc = Json(again.body);
  CHECK(Str(doc, "execution_id") == Str(Json(first.body), "execution_id"));
  CHECK(Str(doc, "stdout") == "1\n");
  CHECK(UsageOf(server.port(), key) == 1);
}

TEST_CASE("a replay still charges nothing when the quota is used up") {
  TempDir dir;
  SetPlan(dir.path(), {"one", "--quota", "1"});
  std::string key = CreateUser(dir.path(), "one");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  std::map<std::string, std::string> idem = {{"Idempotency-Key", "q-1"}};
  HttpReply first = Http(server.port(), "POST", "/run", key, kPrint1, idem);
  REQUIRE(first.status == 202);
  HttpReply again = Http(server.port(), "POST", "/run", key, kPrint1, idem);
  CHECK(again.status == 202);
  CHECK(again.Header("idempotent-replayed") == "true");
  CHECK(UsageOf(server.port(), key) == 1);
}

TEST_CASE("the same Idempotency-Key with another query answers 422") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  std::map<std::string, std::string> idem = {{"Idempotency-Key", "query-1"}};
  REQUIRE(Http(server.port(), "POST", "/run", key, kPrint1, idem).status ==
          202);
  CheckProblem(
      Http(server.port(), "POST", "/run?wait=true", key, kPrint1, idem), 422,
      "idempotency_key_reused");
  CHECK(UsageOf(server.port(), key) == 1);
}

TEST_CASE("a replay while the first ?wait=true is held answers 409") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  int port = server.port();
  std::map<std::string, std::string> idem = {{"Idempotency-Key", "held-1"}};
  // The run takes 6 s, so the first answer is held that long.
  const std::string body =
      R"j({"script":"import time\ntime.sleep(6)","limits":{"wall_ms":20000}})j";
  HttpReply first;
  std::thread holder(
      [&] { first = Http(port, "POST", "/run?wait=true", key, body, idem); });
  // The charge commits before the hold starts.
  auto deadline = SteadyClock::now() + std::chrono::seconds(5);
  while (UsageOf(port, key) == 0 && SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  HttpReply during = Http(port, "POST", "/run?wait=true", key, body, idem);
  holder.join();
  CheckProblem(during, 409, "idempotency_in_progress");
  REQUIRE(first.status == 200);
  CHECK(Str(Json(first.body), "status") == "completed");
  HttpReply after = Http(port, "POST", "/run?wait=true", key, body, idem);
  CHECK(after.status == 200);
  CHECK(after.Header("idempotent-replayed") == "true");
  CHECK(Str(Json(after.body), "execution_id") ==
        Str(Json(first.body), "execution_id"));
  CHECK(UsageOf(port, key) == 1);
}

TEST_CASE("16 requests at once with one Idempotency-Key charge once") {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  std::map<std::string, std::string> idem = {{"Idempotency-Key", "burst"}};
  constexpr int kClients = 16;
  std::vector<HttpReply> replies(kClients);
  std::vector<std::thread> threads;
  std::atomic<bool> go{false};
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      replies[i] = Http(server.port(), "POST", "/run", key, kPrint1, idem);
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  std::set<std::string> ids;
  int first_answers = 0;
  for (const HttpReply& r : replies) {
    if (r.status == 409) {
      CheckProblem(r, 409, "idempotency_in_progress");
      continue;
    }
    REQUIRE(r.status == 202);
    ids.insert(Str(Json(r.body), "execution_id"));
    first_answers += r.Header("idempotent-replayed").empty();
  }
  CHECK(ids.size() == 1);
  CHECK(first_answers == 1);
  CHECK(UsageOf(server.port(), key) == 1);
}

TEST_CASE("Idempotency-Keys are scoped to the user") {
  TempDir dir;
  std::string alice = CreateUser(dir.path(), "starter");
  std::string bob = CreateUser(dir.path(), "starter");
  ShimServer server(dir.path());
  REQUIRE(server.started());
  std::map<std::string, std::string> idem = {{"Idempotency-Key", "shared"}};
  HttpReply a = Http(server.port(), "POST", "/run", alice, kPrint1, idem);
  REQUIRE(a.status == 202);
  // Another body under the same key: Bob's own first use, not a reuse.
  HttpReply b = Http(server.port(), "POST", "/run", bob,
                     R"j({"script":"print(2)"})j", idem);
  REQUIRE(b.status == 202);
  CHECK(b.Header("idempotent-replayed").empty());
  CHECK(Str(Json(b.body), "execution_id") != Str(Json(a.body), "execution_id"));
  CHECK(UsageOf(server.port(), alice) == 1);
  CHECK(UsageOf(server.port(), bob) == 1);
}

}  // namespace
}  // namespace dex::test
