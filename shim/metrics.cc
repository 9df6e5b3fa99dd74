#include "shim/metrics.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <httplib.h>
#include <sys/socket.h>

#include <thread>

#include "shim/listener.h"

namespace dex::shim {
namespace {

// Methods other than these are counted as "other", so a client cannot
// grow the label set without bound.
std::string_view KnownMethod(std::string_view method) {
  static constexpr std::string_view kKnown[] = {
      "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
  for (std::string_view known : kKnown) {
    if (method == known) return known;
  }
  return "other";
}

// A label value as the text format wants it: \, " and newline escaped.
std::string Escape(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    out += c == '\n' ? std::string("\\n") : std::string(1, c);
  }
  return out;
}

void Header(std::string* out, std::string_view name, std::string_view type,
            std::string_view help) {
  *out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void Gauge(std::string* out, std::string_view name, std::string_view help,
           int64_t value) {
  Header(out, name, "gauge", help);
  *out += fmt::format("{} {}\n", name, value);
}

void RunCounters(std::string* out, const RunStats& runs) {
  Header(out, "dex_runs_total", "counter",
         "Runs that reached a sandbox, by verdict.");
  for (size_t i = 0; i < runs.by_reason.size(); ++i) {
    *out += fmt::format("dex_runs_total{{reason=\"{}\"}} {}\n",
                        ReasonName(static_cast<Reason>(i)), runs.by_reason[i]);
  }
}

void RunLatency(std::string* out, const RunStats& runs) {
  std::string_view name = "dex_run_duration_seconds";
  Header(out, name, "histogram",
         "Time a run spent in its sandbox, from spawn request to end.");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kRunLatencyBoundsMs.size(); ++i) {
    cumulative += runs.latency_counts[i];
    *out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name,
                        kRunLatencyBoundsMs[i] / 1000.0, cumulative);
  }
  cumulative += runs.latency_counts.back();
  *out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, cumulative);
  *out += fmt::format("{}_sum {}\n", name, runs.latency_sum_ms / 1000.0);
  *out += fmt::format("{}_count {}\n", name, cumulative);
}

}  // namespace

void Metrics::CountRequest(std::string_view method, std::string_view route,
                           int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{std::string(KnownMethod(method)), std::string(route), status}];
}

std::string Metrics::Render(const Health& health) const {
  std::string out;
  RunCounters(&out, health.runs);
  RunLatency(&out, health.runs);
  Gauge(&out, "dex_queue_depth", "Runs waiting in the queue.",
        static_cast<int64_t>(health.queued));
  Gauge(&out, "dex_runs_running", "Runs in sandboxes now.",
        static_cast<int64_t>(health.running));
  Gauge(&out, "dex_workers", "Sandbox worker threads.", health.workers);
  Gauge(&out, "dex_warm_sandboxes_available",
        "Sandboxes prepared in advance and ready now (0 without a pool).",
        static_cast<int64_t>(health.warm_available));
  Gauge(&out, "dex_store_ok", "1 when the store answers reads.",
        health.store_ok ? 1 : 0);
  Header(&out, "dex_http_requests_total", "counter",
         "HTTP requests answered, by method, route pattern and status.");
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [labels, count] : requests_) {
    const auto& [method, route, status] = labels;
    out += fmt::format(
        "dex_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{}\"}} "
        "{}\n",
        Escape(method), Escape(route), status, count);
  }
  return out;
}

struct MetricsServer::Rep {
  Service* service;        // borrowed
  const Metrics* metrics;  // borrowed
  httplib::Server server;
  std::thread thread;
};

MetricsServer::MetricsServer(Service* service, const Metrics* metrics)
    : rep_(std::make_unique<Rep>()) {
  rep_->service = service;
  rep_->metrics = metrics;
  rep_->server.new_task_queue = [] { return new httplib::ThreadPool(2); };
  rep_->server.set_read_timeout(5);
  rep_->server.set_write_timeout(5);
  rep_->server.set_socket_options([](int sock) {
    int one = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    fcntl(sock, F_SETFD, FD_CLOEXEC);
  });
  Rep* rep = rep_.get();
  rep_->server.Get(
      "/metrics", [rep](const httplib::Request&, httplib::Response& res) {
        res.set_content(rep->metrics->Render(rep->service->GetHealth()),
                        "text/plain; version=0.0.4; charset=utf-8");
      });
  rep_->server.set_error_handler(
      [](const httplib::Request&, httplib::Response& res) {
        if (res.status == 404) {
          res.set_content("only GET /metrics is served here\n", "text/plain");
        }
      });
}

MetricsServer::~MetricsServer() { Stop(); }

Result<int> MetricsServer::Start(const std::string& host, int port) {
  Result<int> bound =
      BindListener(rep_->server, host, port, "binding the metrics listener");
  if (!bound.ok()) return bound;
  rep_->thread =
      std::thread([rep = rep_.get()] { rep->server.listen_after_bind(); });
  DEX_RETURN_IF_ERROR(AwaitAcceptLoop(rep_->server, "the metrics listener"));
  return bound;
}

void MetricsServer::Stop() {
  rep_->server.stop();
  if (rep_->thread.joinable()) rep_->thread.join();
}

}  // namespace dex::shim
