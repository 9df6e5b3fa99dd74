#include "shim/http_server.h"

#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/rand.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "shim/json_io.h"
#include "shim/listener.h"
#include "shim/metrics.h"

namespace dex::shim {
namespace {

using Clock = std::chrono::steady_clock;

// Header lines and bytes a request may carry before 431. cpp-httplib caps
// one line at 8 KiB itself but not their number.
constexpr size_t kMaxHeaderCount = 100;
constexpr size_t kMaxHeaderBytes = 32u << 10;
// A body above the limit is still read and dropped, so the connection
// stays in step; past this much it is abandoned instead.
constexpr size_t kMaxDrainBytes = 64u << 20;
// `?wait=true` waits in slices this long, so a shutdown is noticed.
constexpr int64_t kWaitSliceMs = 500;

// ---- The one table from library codes to HTTP ------------------------

struct CodeMapping {
  std::string_view code;  // the library's (or the shim's) code
  int http_status;
  std::string_view public_code;  // what the problem's "code" says
  std::string_view title;
  int retry_after_s;  // 0: no Retry-After (429 computes its own)
};

constexpr CodeMapping kCodeTable[] = {
    {"invalid_request", 400, "invalid_request", "Invalid request", 0},
    {"invalid_json", 400, "invalid_json", "Invalid JSON", 0},
    {"missing_credentials", 401, "missing_credentials", "Missing credentials",
     0},
    {"invalid_token", 401, "invalid_token", "Invalid token", 0},
    {"key_disabled", 401, "key_disabled", "Key disabled", 0},
    {"subscription_inactive", 402, "subscription_inactive",
     "Subscription inactive", 0},
    {"not_found", 404, "not_found", "Not found", 0},
    {"method_not_allowed", 405, "method_not_allowed", "Method not allowed", 0},
    {"last_active_key", 409, "last_active_key", "Last active key", 0},
    {"not_finished", 409, "not_finished", "Execution not finished", 0},
    {"idempotency_in_progress", 409, "idempotency_in_progress",
     "Idempotent request in progress", 0},
    {"payload_too_large", 413, "payload_too_large", "Payload too large", 0},
    {"uri_too_long", 414, "invalid_request", "URI too long", 0},
    {"unsupported_media_type", 415, "unsupported_media_type",
     "Unsupported media type", 0},
    {"range_not_satisfiable", 416, "invalid_request", "Invalid range", 0},
    {"idempotency_key_reused", 422, "idempotency_key_reused",
     "Idempotency key reused", 0},
    {"quota_exceeded", 429, "quota_exceeded", "Quota exceeded", 0},
    {"headers_too_large", 431, "invalid_request", "Request headers too large",
     0},
    {"internal_error", 500, "internal_error", "Internal error", 0},
    {"unavailable", 503, "unavailable", "Service unavailable", 5},
    {"queue_full", 503, "unavailable", "Service unavailable", 5},
    {"shutting_down", 503, "unavailable", "Service unavailable", 10},
    {"store_full", 503, "unavailable", "Service unavailable", 60},
};

// Codes the table does not know fall back on their category.
CodeMapping CategoryMapping(Category category) {
  switch (category) {
    case Category::kInvalidArgument:
      return kCodeTable[0];
    case Category::kUnauthenticated:
      return {"", 401, "invalid_token", "Invalid token", 0};
    case Category::kNotFound:
      return {"", 404, "not_found", "Not found", 0};
    case Category::kResourceExhausted:
    case Category::kDeadlineExceeded:
    case Category::kUnavailable:
      return {"", 503, "unavailable", "Service unavailable", 5};
    case Category::kFailedPrecondition:
      return {"", 409, "failed_precondition", "Conflict", 0};
    case Category::kOk:
    case Category::kInternal:
      break;
  }
  return {"", 500, "internal_error", "Internal error", 0};
}

CodeMapping MapStatus(const Status& status) {
  for (const CodeMapping& m : kCodeTable) {
    if (m.code == status.code()) return m;
  }
  return CategoryMapping(status.category());
}

// Errors the shim itself raises, before any library call.
Status ShimError(std::string code, std::string message) {
  return Status(Category::kInvalidArgument, std::move(code),
                std::move(message));
}

// ---- Per-request context for the access log --------------------------

// Set when a request starts and read when its answer is written. Each
// connection is served by one pool thread from start to end.
struct AccessContext {
  bool active = false;
  Clock::time_point start;
  std::string request_id;
  std::string route = "-";
  std::string key_id = "-";
};
thread_local AccessContext t_access;

// req_ and 16 hex digits. Ids only tie log lines to answers, so they need
// to be unique, not secret: each thread seeds a splitmix64 sequence once
// from the system's random source (the per-request RAND_bytes this
// replaces was a tenth of GET /me's CPU).
void NewRequestId(std::string* id) {
  thread_local uint64_t state = [] {
    uint64_t seed = 0;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&seed), sizeof seed) != 1) {
      static std::atomic<uint64_t> counter{0};
      seed = ++counter;  // never expected; still distinct per thread
    }
    return seed;
  }();
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  static const char kHex[] = "0123456789abcdef";
  id->assign("req_");
  for (int shift = 60; shift >= 0; shift -= 4) *id += kHex[(z >> shift) & 15];
}

