#include "shim/json_io.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <rapidjson/error/en.h>
#include <rapidjson/reader.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cmath>
#include <string>

namespace dex::shim {
namespace {

// A rapidjson output stream that writes into the std::string the answer is
// sent from: no StringBuffer to copy out of.
class StringSink {
 public:
  using Ch = char;
  StringSink() { text_.reserve(512); }  // most answers fit
  void Put(char c) { text_.push_back(c); }
  void Flush() {}
  std::string Take() { return std::move(text_); }

 private:
  std::string text_;
};

using Writer = rapidjson::Writer<StringSink>;

constexpr unsigned kParseFlags =
    rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag;

// The limits a run may name, in the order they are documented.
constexpr const char* kLimitNames[] = {"wall_ms", "cpu_ms", "memory_mb",
                                       "output_bytes", "processes"};

void Key(Writer& w, std::string_view name) {
  w.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
}

void Str(Writer& w, std::string_view name, std::string_view value) {
  Key(w, name);
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

void Int(Writer& w, std::string_view name, int64_t value) {
  Key(w, name);
  w.Int64(value);
}

void Bool(Writer& w, std::string_view name, bool value) {
  Key(w, name);
  w.Bool(value);
}

void Time(Writer& w, std::string_view name, int64_t unix_ms) {
  char text[kFormattedTimeChars];
  Str(w, name, FormatTime(unix_ms, text));
}

// A time that may not have happened yet: null then.
void OptTime(Writer& w, std::string_view name,
             const std::optional<int64_t>& unix_ms) {
  if (unix_ms) return Time(w, name, *unix_ms);
  Key(w, name);
  w.Null();
}

void WriteKey(Writer& w, const KeyInfo& key) {
  w.StartObject();
  Str(w, "id", key.id);
  Str(w, "name", key.name);
  Str(w, "hint", key.hint);
  Str(w, "status", key.active ? "active" : "disabled");
  Time(w, "created_at", key.created_ms);
  OptTime(w, "last_used_at", key.last_used_ms);
  OptTime(w, "disabled_at", key.disabled_ms);
  w.EndObject();
}

// The run's output as the answer carries it.
void Stream(Writer& w, std::string_view name, const std::string& bytes,
            bool base64) {
  Str(w, name, base64 ? Base64Encode(bytes) : SanitizeUtf8(bytes));
}

void WriteCanonical(Writer& w, const rapidjson::Value& value) {
  if (value.IsObject()) {
    std::vector<const rapidjson::Value::Member*> members;
    for (auto& m : value.GetObject()) members.push_back(&m);
    std::sort(members.begin(), members.end(), [](auto* a, auto* b) {
      return std::string_view(a->name.GetString(), a->name.GetStringLength()) <
             std::string_view(b->name.GetString(), b->name.GetStringLength());
    });
    w.StartObject();
    for (auto* m : members) {
      w.Key(m->name.GetString(), m->name.GetStringLength());
      WriteCanonical(w, m->value);  // depth is bounded by ParseJson
    }
    w.EndObject();
  } else if (value.IsArray()) {
    w.StartArray();
    for (auto& v : value.GetArray()) WriteCanonical(w, v);
    w.EndArray();
  } else {
    value.Accept(w);
  }
}

// Counts nesting while RapidJSON reads, and stops the read past the limit.
struct DepthGuard
    : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, DepthGuard> {
  int depth = 0;
  bool too_deep = false;
  bool Default() { return true; }
  bool Open() {
    too_deep = ++depth > kMaxJsonDepth;
    return !too_deep;
  }
  bool StartObject() { return Open(); }
  bool StartArray() { return Open(); }
  bool EndObject(rapidjson::SizeType) { return --depth, true; }
  bool EndArray(rapidjson::SizeType) { return --depth, true; }
  // RapidJSON decodes an unpaired low surrogate escape ("\udc00") into
  // bytes that are not UTF-8; such strings are refused like raw ones.
  bool bad_text = false;
  bool String(const char* s, rapidjson::SizeType n, bool) { return Text(s, n); }
  bool Key(const char* s, rapidjson::SizeType n, bool) { return Text(s, n); }
  // RapidJSON reads a number past the double range ("1e400") as infinity,
  // which JSON cannot express; it is refused.
  bool bad_number = false;
  bool Double(double d) {
    bad_number = !std::isfinite(d);
    return !bad_number;
  }
  bool Text(const char* s, rapidjson::SizeType n) {
    std::string_view text(s, n);
    bad_text = SanitizeUtf8(text) != text;
    return !bad_text;
  }
};

Status BadRequest(std::string message) {
  return Status(Category::kInvalidArgument, "invalid_request",
                std::move(message));
}

std::string_view View(const rapidjson::Value& s) {
  return std::string_view(s.GetString(), s.GetStringLength());
}

// Names of members not in `known`, comma-separated; empty if none.
template <size_t N>
std::string UnknownMembers(const rapidjson::Value& object,
                           const char* const (&known)[N]) {
  std::string unknown;
  for (auto& m : object.GetObject()) {
    std::string_view name = View(m.name);
    bool found = std::any_of(std::begin(known), std::end(known),
                             [&](const char* k) { return name == k; });
    if (found) continue;
    if (!unknown.empty()) unknown += ", ";
    unknown += SanitizeUtf8(name);
  }
  return unknown;
}

Status ParseLimits(const rapidjson::Value& limits, LimitsRequest* out) {
  if (!limits.IsObject()) return BadRequest("limits must be an object");
  std::string unknown = UnknownMembers(limits, kLimitNames);
  if (!unknown.empty()) {
    return BadRequest(
        fmt::format("limits has unknown field(s): {} (known: wall_ms, cpu_ms, "
                    "memory_mb, output_bytes, processes)",
                    unknown));
  }
  std::optional<int64_t>* slots[] = {&out->wall_ms, &out->cpu_ms,
                                     &out->memory_mb, &out->output_bytes,
                                     &out->processes};
  for (size_t i = 0; i < std::size(kLimitNames); ++i) {
    auto it = limits.FindMember(kLimitNames[i]);
    if (it == limits.MemberEnd()) continue;
    // 1.5, 1e3 and 2^63 parse as doubles or unsigned, never as int64.
    if (!it->value.IsInt64() || it->value.GetInt64() <= 0) {
      return BadRequest(
          fmt::format("limits.{} must be a positive integer", kLimitNames[i]));
    }
    *slots[i] = it->value.GetInt64();
  }
  return Status::Ok();
}

// An optional string member: absent leaves `out` alone.
Status OptionalString(const rapidjson::Value& body, const char* name,
                      std::optional<std::string>* out) {
  auto it = body.FindMember(name);
  if (it == body.MemberEnd()) return Status::Ok();
  if (!it->value.IsString()) {
    return BadRequest(fmt::format("{} must be a string", name));
  }
  *out = std::string(View(it->value));
  return Status::Ok();
}

}  // namespace

std::string UsageJson(const UsageView& usage) {
  StringSink buffer;
  Writer w(buffer);
  w.StartObject();
  Str(w, "user_id", usage.user.id);
  Str(w, "plan", usage.user.plan);
  Str(w, "effective_plan", usage.effective_plan.name);
  Str(w, "subscription_status", SubscriptionStatusName(usage.user.status));
  Int(w, "effective_quota_monthly", usage.effective_plan.quota_monthly);
  Int(w, "usage_this_period", usage.used);
  Int(w, "remaining", usage.remaining);
  Time(w, "period_start", usage.period_start_ms);
  Time(w, "period_end", usage.period_end_ms);
  w.EndObject();
  return buffer.Take();
}

std::string KeyJson(const KeyInfo& key) {
  StringSink buffer;
  Writer w(buffer);
  WriteKey(w, key);
  return buffer.Take();
}

std::string KeyListJson(const std::vector<KeyInfo>& keys) {
  StringSink buffer;
  Writer w(buffer);
  w.StartObject();
  Key(w, "keys");
  w.StartArray();
  for (const KeyInfo& key : keys) WriteKey(w, key);
  w.EndArray();
  w.EndObject();
  return buffer.Take();
}

std::string MintedKeyJson(const MintedKey& key) {
  StringSink buffer;
  Writer w(buffer);
  w.StartObject();
  Str(w, "id", key.info.id);
  Str(w, "name", key.info.name);
  Str(w, "api_key", key.raw_key);
  Str(w, "hint", key.info.hint);
  Time(w, "created_at", key.info.created_ms);
  Str(w, "status", key.info.active ? "active" : "disabled");
  w.EndObject();
  return buffer.Take();
}

std::string NewUserJson(const NewUser& user) {
  StringSink buffer;
  Writer w(buffer);
  w.StartObject();
  Str(w, "user_id", user.user.id);
  Str(w, "api_key", user.key.raw_key);
  w.EndObject();
  return buffer.Take();
}

std::string PlanJson(const Plan& plan) {
  StringSink buffer;
  Writer w(buffer);
  w.StartObject();
  Str(w, "name", plan.name);
  Int(w, "quota_monthly", plan.quota_monthly);
  Key(w, "max");
  w.StartObject();
  Int(w, "wall_ms", plan.max.wall_ms);
  Int(w, "cpu_ms", plan.max.cpu_ms);
  Int(w, "memory_mb", plan.max.memory_mb);
  Int(w, "output_bytes", plan.max.output_bytes);
  Int(w, "processes", plan.max.processes);
  Int(w, "concurrent", plan.max.concurrent);
  w.EndObject();
  w.EndObject();
  return buffer.Take();
}

std::string ExecutionStatusJson(const Execution& execution) {
  StringSink buffer;
  Writer w(buffer);
  w.StartObject();
  Str(w, "execution_id", execution.id);
  Str(w, "status", ExecStateName(execution.state));
  w.EndObject();
  return buffer.Take();
}

std::string ResultJson(const Execution& execution, bool base64) {
  const RunOutcome& out = execution.outcome;
  const bool failed = execution.state == ExecState::kFailed;
  StringSink buffer;
  Writer w(buffer);
  w.StartObject();
  Str(w, "execution_id", execution.id);
  Str(w, "status", ExecStateName(execution.state));
  Stream(w, "stdout", failed ? "" : out.stdout_data, base64);
  Stream(w, "stderr", failed ? "" : out.stderr_data, base64);
  if (base64) Str(w, "encoding", "base64");
  Key(w, "exit_code");
  failed ? w.Null() : w.Int(out.exit_code);
  Str(w, "reason",
      failed ? ReasonName(Reason::kSandboxError) : ReasonName(out.reason));
  Key(w, "signal");
  (failed || out.signal == 0) ? w.Null() : w.Int(out.signal);
  Int(w, "wall_ms", out.wall_ms);
  Int(w, "cpu_ms", out.cpu_ms);
  Int(w, "peak_memory_kb", out.peak_memory_kb);
  Bool(w, "stdout_truncated", !failed && out.stdout_truncated);
  Bool(w, "stderr_truncated", !failed && out.stderr_truncated);
  Int(w, "queue_ms", execution.queue_ms);
  Int(w, "startup_ms", out.startup_ms);
  if (failed) Str(w, "detail", execution.detail);
  Str(w, "language", execution.language);
  Time(w, "created_at", execution.created_ms);
  Time(w, "finished_at", execution.finished_ms);
  w.EndObject();
  return buffer.Take();
}

std::string HealthJson(const Health& health) {
  StringSink buffer;
  Writer w(buffer);
  w.StartObject();
  Str(w, "status", health.store_ok ? "ok" : "unavailable");
  Str(w, "store", health.store_ok ? "ok" : "error");
  Str(w, "memory_mode", health.memory_mode);
  Int(w, "queue_depth", static_cast<int64_t>(health.queued));
  Int(w, "running", static_cast<int64_t>(health.running));
  Int(w, "workers", health.workers);
  w.EndObject();
  return buffer.Take();
}

std::string ProblemType(std::string_view code) {
  return fmt::format("https://dex.dev/problems/{}", code);
}

std::string ProblemJson(const Problem& problem) {
  StringSink buffer;
  Writer w(buffer);
  w.StartObject();
  Str(w, "type", ProblemType(problem.code));
  Str(w, "title", problem.title);
  Int(w, "status", problem.status);
  Str(w, "detail", SanitizeUtf8(problem.detail));
  Str(w, "code", problem.code);
  Str(w, "request_id", problem.request_id);
  for (const auto& [name, value] : problem.extra) Str(w, name, value);
  w.EndObject();
  return buffer.Take();
}

Status ParseJson(std::string_view body, rapidjson::Document* doc) {
  // RapidJSON treats a NUL as the end of input; JSON never allows one
  // outside strings, and inside them it must be escaped.
  if (body.find('\0') != std::string_view::npos) {
    return Status(Category::kInvalidArgument, "invalid_json",
                  "request body is not valid JSON: NUL byte");
  }
  // RapidJSON's UTF-8 check reads a sequence's continuation bytes before
  // looking at them, up to 3 past a lead byte that ends the input: the
  // padding keeps those reads inside the buffer.
  std::string text(body);
  text.append(4, '\0');
  DepthGuard guard;
  rapidjson::Reader reader;
  rapidjson::StringStream stream(text.c_str());
  rapidjson::ParseResult ok = reader.Parse<kParseFlags>(stream, guard);
  if (!ok) {
    std::string why =
        guard.too_deep
            ? fmt::format("nested deeper than {} levels", kMaxJsonDepth)
        : guard.bad_text   ? "a \\u escape is an unpaired UTF-16 surrogate"
        : guard.bad_number ? "a number is beyond the range of a double"
                           : rapidjson::GetParseError_En(ok.Code());
    return Status(Category::kInvalidArgument, "invalid_json",
                  fmt::format("request body is not valid JSON: {} (at byte "
                              "{})",
                              why, ok.Offset()));
  }
  doc->Parse<kParseFlags>(text.c_str(), body.size());
  if (doc->HasParseError()) {
    return Status(Category::kInvalidArgument, "invalid_json",
                  "request body is not valid JSON");
  }
  return Status::Ok();
}

Result<RunSpec> ParseRunBody(const rapidjson::Value& body) {
  static constexpr const char* kKnown[] = {"script", "language", "stdin",
                                           "limits"};
  if (!body.IsObject()) return BadRequest("request body must be an object");
  std::string unknown = UnknownMembers(body, kKnown);
  if (!unknown.empty()) {
    return BadRequest(fmt::format(
        "unknown field(s): {} (known: script, language, stdin, limits)",
        unknown));
  }
  RunSpec spec;
  std::optional<std::string> script;
  DEX_RETURN_IF_ERROR(OptionalString(body, "script", &script));
  if (!script) return BadRequest("script is required");
  if (script->empty()) return BadRequest("script must not be empty");
  spec.script = std::move(*script);
  std::optional<std::string> language;
  DEX_RETURN_IF_ERROR(OptionalString(body, "language", &language));
  if (language) spec.language = std::move(*language);
  DEX_RETURN_IF_ERROR(OptionalString(body, "stdin", &spec.stdin_data));
  auto limits = body.FindMember("limits");
  if (limits != body.MemberEnd()) {
    DEX_RETURN_IF_ERROR(ParseLimits(limits->value, &spec.limits));
  }
  return spec;
}

Result<std::string> ParseKeyNameBody(const rapidjson::Value& body) {
  static constexpr const char* kKnown[] = {"name"};
  if (!body.IsObject()) return BadRequest("request body must be an object");
  std::string unknown = UnknownMembers(body, kKnown);
  if (!unknown.empty()) {
    return BadRequest(
        fmt::format("unknown field(s): {} (known: name)", unknown));
  }
  std::optional<std::string> name;
  DEX_RETURN_IF_ERROR(OptionalString(body, "name", &name));
  if (!name) return BadRequest("name is required");
  return std::move(*name);
}

std::string CanonicalJson(const rapidjson::Value& value) {
  StringSink buffer;
  Writer w(buffer);
  WriteCanonical(w, value);
  return buffer.Take();
}

std::string Base64Encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return out;
}

std::string Sha256Hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(),
                 nullptr) != 1) {
    return "";
  }
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex += fmt::format("{:02x}", digest[i]);
  }
  return hex;
}

}  // namespace dex::shim
