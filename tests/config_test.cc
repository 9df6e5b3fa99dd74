// `--config FILE`: a JSON object of a command's flags; the command line
// overrides it.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "tests/logged_shim.h"
#include "tests/test_util.h"

namespace dex::test {
namespace {

std::string WriteConfig(const TempDir& dir, const std::string& json) {
  std::string path = dir.path() + "/dex.json";
  std::ofstream(path) << json;
  return path;
}

TEST_CASE("serve takes its flags from the file") {
  TempDir dir;
  std::string log = dir.path() + "/shim.log";
  std::string config =
      WriteConfig(dir, R"({"data": ")" + dir.path() +
                           R"(/data", "listen": "127.0.0.1:0", "workers": 3,
               "log_level": "warn"})");
  {
    LoggedShim shim({"--config", config}, log);
    REQUIRE(shim.port() > 0);
    HttpReply health = Http(shim.port(), "GET", "/healthz");
    CHECK(health.body.find("\"workers\":3") != std::string::npos);
    shim.Stop();
  }
  // log_level warn from the file: no info lines at all.
  CHECK(ReadFile(log).find(" info ") == std::string::npos);
}

TEST_CASE("flags on the command line override the file") {
  TempDir dir;
  std::string log = dir.path() + "/shim.log";
  std::string config = WriteConfig(
      dir, R"({"data": ")" + dir.path() +
               R"(/data", "listen": "127.0.0.1:0", "log_level": "off"})");
  {
    LoggedShim shim({"--config", config, "--log-level", "info"}, log);
    REQUIRE(shim.port() > 0);
    shim.Stop();
  }
  CHECK(ReadFile(log).find(" info dex-shim serving on") != std::string::npos);
}

TEST_CASE("admin commands take --config too") {
  TempDir dir;
  std::string config = WriteConfig(
      dir, R"({"data": ")" + dir.path() + R"(/data", "plan": "free"})");
  CommandResult r = RunShim({"user", "create", "--config", config});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("\"api_key\"") != std::string::npos);
}

TEST_CASE("an unknown setting is a usage error naming it") {
  TempDir dir;
  std::string config = WriteConfig(dir, R"({"listen": "127.0.0.1:0",
                                            "wrokers": 2})");
  CommandResult r = RunShim({"serve", "--config", config});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("unknown setting \"wrokers\"") != std::string::npos);
}

TEST_CASE("a setting of another command is rejected") {
  TempDir dir;
  std::string config = WriteConfig(dir, R"({"plan": "free"})");
  CommandResult r = RunShim({"serve", "--config", config});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("unknown setting \"plan\"") != std::string::npos);
}

TEST_CASE("a file that is not a JSON object is a usage error") {
  TempDir dir;
  CHECK(RunShim({"serve", "--config", WriteConfig(dir, "[1]")}).exit_code == 2);
  CommandResult bad = RunShim({"serve", "--config", WriteConfig(dir, "{")});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("invalid JSON") != std::string::npos);
  CommandResult nested =
      RunShim({"serve", "--config", WriteConfig(dir, R"({"workers": [2]})")});
  CHECK(nested.exit_code == 2);
  CHECK(nested.err.find("\"workers\" must be") != std::string::npos);
  CommandResult missing =
      RunShim({"serve", "--config", dir.path() + "/nope.json"});
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.find("cannot be read") != std::string::npos);
}

}  // namespace
}  // namespace dex::test