// A client's own X-Request-Id is echoed when it is short and plain, so it
// cannot smuggle anything into logs or headers.
bool SaneRequestId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ||
           c == '.' || c == ':';
  });
}

void BeginRequest(const httplib::Request& req, httplib::Response& res) {
  // Fields are assigned one by one, so that the thread's strings keep
  // their buffers from one request to the next.
  std::string client_id = req.get_header_value("X-Request-Id");
  t_access.active = true;
  t_access.start = Clock::now();
  if (SaneRequestId(client_id)) {
    t_access.request_id = client_id;
  } else {
    NewRequestId(&t_access.request_id);
  }
  t_access.route = "-";
  t_access.key_id = "-";
  res.set_header("X-Request-Id", t_access.request_id);
}

// ---- Small helpers ---------------------------------------------------

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(tolower(static_cast<int>(c)));
  return out;
}

std::string_view TrimView(std::string_view s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

std::string Trim(std::string_view s) { return std::string(TrimView(s)); }

void SetJson(httplib::Response& res, int status, std::string body) {
  res.status = status;
  res.set_content(std::move(body), "application/json");
}

void SetRateHeaders(httplib::Response& res, const UsageView& usage) {
  // Names made once: set_header takes std::string, and a name longer than
  // the small-string buffer would be allocated on every request.
  static const std::string kLimit = "X-RateLimit-Limit";
  static const std::string kRemaining = "X-RateLimit-Remaining";
  static const std::string kUsed = "X-RateLimit-Used";
  static const std::string kReset = "X-RateLimit-Reset";
  res.set_header(kLimit, std::to_string(usage.effective_plan.quota_monthly));
  res.set_header(kRemaining, std::to_string(usage.remaining));
  res.set_header(kUsed, std::to_string(usage.used));
  res.set_header(kReset, std::to_string(usage.period_end_ms / 1000));
}

// True when the Content-Type is application/json, optionally with a
// UTF-8 charset (JSON has no other encoding, RFC 8259 §8.1).
bool IsJsonContentType(const std::string& value) {
  size_t semi = value.find(';');
  if (Lower(Trim(value.substr(0, semi))) != "application/json") return false;
  while (semi != std::string::npos) {
    size_t next = value.find(';', semi + 1);
    std::string param = Lower(Trim(value.substr(semi + 1, next - semi - 1)));
    semi = next;
    if (param.rfind("charset=", 0) != 0) continue;
    std::string charset = param.substr(8);
    if (charset == "\"utf-8\"") charset = "utf-8";
    if (charset != "utf-8" && charset != "utf8") return false;
  }
  return true;
}

// True for the content codings cpp-httplib decodes (Debian builds it with
// zlib and brotli) and for none. It would pass any other coding through
// undecoded, so those answer 415 rather than being read as JSON.
bool KnownContentEncoding(const std::string& value) {
  return value.empty() || value == "identity" || value == "gzip" ||
         value == "deflate" || value == "br";
}

// The query, canonically: sorted pairs with lengths, so no value can
// pretend to be a separator.
std::string CanonicalQuery(const httplib::Params& params) {
  std::vector<std::pair<std::string, std::string>> pairs(params.begin(),
                                                         params.end());
  std::sort(pairs.begin(), pairs.end());
  std::string out;
  for (auto& [k, v] : pairs) {
    out += fmt::format("{}:{}={}:{};", k.size(), k, v.size(), v);
  }
  return out;
}

// An HTTP method: a token of RFC 9110 §5.6.2 (short, so it may be logged
// and echoed in a problem's detail).
bool IsMethodToken(std::string_view method) {
  static constexpr std::string_view kSymbols = "!#$%&'*+-.^_`|~";
  return !method.empty() && method.size() <= 32 &&
         std::all_of(method.begin(), method.end(), [](char c) {
           return isalnum(static_cast<unsigned char>(c)) ||
                  kSymbols.find(c) != std::string_view::npos;
         });
}

bool HeadersTooLarge(const httplib::Request& req) {
  size_t bytes = 0;
  for (auto& [name, value] : req.headers) bytes += name.size() + value.size();
  return req.headers.size() > kMaxHeaderCount || bytes > kMaxHeaderBytes;
}

// ---- Routes ----------------------------------------------------------

struct Route;

// One request on its way through the shim.
struct Call {
  const httplib::Request& req;
  httplib::Response& res;
  std::string request_id;
  const Route* route = nullptr;
  std::string param;  // the route's {id}
  Principal principal;
  rapidjson::Document body;
  std::string allow;  // for 405
  std::vector<std::pair<std::string, std::string>> problem_extra;
};

// What reading the body found.
struct Body {
  std::string bytes;
  bool too_large = false;
  bool failed = false;  // malformed framing or encoding
  bool bad_encoding = false;
};

bool TerminalState(ExecState state) {
  return state == ExecState::kCompleted || state == ExecState::kFailed;
}

}  // namespace

