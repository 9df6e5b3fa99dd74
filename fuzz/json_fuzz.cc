// libFuzzer target for the shim's request parsing: the raw body through
// ParseJson (UTF-8 validation, depth limit), then the POST /run and
// POST /apikey shape checks, and the canonical form that idempotency
// fingerprints hash. Built by fuzz/CMakeLists.txt with clang and
// -fsanitize=fuzzer,address,undefined; .ci/run runs it for 60 s.
#include <rapidjson/document.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "shim/json_io.h"

namespace {

// Aborts (a finding) when the canonical form of an accepted body is not
// itself accepted. (It is not a fixed point for every number: RapidJSON's
// default double parsing is not correctly rounded, so a long decimal may
// print back as a neighbouring double. The fingerprint only needs equal
// bodies to give equal forms, which a deterministic writer gives.)
void CheckCanonicalParses(const rapidjson::Value& value) {
  std::string canonical = dex::shim::CanonicalJson(value);
  rapidjson::Document again;
  if (!dex::shim::ParseJson(canonical, &again).ok()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  rapidjson::Document doc;
  dex::Status status = dex::shim::ParseJson(body, &doc);
  if (!status.ok()) {
    if (status.message().empty()) std::abort();  // errors must say why
    return 0;
  }
  dex::Result<dex::RunSpec> run = dex::shim::ParseRunBody(doc);
  if (run.ok() && run->script.empty() && doc.IsObject() &&
      !doc.HasMember("script")) {
    std::abort();  // a run without a script must be refused
  }
  dex::Result<std::string> name = dex::shim::ParseKeyNameBody(doc);
  (void)name;
  CheckCanonicalParses(doc);
  return 0;
}
