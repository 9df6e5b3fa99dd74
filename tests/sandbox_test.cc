#include <doctest/doctest.h>

#include "dex/sandbox.h"

namespace dex {
namespace {

TEST_CASE("hello") {
  auto sandbox = Sandbox::Open(SandboxOptions());
  REQUIRE_MESSAGE(sandbox.ok(), sandbox.status().ToString());
  RunRequest request;
  request.script = "print('hello')\n";
  auto outcome = (*sandbox)->Run(request);
  REQUIRE_MESSAGE(outcome.ok(), outcome.status().ToString());
  CHECK(outcome->stdout_data == "hello\n");
  CHECK(outcome->stderr_data == "");
  CHECK(outcome->reason == Reason::kOk);
}

}  // namespace
}  // namespace dex