struct HttpServer::Rep {
  using Handler = Status (Rep::*)(Call&);

  Rep(Service* s, Logger* l, const HttpOptions& o)
      : service(s), logger(l), options(o) {}

  Service* service;  // borrowed
  Logger* logger;    // borrowed
  HttpOptions options;
  httplib::Server server;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::function<void()> on_exit;
  // The listening socket, seen by the socket options hook; -1 before.
  std::atomic<int> listen_fd{-1};

  // (user_id, Idempotency-Key) of POST /run requests being answered now.
  std::mutex idem_mu;
  std::set<std::pair<std::string, std::string>> idem_in_flight;  // idem_mu

  void Configure();
  void Dispatch(const httplib::Request& req, httplib::Response& res,
                const httplib::ContentReader* reader);
  Body ReadBody(const httplib::Request& req, httplib::Response& res,
                const httplib::ContentReader& reader);
  Status Resolve(Call& call, std::string_view path);
  Status Authenticate(Call& call);
  Status CheckBody(Call& call, const Body& body);
  void Fail(Call& call, const Status& status);
  void Log(const httplib::Request& req, const httplib::Response& res);
  httplib::Server::HandlerResponse OnLibraryError(const httplib::Request& req,
                                                  httplib::Response& res);
  Status LibraryBadRequest(Call& call);
  void OnException(const httplib::Request& req, httplib::Response& res,
                   std::exception_ptr ep);

  Status Healthz(Call& call);
  Status Me(Call& call);
  Status ListKeys(Call& call);
  Status CreateKey(Call& call);
  Status DisableKey(Call& call);
  Status Run(Call& call);
  Status ExecStatus(Call& call);
  Status ExecResult(Call& call);

  Status AnswerRun(Call& call, const SubmitResult& submitted, bool wait,
                   bool base64);
  Result<Execution> WaitForEnd(Call& call, const Execution& execution);
};

namespace {

struct Route {
  std::string_view method;
  std::string_view pattern;  // "{id}" matches one non-empty segment
  bool needs_key;
  bool json_body;
  HttpServer::Rep::Handler handler;
};

// Named here so the member pointers can reach the private Rep.
const std::vector<Route>& Routes();

bool MatchPattern(std::string_view pattern, std::string_view path,
                  std::string* param) {
  size_t brace = pattern.find("{id}");
  if (brace == std::string_view::npos) return pattern == path;
  std::string_view prefix = pattern.substr(0, brace);
  if (path.substr(0, prefix.size()) != prefix) return false;
  std::string_view rest = path.substr(prefix.size());
  if (rest.empty() || rest.find('/') != std::string_view::npos) return false;
  *param = std::string(rest);
  return true;
}

}  // namespace

HttpServer::HttpServer(Service* service, Logger* logger,
                       const HttpOptions& options)
    : rep_(std::make_unique<Rep>(service, logger, options)) {
  rep_->Configure();
}

HttpServer::~HttpServer() { Stop(); }

Result<int> HttpServer::Bind(const std::string& host, int port) {
  Result<int> bound = BindListener(rep_->server, host, port, "binding");
  if (!bound.ok()) return bound;
  // Listening again on a listening socket only changes its backlog.
  int fd = rep_->listen_fd;
  if (fd >= 0 && listen(fd, rep_->options.listen_backlog) != 0) {
    return Status::FromErrno(
        fmt::format("listening on {}:{} with a longer backlog", host, *bound),
        errno, Category::kUnavailable);
  }
  return bound;
}

Status HttpServer::Start(std::function<void()> on_exit) {
  rep_->on_exit = std::move(on_exit);
  rep_->thread = std::thread([rep = rep_.get()] {
    rep->server.listen_after_bind();
    if (!rep->stopping && rep->on_exit) rep->on_exit();
  });
  // The socket already listens (the kernel queues connections); wait for
  // the accept loop so the readiness line never precedes it.
  return AwaitAcceptLoop(rep_->server, "the HTTP server");
}

void HttpServer::Stop() {
  rep_->stopping = true;
  rep_->server.stop();
  if (rep_->thread.joinable()) rep_->thread.join();
}

