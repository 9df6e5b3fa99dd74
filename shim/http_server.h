// The HTTP face of dex (§2 of the design): routes, JSON, status codes,
// headers and the access log, each route a thin mapping onto a Service
// call. Also `dex-shim serve`: binding, readiness line and signals.
#ifndef DEX_SHIM_HTTP_SERVER_H_
#define DEX_SHIM_HTTP_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <string>

#include "dex/service.h"

namespace dex::shim {

class Metrics;

struct HttpOptions {
  // Connections served at once; the rest wait their turn. A connection
  // that stalls holds its thread for up to read_timeout_s, so this is
  // sized above the stalled connections one client can cheaply hold (64
  // stalled ones leave GET /me answered at once). Default 128.
  int threads = 128;
  // Seconds a connection may stall while sending a request or reading an
  // answer before it is dropped. Default 5.
  time_t read_timeout_s = 5;
  time_t write_timeout_s = 5;
  // An idle keep-alive connection holds a thread; it is closed after this
  // many seconds without a new request. Default 2.
  time_t keep_alive_timeout_s = 2;
  // Requests per connection before it is closed. Default 100.
  size_t keep_alive_max_count = 100;
  // Connections the kernel queues before the server accepts them.
  // cpp-httplib listens with a backlog of 5, which drops a burst of
  // simultaneous connections (they then fail on the client's side); the
  // socket is listened on again with this. Capped by net.core.somaxconn.
  // Default 1024.
  int listen_backlog = 1024;
  // Request bodies above this answer 413 payload_too_large. Default 2 MiB.
  size_t max_body_bytes = 2u << 20;
  // `?wait=true` on POST /run waits at most the run's wall limit plus this
  // (its queue and set-up time). Default 30 s.
  int64_t wait_extra_ms = 30'000;
  // Counts every answered request when set; borrowed, must outlive the
  // server. Default none.
  Metrics* metrics = nullptr;
};

// Serves the API over one Service. Start() and Stop() are called from one
// thread; request handling is internally thread-safe.
class HttpServer {
 public:
  // `service` and `logger` are borrowed and must outlive the server.
  HttpServer(Service* service, Logger* logger, const HttpOptions& options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port; port 0 picks a free one. Returns the bound port.
  Result<int> Bind(const std::string& host, int port);
  // Serves on a background thread. REQUIRES: Bind() succeeded. Returns
  // once the accept loop runs. `on_exit` is called from that thread if
  // the loop ends on its own (not through Stop()).
  Status Start(std::function<void()> on_exit);
  // Stops accepting, ends `?wait=true` holds early, and waits for the
  // requests in flight. Idempotent.
  void Stop();

  struct Rep;  // the implementation; public only so its routes table can
               // name its handlers

 private:
  std::unique_ptr<Rep> rep_;
};

struct ServeConfig {
  std::string data_dir = "./dex-data";
  std::string host = "127.0.0.1";
  int port = 8080;
  int workers = 0;  // 0: the executor's default
  LogLevel log_level = LogLevel::kInfo;
  // Running work gets this long to finish on SIGTERM; queued work stays
  // in the store for the next start. Default 10 s.
  int64_t shutdown_grace_ms = 10'000;
  // Queued runs in all before POST /run answers 503 (--max-queued).
  size_t max_queued = 1000;
  // A queued run older than this fails as queue_timeout, refunded
  // (--queue-timeout-ms). Default 10 min.
  int64_t queue_timeout_ms = 600'000;
  // Finished runs are purged this long after they end (--retention-ms).
  // Default 24 h.
  int64_t retention_ms = 86'400'000;
  // Ceiling of the store's map in bytes (--max-store-mb); past it, new
  // runs answer 503 store_full and reads keep working. Default 16 GiB.
  uint64_t max_store_bytes = 16ull << 30;
  // GET /metrics is served on this address when metrics_port >= 0
  // (--metrics-listen); never on the API's own listener. Default off.
  std::string metrics_host = "127.0.0.1";
  int metrics_port = -1;
};

// Runs before the "listening on" line, once the port is bound; for the
// first-run helper. `base_url` is "http://HOST:PORT". An error stops serve.
using Prelude =
    std::function<Status(Service* service, const std::string& base_url)>;

// `dex-shim serve`: opens the service, binds, prints exactly one line
// "listening on http://HOST:PORT" to stdout, and serves until SIGTERM or
// SIGINT. Returns the process exit code.
int RunServe(const ServeConfig& config, const Prelude& prelude = nullptr);

}  // namespace dex::shim

#endif  // DEX_SHIM_HTTP_SERVER_H_
