// JSON in and out of the shim: the wire shapes of §2 and §8 of the design,
// problem+json errors, strict request parsing, and the encodings the
// answers need (base64, SHA-256 hex). Shim-internal: RapidJSON types may
// appear here because nothing outside shim/ includes this header.
#ifndef DEX_SHIM_JSON_IO_H_
#define DEX_SHIM_JSON_IO_H_

#include <rapidjson/document.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dex/service.h"

namespace dex::shim {

// Deepest nesting of arrays and objects a request body may have. Bodies
// are parsed iteratively, so this bounds work, not the stack.
inline constexpr int kMaxJsonDepth = 64;

// ---- Answers ---------------------------------------------------------

// GET /me, and what `dex-shim user update` prints.
std::string UsageJson(const UsageView& usage);
// One key as listed: never the secret or its hash.
std::string KeyJson(const KeyInfo& key);
// GET /apikey: {"keys": [...]} in the order given.
std::string KeyListJson(const std::vector<KeyInfo>& keys);
// POST /apikey: the only place the raw key appears.
std::string MintedKeyJson(const MintedKey& key);
// `dex-shim user create`.
std::string NewUserJson(const NewUser& user);
// `dex-shim plan set`.
std::string PlanJson(const Plan& plan);
// POST /run and GET /status: {"execution_id", "status"}.
std::string ExecutionStatusJson(const Execution& execution);
// GET /result of a terminal run. With `base64` the streams are the exact
// bytes base64-encoded and "encoding" says so; otherwise invalid UTF-8 is
// replaced.
std::string ResultJson(const Execution& execution, bool base64);
// GET /healthz.
std::string HealthJson(const Health& health);

// An RFC 9457 problem document. `extra` adds string members (for example
// execution_status) after the standard ones.
struct Problem {
  int status = 500;
  std::string code;
  std::string title;
  std::string detail;
  std::string request_id;
  std::vector<std::pair<std::string, std::string>> extra;
};
// The URI naming a problem code: "https://dex.dev/problems/<code>".
std::string ProblemType(std::string_view code);
std::string ProblemJson(const Problem& problem);

// ---- Requests --------------------------------------------------------

// Parses a request body strictly: UTF-8 validated, iterative (no
// recursion), at most kMaxJsonDepth levels. kInvalidArgument with code
// "invalid_json" and the parser's reason and offset otherwise.
Status ParseJson(std::string_view body, rapidjson::Document* doc);

// The body of POST /run as a RunSpec (without idempotency fields).
// kInvalidArgument "invalid_request" naming the offending field.
Result<RunSpec> ParseRunBody(const rapidjson::Value& body);
// The "name" of POST /apikey (validated further by the library).
Result<std::string> ParseKeyNameBody(const rapidjson::Value& body);

// A canonical serialisation: object members sorted by name (byte order),
// no insignificant white space, numbers as RapidJSON writes them. Two
// bodies that parse to the same value give the same string.
std::string CanonicalJson(const rapidjson::Value& value);

// ---- Encodings -------------------------------------------------------

std::string Base64Encode(std::string_view bytes);
// Lower-case hex of SHA-256 (OpenSSL's EVP); empty if OpenSSL fails.
std::string Sha256Hex(std::string_view bytes);

}  // namespace dex::shim

#endif  // DEX_SHIM_JSON_IO_H_