void HttpServer::Rep::Configure() {
  int threads = std::max(1, options.threads);
  server.new_task_queue = [threads] {
    return new httplib::ThreadPool(threads);
  };
  server.set_read_timeout(options.read_timeout_s);
  server.set_write_timeout(options.write_timeout_s);
  server.set_keep_alive_timeout(options.keep_alive_timeout_s);
  server.set_keep_alive_max_count(options.keep_alive_max_count);
  server.set_payload_max_length(options.max_body_bytes);
  server.set_default_headers(
      {{"Cache-Control", "no-store"}, {"X-Content-Type-Options", "nosniff"}});
  // A keep-alive answer goes out in more than one write; with Nagle on,
  // the second waits for the client's delayed ACK (~40 ms). Accepted
  // sockets inherit TCP_NODELAY from the listening one.
  server.set_tcp_nodelay(true);
  server.set_socket_options([this](int sock) {
    // Sockets must not leak into processes the library spawns later.
    int one = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(sock, F_SETFD, FD_CLOEXEC);
    listen_fd = sock;  // only the listening socket passes through here
  });
  server.set_pre_routing_handler(
      [](const httplib::Request& req, httplib::Response& res) {
        // cpp-httplib would cut every answer to the Range header's ranges,
        // copying the body once per range (a 1 MiB result times thousands
        // of "0-" ranges), and answer multipart bodies. dex's bodies are
        // whole JSON documents: ranges are ignored. The request object is
        // the server's own, not const.
        const_cast<httplib::Request&>(req).ranges.clear();
        BeginRequest(req, res);
        return httplib::Server::HandlerResponse::Unhandled;
      });
  auto plain = [this](const httplib::Request& req, httplib::Response& res) {
    Dispatch(req, res, nullptr);
  };
  auto with_body = [this](const httplib::Request& req, httplib::Response& res,
                          const httplib::ContentReader& reader) {
    Dispatch(req, res, &reader);
  };
  // Every path reaches Dispatch, which owns 404 and 405: cpp-httplib
  // would answer those with an empty body.
  const std::string any = ".*";
  server.Get(any, plain);
  server.Options(any, plain);
  server.Post(any, with_body);
  server.Put(any, with_body);
  server.Patch(any, with_body);
  server.Delete(any, with_body);
  server.Delete(any, plain);
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request& req, httplib::Response& res) {
        return OnLibraryError(req, res);
      }));
  server.set_exception_handler(
      [this](const httplib::Request& req, httplib::Response& res,
             std::exception_ptr ep) { OnException(req, res, ep); });
  server.set_logger([this](const httplib::Request& req,
                           const httplib::Response& res) { Log(req, res); });
}

// Precedence (§2): the HTTP message itself (431), route (404/405),
// credentials (401), body size, type and shape (413/415/400), then the
// route's own checks (limits, then quota, in the library).
void HttpServer::Rep::Dispatch(const httplib::Request& req,
                               httplib::Response& res,
                               const httplib::ContentReader* reader) {
  Call call{req, res};
  call.request_id = t_access.request_id;  // BeginRequest ran first
  // Read (or drain) the body first, whatever the answer: unread bytes
  // would be taken for the next request on this connection.
  Body body;
  if (reader) body = ReadBody(req, res, *reader);
  res.status = -1;
  Status status = HeadersTooLarge(req)
                      ? ShimError("headers_too_large",
                                  fmt::format("more than {} header lines or "
                                              "{} bytes of headers",
                                              kMaxHeaderCount, kMaxHeaderBytes))
                      : Resolve(call, req.path);
  if (status.ok() && call.route->needs_key) status = Authenticate(call);
  if (status.ok() && call.route->json_body) status = CheckBody(call, body);
  if (status.ok()) status = (this->*call.route->handler)(call);
  if (!status.ok()) Fail(call, status);
}

Body HttpServer::Rep::ReadBody(const httplib::Request& req,
                               httplib::Response& res,
                               const httplib::ContentReader& reader) {
  Body body;
  size_t seen = 0;
  auto keep = [&](const char* data, size_t n) {
    seen += n;
    if (body.too_large || body.bytes.size() + n > options.max_body_bytes) {
      body.too_large = true;
      body.bytes.clear();
    } else {
      body.bytes.append(data, n);
    }
    return seen <= kMaxDrainBytes;
  };
  bool ok =
      req.is_multipart_form_data()
          ? reader([](const httplib::MultipartFormData&) { return true; }, keep)
          : reader(keep);
  if (!ok) {
    // cpp-httplib has set 413 when Content-Length alone was too large
    // (it then drops the bytes itself), 415 for an unknown encoding.
    body.too_large = body.too_large || res.status == 413;
    body.bad_encoding = res.status == 415;
    body.failed = true;
  }
  return body;
}

