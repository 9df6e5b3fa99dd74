// GET /metrics on its own listener (--metrics-listen): counters move
// after a run, gauges are present, and the API listener does not serve it.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "tests/logged_shim.h"
#include "tests/test_util.h"

namespace dex::test {
namespace {

// The value of the sample line starting with `series` ("name{labels}"),
// or -1 when there is none.
double Sample(const std::string& text, const std::string& series) {
  for (const std::string& line : Lines(text)) {
    if (line.rfind(series + " ", 0) == 0) {
      return std::atof(line.c_str() + series.size() + 1);
    }
  }
  return -1;
}

// The metrics port, from the log line serve writes before it is ready.
int MetricsPort(const std::string& log) {
  const std::string kPrefix = "metrics on http://127.0.0.1:";
  std::string text = ReadFile(log);
  size_t at = text.find(kPrefix);
  return at == std::string::npos
             ? 0
             : std::atoi(text.c_str() + at + kPrefix.size());
}

struct MetricsFixture {
  TempDir dir;
  std::string log = dir.path() + "/shim.log";
  std::string key = CreateUser(dir.path() + "/data", "starter");
  LoggedShim shim{{"--data", dir.path() + "/data", "--listen", "127.0.0.1:0",
                   "--metrics-listen", "127.0.0.1:0"},
                  log};
  int metrics_port = MetricsPort(log);

  // Requests are counted once their answer is written, which may be just
  // after the client has read it: waits (at most 5 s) for `series` to
  // reach `value`, then returns the scrape.
  std::string ScrapeWhen(const std::string& series, double value) {
    std::string text = Scrape();
    for (int i = 0; i < 100 && Sample(text, series) != value; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      text = Scrape();
    }
    return text;
  }

  std::string Scrape() {
    HttpReply r = Http(metrics_port, "GET", "/metrics");
    REQUIRE(r.status == 200);
    CHECK(r.Header("content-type").find("text/plain; version=0.0.4") == 0);
    return r.body;
  }
};

TEST_CASE_FIXTURE(MetricsFixture, "a run moves the run and HTTP counters") {
  REQUIRE(shim.port() > 0);
  REQUIRE(metrics_port > 0);
  std::string before = Scrape();
  CHECK(Sample(before, "dex_runs_total{reason=\"ok\"}") == 0);
  CHECK(Sample(before, "dex_runs_total{reason=\"nonzero_exit\"}") == 0);
  CHECK(Sample(before, "dex_run_duration_seconds_count") == 0);
  CHECK(Sample(before, "dex_queue_depth") == 0);
  CHECK(Sample(before, "dex_store_ok") == 1);

  std::string run = R"j({"script": "print('hello')"})j";
  std::string fail = R"j({"script": "raise SystemExit(3)"})j";
  REQUIRE(Http(shim.port(), "POST", "/run?wait=true", key, run).status == 200);
  REQUIRE(Http(shim.port(), "POST", "/run?wait=true", key, fail).status == 200);
  REQUIRE(Http(shim.port(), "GET", "/me", "").status == 401);

  std::string after = ScrapeWhen(
      "dex_http_requests_total{method=\"GET\",route=\"/me\",status=\"401\"}",
      1);
  CHECK(Sample(after, "dex_runs_total{reason=\"ok\"}") == 1);
  CHECK(Sample(after, "dex_runs_total{reason=\"nonzero_exit\"}") == 1);
  CHECK(Sample(after, "dex_run_duration_seconds_count") == 2);
  CHECK(Sample(after, "dex_run_duration_seconds_bucket{le=\"+Inf\"}") == 2);
  CHECK(Sample(after, "dex_run_duration_seconds_sum") > 0);
  CHECK(Sample(after,
               "dex_http_requests_total{method=\"POST\",route=\"/run\","
               "status=\"200\"}") == 2);
  CHECK(Sample(after,
               "dex_http_requests_total{method=\"GET\",route=\"/me\","
               "status=\"401\"}") == 1);
  CHECK(after.find("# TYPE dex_run_duration_seconds histogram") !=
        std::string::npos);
  CHECK(after.find("# TYPE dex_queue_depth gauge") != std::string::npos);
}

// Regression: the gauge read 0 while the pool held prepared sandboxes. The
// figure is the pool's size right after the latest run took its sandbox;
// a burst of runs grows the pool, so later runs find sandboxes left.
TEST_CASE_FIXTURE(MetricsFixture, "warm sandboxes available are reported") {
  REQUIRE(metrics_port > 0);
  std::string run = R"j({"script": "import time; time.sleep(0.3)"})j";
  std::vector<std::thread> burst;
  for (int i = 0; i < 4; ++i) {
    burst.emplace_back(
        [&] { Http(shim.port(), "POST", "/run?wait=true", key, run); });
  }
  for (auto& t : burst) t.join();
  double available = 0;
  for (int i = 0; i < 40 && available < 1; ++i) {
    REQUIRE(Http(shim.port(), "POST", "/run?wait=true", key,
                 R"j({"script": "pass"})j")
                .status == 200);
    available = Sample(Scrape(), "dex_warm_sandboxes_available");
  }
  CHECK(available >= 1);
  CHECK(available <= 8);  // SandboxOptions::warm_pool_max
}

TEST_CASE_FIXTURE(MetricsFixture, "ids never become label values") {
  REQUIRE(shim.port() > 0);
  REQUIRE(Http(shim.port(), "GET", "/status/exec_nosuchid", key).status == 404);
  REQUIRE(Http(shim.port(), "GET", "/no/such/route").status == 404);
  std::string text = ScrapeWhen(
      "dex_http_requests_total{method=\"GET\",route=\"-\",status=\"404\"}", 1);
  CHECK(text.find("exec_nosuchid") == std::string::npos);
  CHECK(text.find("/no/such/route") == std::string::npos);
  CHECK(Sample(text,
               "dex_http_requests_total{method=\"GET\",route=\"/status/"
               "{id}\",status=\"404\"}") == 1);
  CHECK(Sample(text,
               "dex_http_requests_total{method=\"GET\",route=\"-\","
               "status=\"404\"}") == 1);
}

TEST_CASE_FIXTURE(MetricsFixture, "the metrics listener serves only /metrics") {
  REQUIRE(metrics_port > 0);
  CHECK(Http(metrics_port, "GET", "/me", key).status == 404);
  CHECK(Http(metrics_port, "GET", "/healthz").status == 404);
}

TEST_CASE("the API listener does not serve /metrics") {
  TempDir dir;
  ShimServer shim(dir.path());
  REQUIRE(shim.started());
  HttpReply r = Http(shim.port(), "GET", "/metrics");
  CHECK(r.status == 404);
  CHECK(r.Header("content-type") == "application/problem+json");
}

}  // namespace
}  // namespace dex::test
