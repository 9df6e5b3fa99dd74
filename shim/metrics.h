// Prometheus metrics of dex-shim: HTTP requests counted as they are
// answered, and the service's run counters, queue and warm pool read at
// scrape time. Served on a listener of its own (`--metrics-listen`), off
// by default: the figures need no key but are not for every API client.
#ifndef DEX_SHIM_METRICS_H_
#define DEX_SHIM_METRICS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>

#include "dex/service.h"

namespace dex::shim {

// Request counters. Safe to share between threads.
class Metrics {
 public:
  // `route` is the matched pattern ("/status/{id}") or "-" when none
  // matched, so ids never become label values.
  void CountRequest(std::string_view method, std::string_view route,
                    int status);

  // The Prometheus text exposition (format 0.0.4) of these counters and
  // of `health`.
  std::string Render(const Health& health) const;

 private:
  mutable std::mutex mu_;
  // (method, route, status) -> requests answered; guarded by mu_.
  std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;
};

// A second HTTP listener that answers only GET /metrics. Start() and
// Stop() are called from one thread.
class MetricsServer {
 public:
  // `service` and `metrics` are borrowed and must outlive the server.
  MetricsServer(Service* service, const Metrics* metrics);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds host:port (port 0 picks one) and serves on a background thread.
  // Returns the bound port.
  Result<int> Start(const std::string& host, int port);
  // Stops and joins. Idempotent.
  void Stop();

 private:
  struct Rep;
  std::unique_ptr<Rep> rep_;
};

}  // namespace dex::shim

#endif  // DEX_SHIM_METRICS_H_