Status HttpServer::Rep::Resolve(Call& call, std::string_view path) {
  std::string method = call.req.method == "HEAD" ? "GET" : call.req.method;
  std::vector<std::string_view> allowed;
  for (const Route& route : Routes()) {
    std::string param;
    if (!MatchPattern(route.pattern, path, &param)) continue;
    if (route.method == method) {
      call.route = &route;
      call.param = std::move(param);
      t_access.route = std::string(route.pattern);
      return Status::Ok();
    }
    allowed.push_back(route.method);
    if (route.method == "GET") allowed.push_back("HEAD");
  }
  if (allowed.empty()) {
    return Status(Category::kNotFound, "not_found", "no such route");
  }
  std::sort(allowed.begin(), allowed.end());
  call.allow = fmt::format("{}", fmt::join(allowed, ", "));
  return Status(Category::kInvalidArgument, "method_not_allowed",
                fmt::format("{} is not allowed here; allowed: {}",
                            call.req.method, call.allow));
}

Status HttpServer::Rep::Authenticate(Call& call) {
  auto [first, end] = call.req.headers.equal_range("Authorization");
  if (first == end) {
    return Status(Category::kUnauthenticated, "missing_credentials",
                  "send the API key as 'Authorization: Bearer <key>'");
  }
  // The header's own copy, read in place: it holds the key.
  std::string_view value = first->second;
  size_t space = value.find(' ');
  if (std::next(first) != end || space == std::string::npos ||
      Lower(value.substr(0, space)) != "bearer") {
    return Status(Category::kUnauthenticated, "invalid_token",
                  "the Authorization header must be 'Bearer <key>'");
  }
  Result<Principal> principal =
      service->Authenticate(TrimView(value.substr(space)));
  if (!principal.ok()) return principal.status();
  call.principal = std::move(*principal);
  t_access.key_id = call.principal.key_id;
  return Status::Ok();
}

Status HttpServer::Rep::CheckBody(Call& call, const Body& body) {
  if (body.too_large) {
    return ShimError("payload_too_large",
                     fmt::format("request bodies are limited to {} bytes",
                                 options.max_body_bytes));
  }
  if (body.bad_encoding ||
      !KnownContentEncoding(call.req.get_header_value("Content-Encoding"))) {
    return ShimError("unsupported_media_type",
                     "Content-Encoding must be identity, gzip, deflate or br");
  }
  if (!IsJsonContentType(call.req.get_header_value("Content-Type"))) {
    return ShimError("unsupported_media_type",
                     "send the body as Content-Type: application/json");
  }
  if (body.failed) {
    return ShimError("invalid_request", "the request body could not be read");
  }
  return ParseJson(body.bytes, &call.body);
}

void HttpServer::Rep::Fail(Call& call, const Status& status) {
  CodeMapping m = MapStatus(status);
  Problem problem{m.http_status,        std::string(m.public_code),
                  std::string(m.title), status.message(),
                  call.request_id,      std::move(call.problem_extra)};
  if (m.code != m.public_code && !m.code.empty()) {
    problem.extra.emplace_back("cause", std::string(m.code));
  }
  if (m.http_status >= 500 && m.retry_after_s == 0) {
    // The library's message may name files or errno; keep it in the log.
    logger->Log(LogLevel::kError,
                fmt::format("{} {}", call.request_id, status.ToString()));
    problem.detail = "internal error; quote the request_id when reporting it";
  }
  httplib::Response& res = call.res;
  if (m.http_status == 401) {
    res.set_header("WWW-Authenticate",
                   m.public_code == "missing_credentials"
                       ? "Bearer realm=\"dex\""
                       : "Bearer realm=\"dex\", error=\"invalid_token\"");
  }
  if (m.http_status == 405) res.set_header("Allow", call.allow);
  if (m.retry_after_s > 0) {
    res.set_header("Retry-After", std::to_string(m.retry_after_s));
  }
  // Every answer of /me and /run to a known user carries the month's
  // window (§2), errors included.
  bool quota_route = call.route != nullptr && (call.route->pattern == "/run" ||
                                               call.route->pattern == "/me");
  if ((quota_route || m.public_code == "quota_exceeded") &&
      !call.principal.user_id.empty()) {
    Result<UsageView> usage = service->Me(call.principal.user_id);
    if (usage.ok()) SetRateHeaders(res, *usage);
    if (usage.ok() && m.public_code == "quota_exceeded") {
      int64_t left_ms =
          usage->period_end_ms - service->quota()->clock()->NowMs();
      res.set_header("Retry-After", std::to_string(std::max<int64_t>(
                                        1, (left_ms + 999) / 1000)));
    }
  }
  res.status = m.http_status;
  res.set_content(ProblemJson(problem), "application/problem+json");
}

