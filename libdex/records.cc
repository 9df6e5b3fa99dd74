#include "libdex/records.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cinttypes>
#include <cstdio>

namespace dex::internal {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void Str(Writer& w, const char* name, std::string_view value) {
  w.Key(name);
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

void Int(Writer& w, const char* name, int64_t value) {
  w.Key(name);
  w.Int64(value);
}

Status Corrupt(const char* what) {
  return Status(Category::kInternal, "internal_error",
                std::string("store: corrupt ") + what + " record");
}

// Reads fields leniently: a missing field keeps the default, so records
// written by older versions still decode.
struct Reader {
  const rapidjson::Value& v;
  std::string GetStr(const char* name) const {
    auto it = v.FindMember(name);
    if (it == v.MemberEnd() || !it->value.IsString()) return "";
    return std::string(it->value.GetString(), it->value.GetStringLength());
  }
  int64_t GetInt(const char* name, int64_t fallback = 0) const {
    auto it = v.FindMember(name);
    if (it == v.MemberEnd() || !it->value.IsInt64()) return fallback;
    return it->value.GetInt64();
  }
  bool GetBool(const char* name) const {
    auto it = v.FindMember(name);
    return it != v.MemberEnd() && it->value.IsBool() && it->value.GetBool();
  }
  bool Has(const char* name) const { return v.HasMember(name); }
};

// A record's parse tree, built in space on the caller's stack. A plain
// rapidjson::Document takes a 64 KiB chunk from malloc for every parse and
// frees it again (and freeing that much makes malloc consolidate its free
// lists); GET /me decodes three small records. A record too big for the
// space (an execution's output) spills to the heap as before.
class RecordDoc {
 public:
  RecordDoc()
      : values_(value_space_, sizeof(value_space_)),
        stack_(stack_space_, sizeof(stack_space_)),
        doc_(&values_, sizeof(stack_space_) / 2, &stack_) {}
  RecordDoc(const RecordDoc&) = delete;
  RecordDoc& operator=(const RecordDoc&) = delete;

  // Returns whether `bytes` hold a JSON object.
  bool Parse(std::string_view bytes) {
    doc_.Parse(bytes.data(), bytes.size());
    return !doc_.HasParseError() && doc_.IsObject();
  }
  const rapidjson::Value& root() const { return doc_; }

 private:
  using Pool = rapidjson::MemoryPoolAllocator<>;
  alignas(16) char value_space_[2048];
  alignas(16) char stack_space_[1024];
  Pool values_;
  Pool stack_;
  rapidjson::GenericDocument<rapidjson::UTF8<>, Pool, Pool> doc_;
};

// The last record of one type this thread decoded, with the bytes it came
// from. Users, plans and keys are read on every authenticated request, and
// one client on a keep-alive connection is served by one thread: the same
// bytes come back again and again, and a copy of the decoded record costs
// a fraction of the JSON parse. It is keyed by the bytes themselves, so no
// write (of this process or another) can make it stale.
template <typename T>
class DecodeMemo {
 public:
  // Copies the record decoded from `bytes` into *out, if it is the one
  // kept.
  bool Find(std::string_view bytes, T* out) const {
    if (!kept_ || bytes != bytes_) return false;
    *out = value_;
    return true;
  }
  void Keep(std::string_view bytes, const T& value) {
    bytes_.assign(bytes.data(), bytes.size());
    value_ = value;
    kept_ = true;
  }

 private:
  bool kept_ = false;
  std::string bytes_;
  T value_;
};

// Decodes with `fresh` unless this thread's memo for T holds `bytes`.
template <typename T>
Status DecodeWithMemo(std::string_view bytes, T* out,
                      Status (*fresh)(std::string_view, T*)) {
  thread_local DecodeMemo<T> memo;
  if (memo.Find(bytes, out)) return Status::Ok();
  DEX_RETURN_IF_ERROR(fresh(bytes, out));
  memo.Keep(bytes, *out);
  return Status::Ok();
}

void WriteLimits(Writer& w, const RunLimits& l) {
  Int(w, "wall_ms", l.wall_ms);
  Int(w, "cpu_ms", l.cpu_ms);
  Int(w, "memory_mb", l.memory_mb);
  Int(w, "output_bytes", l.output_bytes);
  Int(w, "processes", l.processes);
}

void ReadLimits(const Reader& r, RunLimits* l) {
  l->wall_ms = r.GetInt("wall_ms", l->wall_ms);
  l->cpu_ms = r.GetInt("cpu_ms", l->cpu_ms);
  l->memory_mb = r.GetInt("memory_mb", l->memory_mb);
  l->output_bytes = r.GetInt("output_bytes", l->output_bytes);
  l->processes = r.GetInt("processes", l->processes);
}

}  // namespace

std::string PadNumber(uint64_t n) {
  char buf[24];
  snprintf(buf, sizeof buf, "%020" PRIu64, n);
  return buf;
}

std::string EncodeUser(const User& user) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  Str(w, "id", user.id);
  Str(w, "plan", user.plan);
  Str(w, "status", SubscriptionStatusName(user.status));
  Int(w, "status_changed_ms", user.status_changed_ms);
  Int(w, "created_ms", user.created_ms);
  w.EndObject();
  return sb.GetString();
}