// cpp-httplib answers 400 for a malformed request line, a header line
// above 8 KiB (after a valid request line), and methods no route takes
// (TRACE, CONNECT, and any method it does not know, like FOO or QUERY).
Status HttpServer::Rep::LibraryBadRequest(Call& call) {
  static constexpr std::string_view kRouted[] = {
      "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
  const httplib::Request& req = call.req;
  bool valid_line = (req.version == "HTTP/1.1" || req.version == "HTTP/1.0");
  bool routed = std::find(std::begin(kRouted), std::end(kRouted), req.method) !=
                std::end(kRouted);
  if (valid_line && routed) {
    return ShimError("headers_too_large", "a header line is above 8 KiB");
  }
  if (valid_line && IsMethodToken(req.method) && !req.target.empty() &&
      req.target[0] == '/') {
    // cpp-httplib stops before it parses the path of a method it does not
    // know; the target's path is enough to tell 404 from 405.
    std::string_view target = req.target;
    return Resolve(call, target.substr(0, target.find_first_of("?#")));
  }
  return ShimError("invalid_request", "malformed request line");
}

// cpp-httplib answers some requests before any route runs (URI or header
// line too long, a malformed request line, TRACE): give those the same
// problem+json shape. Answers of the shim already have a body.
httplib::Server::HandlerResponse HttpServer::Rep::OnLibraryError(
    const httplib::Request& req, httplib::Response& res) {
  if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
  if (!res.has_header("X-Request-Id")) BeginRequest(req, res);
  Call call{req, res};
  call.request_id = res.get_header_value("X-Request-Id");
  Status status;
  switch (res.status) {
    case 414:
      status = ShimError("uri_too_long", "the request URI is above 8 KiB");
      break;
    case 416:
      status = ShimError("range_not_satisfiable", "invalid Range header");
      break;
    case 400:
      status = LibraryBadRequest(call);
      break;
    case 404:
      status = Status(Category::kNotFound, "not_found", "no such route");
      break;
    default:
      status =
          Status(res.status >= 500 ? Category::kUnavailable
                                   : Category::kInvalidArgument,
                 res.status >= 500 ? "unavailable" : "invalid_request",
                 fmt::format("the request failed with HTTP {}", res.status));
  }
  Fail(call, status);
  return httplib::Server::HandlerResponse::Handled;
}

void HttpServer::Rep::OnException(const httplib::Request& req,
                                  httplib::Response& res,
                                  std::exception_ptr ep) {
  std::string what = "unknown exception";
  try {
    if (ep) std::rethrow_exception(ep);
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  if (!res.has_header("X-Request-Id")) BeginRequest(req, res);
  Call call{req, res};
  call.request_id = res.get_header_value("X-Request-Id");
  Fail(call, Status(Category::kInternal, "internal_error",
                    "handling the request: " + what));
}

void HttpServer::Rep::Log(const httplib::Request& req,
                          const httplib::Response& res) {
  if (!t_access.active) return;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                Clock::now() - t_access.start)
                .count();
  // Never the path (ids), the query, a key, or a body.
  fmt::memory_buffer line;
  fmt::format_to(std::back_inserter(line), "http {} {} {} {} {}ms key={}",
                 t_access.request_id, req.method.empty() ? "-" : req.method,
                 t_access.route, res.status, ms, t_access.key_id);
  logger->Log(LogLevel::kInfo, std::string_view(line.data(), line.size()));
  if (options.metrics) {
    options.metrics->CountRequest(req.method, t_access.route, res.status);
  }
  t_access.active = false;
}

// ---- Handlers --------------------------------------------------------

Status HttpServer::Rep::Healthz(Call& call) {
  Health health = service->GetHealth();
  SetJson(call.res, health.store_ok ? 200 : 503, HealthJson(health));
  return Status::Ok();
}

Status HttpServer::Rep::Me(Call& call) {
  Result<UsageView> usage = service->Me(call.principal.user_id);
  if (!usage.ok()) return usage.status();
  SetRateHeaders(call.res, *usage);
  SetJson(call.res, 200, UsageJson(*usage));
  return Status::Ok();
}

Status HttpServer::Rep::ListKeys(Call& call) {
  Result<std::vector<KeyInfo>> keys = service->ListKeys(call.principal.user_id);
  if (!keys.ok()) return keys.status();
  SetJson(call.res, 200, KeyListJson(*keys));
  return Status::Ok();
}

Status HttpServer::Rep::CreateKey(Call& call) {
  Result<std::string> name = ParseKeyNameBody(call.body);
  if (!name.ok()) return name.status();
  Result<MintedKey> key = service->CreateKey(call.principal.user_id, *name);
  if (!key.ok()) return key.status();
  SetJson(call.res, 201, MintedKeyJson(*key));
  return Status::Ok();
}

Status HttpServer::Rep::DisableKey(Call& call) {
  Result<KeyInfo> key = service->DisableKey(call.principal.user_id, call.param);
  if (!key.ok()) return key.status();
  SetJson(call.res, 200, KeyJson(*key));
  return Status::Ok();
}

Status HttpServer::Rep::ExecStatus(Call& call) {
  Result<Execution> execution =
      service->GetExecution(call.principal.user_id, call.param);
  if (!execution.ok()) return execution.status();
  SetJson(call.res, 200, ExecutionStatusJson(*execution));
  return Status::Ok();
}

// ?encoding= of GET /result and POST /run?wait=true: true for base64.
Result<bool> WantsBase64(const httplib::Request& req) {
  std::string encoding = req.get_param_value("encoding");
  if (encoding == "base64") return true;
  if (!encoding.empty() && encoding != "utf-8") {
    return ShimError("invalid_request", "encoding must be utf-8 or base64");
  }
  return false;
}

Status HttpServer::Rep::ExecResult(Call& call) {
  Result<bool> base64 = WantsBase64(call.req);
  if (!base64.ok()) return base64.status();
  Result<Execution> execution =
      service->GetExecution(call.principal.user_id, call.param);
  if (!execution.ok()) return execution.status();
  if (!TerminalState(execution->state)) {
    call.problem_extra.emplace_back("execution_status",
                                    ExecStateName(execution->state));
    return Status(Category::kFailedPrecondition, "not_finished",
                  "the execution has not finished; poll GET /status");
  }
  SetJson(call.res, 200, ResultJson(*execution, *base64));
  return Status::Ok();
}

Status HttpServer::Rep::Run(Call& call) {
  Result<RunSpec> spec = ParseRunBody(call.body);
  if (!spec.ok()) return spec.status();
  std::string wait = call.req.get_param_value("wait");
  if (!wait.empty() && wait != "true" && wait != "false") {
    return ShimError("invalid_request", "wait must be true or false");
  }
  Result<bool> base64 = WantsBase64(call.req);
  if (!base64.ok()) return base64.status();
  std::string idem = call.req.get_header_value("Idempotency-Key");
  if (call.req.has_header("Idempotency-Key")) {
    bool plain = !idem.empty() && idem.size() <= 255 &&
                 std::all_of(idem.begin(), idem.end(),
                             [](char c) { return c > 0x20 && c < 0x7f; });
    if (!plain) {
      return ShimError("invalid_request",
                       "Idempotency-Key must be 1-255 visible ASCII "
                       "characters");
    }
    spec->idempotency_key = idem;
    spec->fingerprint = Sha256Hex(CanonicalJson(call.body) + "\n" +
                                  CanonicalQuery(call.req.params));
  }
  // A replay racing the first answer would otherwise see half its story.
  std::pair<std::string, std::string> slot{call.principal.user_id, idem};
  if (!idem.empty()) {
    std::lock_guard<std::mutex> lock(idem_mu);
    if (!idem_in_flight.insert(slot).second) {
      return Status(Category::kFailedPrecondition, "idempotency_in_progress",
                    "a request with this Idempotency-Key is still being "
                    "answered; retry when it is done");
    }
  }
  Result<SubmitResult> submitted =
      service->Submit(call.principal.user_id, *spec);
  Status status = submitted.ok()
                      ? AnswerRun(call, *submitted, wait == "true", *base64)
                      : submitted.status();
  if (!idem.empty()) {
    std::lock_guard<std::mutex> lock(idem_mu);
    idem_in_flight.erase(slot);
  }
  return status;
}

Status HttpServer::Rep::AnswerRun(Call& call, const SubmitResult& submitted,
                                  bool wait, bool base64) {
  Execution execution = submitted.execution;
  if (wait && !TerminalState(execution.state)) {
    Result<Execution> latest = WaitForEnd(call, execution);
    if (!latest.ok()) return latest.status();
    execution = std::move(*latest);
  }
  Result<UsageView> usage = service->Me(call.principal.user_id);
  if (usage.ok()) SetRateHeaders(call.res, *usage);
  if (submitted.replayed) call.res.set_header("Idempotent-Replayed", "true");
  call.res.set_header("Location", "/status/" + execution.id);
  if (wait && TerminalState(execution.state)) {
    SetJson(call.res, 200, ResultJson(execution, base64));
  } else {
    SetJson(call.res, 202, ExecutionStatusJson(execution));
  }
  return Status::Ok();
}

// Waits in slices so a shutdown ends the hold early.
Result<Execution> HttpServer::Rep::WaitForEnd(Call& call,
                                              const Execution& execution) {
  auto deadline =
      Clock::now() + std::chrono::milliseconds(execution.limits.wall_ms +
                                               options.wait_extra_ms);
  Execution latest = execution;
  while (!TerminalState(latest.state) && !stopping) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - Clock::now())
                    .count();
    if (left <= 0) break;
    Result<Execution> next =
        service->WaitExecution(call.principal.user_id, execution.id,
                               std::min<int64_t>(left, kWaitSliceMs));
    if (!next.ok()) return next.status();
    latest = std::move(*next);
  }
  return latest;
}

namespace {

const std::vector<Route>& Routes() {
  using R = HttpServer::Rep;
  static const std::vector<Route> routes = {
      {"GET", "/healthz", false, false, &R::Healthz},
      {"GET", "/me", true, false, &R::Me},
      {"GET", "/apikey", true, false, &R::ListKeys},
      {"POST", "/apikey", true, true, &R::CreateKey},
      {"DELETE", "/apikey/{id}", true, false, &R::DisableKey},
      {"POST", "/run", true, true, &R::Run},
      {"GET", "/status/{id}", true, false, &R::ExecStatus},
      {"GET", "/result/{id}", true, false, &R::ExecResult},
  };
  return routes;
}

// ---- serve -----------------------------------------------------------

// The self-pipe: signal handlers only write one byte to it; the main
// thread does the work.
int g_signal_pipe[2] = {-1, -1};

extern "C" void OnStopSignal(int) {
  int saved = errno;
  char byte = 1;
  ssize_t ignored = write(g_signal_pipe[1], &byte, 1);
  (void)ignored;
  errno = saved;
}

Status InstallStopSignals() {
  if (pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    return Status::FromErrno("creating the signal pipe", errno);
  }
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGTERM, &action, nullptr) != 0 ||
      sigaction(SIGINT, &action, nullptr) != 0) {
    return Status::FromErrno("installing signal handlers", errno);
  }
  return Status::Ok();
}