namespace {

Status DecodeUserFresh(std::string_view bytes, User* user) {
  RecordDoc doc;
  if (!doc.Parse(bytes)) return Corrupt("user");
  Reader r{doc.root()};
  user->id = r.GetStr("id");
  user->plan = r.GetStr("plan");
  if (!ParseSubscriptionStatus(r.GetStr("status"), &user->status)) {
    return Corrupt("user");
  }
  user->status_changed_ms = r.GetInt("status_changed_ms");
  user->created_ms = r.GetInt("created_ms");
  return Status::Ok();
}

}  // namespace

Status DecodeUser(std::string_view bytes, User* user) {
  return DecodeWithMemo(bytes, user, DecodeUserFresh);
}

std::string EncodePlan(const Plan& plan) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  Str(w, "name", plan.name);
  Int(w, "quota_monthly", plan.quota_monthly);
  Int(w, "wall_ms", plan.max.wall_ms);
  Int(w, "cpu_ms", plan.max.cpu_ms);
  Int(w, "memory_mb", plan.max.memory_mb);
  Int(w, "output_bytes", plan.max.output_bytes);
  Int(w, "processes", plan.max.processes);
  Int(w, "concurrent", plan.max.concurrent);
  w.EndObject();
  return sb.GetString();
}

namespace {

Status DecodePlanFresh(std::string_view bytes, Plan* plan) {
  RecordDoc doc;
  if (!doc.Parse(bytes)) return Corrupt("plan");
  Reader r{doc.root()};
  // Missing maxima take PlanMaxima's defaults, never what *plan held: the
  // memo hands the result to later callers too.
  const PlanMaxima defaults;
  plan->name = r.GetStr("name");
  plan->quota_monthly = r.GetInt("quota_monthly");
  plan->max.wall_ms = r.GetInt("wall_ms", defaults.wall_ms);
  plan->max.cpu_ms = r.GetInt("cpu_ms", defaults.cpu_ms);
  plan->max.memory_mb = r.GetInt("memory_mb", defaults.memory_mb);
  plan->max.output_bytes = r.GetInt("output_bytes", defaults.output_bytes);
  plan->max.processes = r.GetInt("processes", defaults.processes);
  plan->max.concurrent = r.GetInt("concurrent", defaults.concurrent);
  return Status::Ok();
}

}  // namespace

Status DecodePlan(std::string_view bytes, Plan* plan) {
  return DecodeWithMemo(bytes, plan, DecodePlanFresh);
}

std::string EncodeKey(const KeyRecord& key) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  Str(w, "id", key.info.id);
  Str(w, "user_id", key.info.user_id);
  Str(w, "name", key.info.name);
  Str(w, "hint", key.info.hint);
  Str(w, "hash", key.hash_hex);
  w.Key("active");
  w.Bool(key.info.active);
  Int(w, "created_ms", key.info.created_ms);
  if (key.info.last_used_ms) Int(w, "last_used_ms", *key.info.last_used_ms);
  if (key.info.disabled_ms) Int(w, "disabled_ms", *key.info.disabled_ms);
  w.EndObject();
  return sb.GetString();
}

namespace {

Status DecodeKeyFresh(std::string_view bytes, KeyRecord* key) {
  RecordDoc doc;
  if (!doc.Parse(bytes)) return Corrupt("key");
  Reader r{doc.root()};
  key->info.id = r.GetStr("id");
  key->info.user_id = r.GetStr("user_id");
  key->info.name = r.GetStr("name");
  key->info.hint = r.GetStr("hint");
  key->hash_hex = r.GetStr("hash");
  key->info.active = r.GetBool("active");
  key->info.created_ms = r.GetInt("created_ms");
  key->info.last_used_ms.reset();
  key->info.disabled_ms.reset();
  if (r.Has("last_used_ms")) key->info.last_used_ms = r.GetInt("last_used_ms");
  if (r.Has("disabled_ms")) key->info.disabled_ms = r.GetInt("disabled_ms");
  return Status::Ok();
}

}  // namespace

Status DecodeKey(std::string_view bytes, KeyRecord* key) {
  return DecodeWithMemo(bytes, key, DecodeKeyFresh);
}