void WaitForStopSignal() {
  for (;;) {
    struct pollfd pfd = {g_signal_pipe[0], POLLIN, 0};
    int n = poll(&pfd, 1, -1);
    if (n > 0) return;
    if (n < 0 && errno != EINTR) return;
  }
}

std::string BaseUrl(const std::string& host, int port) {
  if (host.find(':') != std::string::npos) {
    return fmt::format("http://[{}]:{}", host, port);
  }
  return fmt::format("http://{}:{}", host, port);
}

int Die(const std::string& what) {
  fmt::print(stderr, "dex-shim serve: {}\n", what);
  return 1;
}

}  // namespace

int RunServe(const ServeConfig& config, const Prelude& prelude) {
  Status signals = InstallStopSignals();
  if (!signals.ok()) return Die(signals.ToString());
  Logger* logger = StderrLogger(config.log_level);
  logger->Log(LogLevel::kInfo, fmt::format("dex-shim {} starting; data {}",
                                           DEX_VERSION, config.data_dir));
  ServiceOptions options;
  options.data_dir = config.data_dir;
  options.executor.workers = config.workers;
  options.executor.max_queued = config.max_queued;
  options.executor.queue_timeout_ms = config.queue_timeout_ms;
  options.executor.retention_ms = config.retention_ms;
  options.store.max_map_bytes = config.max_store_bytes;
  options.logger = logger;
  // The service (and its spawner) start before the socket exists, so the
  // spawner can never inherit it.
  Result<std::unique_ptr<Service>> service = Service::Open(options);
  if (!service.ok()) return Die(service.status().ToString());
  Metrics metrics;
  HttpOptions http_options;
  // Requests are counted only when someone can read the counts.
  if (config.metrics_port >= 0) http_options.metrics = &metrics;
  HttpServer server(service->get(), logger, http_options);
  Result<int> port = server.Bind(config.host, config.port);
  if (!port.ok()) return Die(port.status().message());
  std::string url = BaseUrl(config.host, *port);
  if (prelude) {
    Status ready = prelude(service->get(), url);
    if (!ready.ok()) return Die(ready.ToString());
  }
  Status started = server.Start([] { OnStopSignal(0); });
  if (!started.ok()) return Die(started.ToString());
  MetricsServer metrics_server(service->get(), &metrics);
  if (config.metrics_port >= 0) {
    Result<int> bound =
        metrics_server.Start(config.metrics_host, config.metrics_port);
    if (!bound.ok()) return Die(bound.status().message());
    logger->Log(LogLevel::kInfo, "dex-shim metrics on " +
                                     BaseUrl(config.metrics_host, *bound) +
                                     "/metrics");
  }
  fmt::print("listening on {}\n", url);
  std::fflush(stdout);
  logger->Log(LogLevel::kInfo, "dex-shim serving on " + url);

  WaitForStopSignal();
  logger->Log(LogLevel::kInfo, "dex-shim stopping");
  server.Stop();
  metrics_server.Stop();
  (*service)->Shutdown(config.shutdown_grace_ms);
  size_t still_running = (*service)->GetHealth().running;
  if (still_running > 0) {
    // Joining the workers would wait for those runs' own wall limits,
    // past the grace. Their records say "running", so the next start
    // fails and refunds them as interrupted; everything committed is
    // flushed first.
    logger->Log(LogLevel::kWarn,
                fmt::format("dex-shim: {} runs still running after the "
                            "grace; exiting without them",
                            still_running));
    (void)(*service)->store()->Sync();
    std::fflush(nullptr);
    std::_Exit(0);
  }
  logger->Log(LogLevel::kInfo, "dex-shim stopped");
  return 0;
}

}  // namespace dex::shim