std::string EncodeExecution(const Execution& e) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  Str(w, "id", e.id);
  Str(w, "user_id", e.user_id);
  Str(w, "language", e.language);
  Int(w, "state", static_cast<int>(e.state));
  Str(w, "period", e.period);
  Int(w, "created_ms", e.created_ms);
  Int(w, "started_ms", e.started_ms);
  Int(w, "finished_ms", e.finished_ms);
  Int(w, "queue_ms", e.queue_ms);
  w.Key("limits");
  w.StartObject();
  WriteLimits(w, e.limits);
  w.EndObject();
  const RunOutcome& o = e.outcome;
  Int(w, "reason", static_cast<int>(o.reason));
  Int(w, "exit_code", o.exit_code);
  Int(w, "signal", o.signal);
  Int(w, "wall_ms", o.wall_ms);
  Int(w, "cpu_ms", o.cpu_ms);
  Int(w, "peak_memory_kb", o.peak_memory_kb);
  Int(w, "startup_ms", o.startup_ms);
  Str(w, "stdout", o.stdout_data);
  Str(w, "stderr", o.stderr_data);
  w.Key("stdout_truncated");
  w.Bool(o.stdout_truncated);
  w.Key("stderr_truncated");
  w.Bool(o.stderr_truncated);
  Str(w, "detail", e.detail);
  w.EndObject();
  return sb.GetString();
}

Status DecodeExecution(std::string_view bytes, Execution* e) {
  RecordDoc doc;
  if (!doc.Parse(bytes)) return Corrupt("execution");
  Reader r{doc.root()};
  e->id = r.GetStr("id");
  e->user_id = r.GetStr("user_id");
  e->language = r.GetStr("language");
  int64_t state = r.GetInt("state");
  if (state < 0 || state > static_cast<int>(ExecState::kFailed)) {
    return Corrupt("execution");
  }
  e->state = static_cast<ExecState>(state);
  e->period = r.GetStr("period");
  e->created_ms = r.GetInt("created_ms");
  e->started_ms = r.GetInt("started_ms");
  e->finished_ms = r.GetInt("finished_ms");
  e->queue_ms = r.GetInt("queue_ms");
  auto limits = doc.root().FindMember("limits");
  if (limits != doc.root().MemberEnd() && limits->value.IsObject()) {
    ReadLimits(Reader{limits->value}, &e->limits);
  }
  RunOutcome& o = e->outcome;
  int64_t reason = r.GetInt("reason");
  if (reason < 0 || reason > static_cast<int>(Reason::kSandboxError)) {
    return Corrupt("execution");
  }
  o.reason = static_cast<Reason>(reason);
  o.exit_code = static_cast<int>(r.GetInt("exit_code"));
  o.signal = static_cast<int>(r.GetInt("signal"));
  o.wall_ms = r.GetInt("wall_ms");
  o.cpu_ms = r.GetInt("cpu_ms");
  o.peak_memory_kb = r.GetInt("peak_memory_kb");
  o.startup_ms = r.GetInt("startup_ms");
  o.stdout_data = r.GetStr("stdout");
  o.stderr_data = r.GetStr("stderr");

  o.stdout_truncated = r.GetBool("stdout_truncated");
  o.stderr_truncated = r.GetBool("stderr_truncated");
  e->detail = r.GetStr("detail");
  return Status::Ok();
}

// Scripts and stdin are arbitrary bytes: "<script length>\n<has stdin>"
// followed by the script and the stdin bytes.
std::string EncodeScript(const ScriptRecord& s) {
  std::string out =
      std::to_string(s.script.size()) + "\n" + (s.has_stdin ? "1" : "0");
  out += s.script;
  out += s.stdin_data;
  return out;
}

Status DecodeScript(std::string_view bytes, ScriptRecord* s) {
  size_t nl = bytes.find('\n');
  if (nl == std::string_view::npos || nl + 2 > bytes.size()) {
    return Corrupt("script");
  }
  uint64_t len = 0;
  for (char c : bytes.substr(0, nl)) {
    if (c < '0' || c > '9') return Corrupt("script");
    len = len * 10 + static_cast<uint64_t>(c - '0');
  }
  std::string_view rest = bytes.substr(nl + 2);
  if (len > rest.size()) return Corrupt("script");
  s->has_stdin = bytes[nl + 1] == '1';
  s->script.assign(rest.substr(0, len));
  s->stdin_data.assign(rest.substr(len));
  return Status::Ok();
}

std::string EncodeIdempotency(const IdempotencyRecord& rec) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  Str(w, "execution_id", rec.execution_id);
  Str(w, "fingerprint", rec.fingerprint);
  Int(w, "created_ms", rec.created_ms);
  w.EndObject();
  return sb.GetString();
}

Status DecodeIdempotency(std::string_view bytes, IdempotencyRecord* rec) {
  RecordDoc doc;
  if (!doc.Parse(bytes)) return Corrupt("idempotency");
  Reader r{doc.root()};
  rec->execution_id = r.GetStr("execution_id");
  rec->fingerprint = r.GetStr("fingerprint");
  rec->created_ms = r.GetInt("created_ms");
  return Status::Ok();
}

}  // namespace dex::internal
