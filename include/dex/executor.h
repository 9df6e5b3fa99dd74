// Executor: the queue, the worker pool, execution records and restart
// recovery. Knows nothing of HTTP.
#ifndef DEX_EXECUTOR_H_
#define DEX_EXECUTOR_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dex/env.h"
#include "dex/export.h"
#include "dex/quota.h"
#include "dex/sandbox.h"
#include "dex/status.h"
#include "dex/store.h"

namespace dex {

enum class ExecState { kQueued, kRunning, kCompleted, kFailed };
DEX_EXPORT const char* ExecStateName(ExecState state);

struct Execution {
  std::string id;  // "exec_" + random characters
  std::string user_id;
  std::string language = "python";
  ExecState state = ExecState::kQueued;
  RunLimits limits;
  std::string period;  // the month charged, for refunds
  int64_t created_ms = 0;
  int64_t started_ms = 0;   // 0 until running
  int64_t finished_ms = 0;  // 0 until terminal
  int64_t queue_ms = 0;     // created to picked by a worker
  // Set when terminal. For kFailed: reason kSandboxError, empty streams.
  RunOutcome outcome;
  std::string detail;  // kFailed only: interrupted, queue_timeout, ...
};

struct ExecutorOptions {
  // Worker threads, each supervising one sandbox at a time. 0 means the
  // number of CPUs (at least 2). More workers overlap runs that sleep.
  int workers = 0;
  // Queued runs in all users before Submit answers kUnavailable
  // "queue_full". Default 1000.
  size_t max_queued = 1000;
  // A queued run older than this fails with detail "queue_timeout" and is
  // refunded. Default 10 minutes.
  int64_t queue_timeout_ms = 10 * 60 * 1000;
  // Finished runs are purged this long after they end. Default 24 h.
  int64_t retention_ms = 24ll * 3600 * 1000;
  // How often the janitor looks for expired work. Default 1 s.
  int64_t janitor_interval_ms = 1000;
  Clock* clock = SystemClock();
  Logger* logger = NullLogger();
};

struct SubmitRequest {
  std::string user_id;
  std::string language = "python";
  RunRequest run;
  // Scoped to the user; empty means none. A replay with the same
  // fingerprint returns the first execution and charges nothing; with a
  // different one, kFailedPrecondition "idempotency_key_reused".
  std::string idempotency_key;
  std::string fingerprint;  // a digest of the request, compared on replay
  // The user's runs in sandboxes at once (the plan's "runs at once"); 0
  // means no cap of its own.
  int64_t max_concurrent = 0;
};

struct SubmitResult {
  Execution execution;
  bool replayed = false;  // true when an idempotency key matched
};

struct ExecutorStats {
  size_t queued = 0;
  size_t running = 0;
  int workers = 0;
};

// Safe to share between threads.
class DEX_EXPORT Executor {
 public:
  // Borrowed pointers must outlive the Executor. Recovers the store's
  // state (queued runs resume; runs left running fail as "interrupted"
  // and are refunded) and starts the workers.
  static Result<std::unique_ptr<Executor>> Open(Store* store, Quota* quota,
                                                Sandbox* sandbox,
                                                const ExecutorOptions& options);
  // Stops the workers (see Shutdown) and returns.
  ~Executor();

  // Charges one unit and queues the run, both in one commit, before
  // returning. Errors: Quota::Admit's, kUnavailable "queue_full",
  // "store_full", "shutting_down", and the idempotency ones.
  Result<SubmitResult> Submit(const SubmitRequest& request);
  // kNotFound for an unknown id or another user's.
  Result<Execution> Get(const std::string& user_id, const std::string& id);
  // Waits until the run is terminal or timeout_ms passes; returns its
  // latest state either way.
  Result<Execution> Wait(const std::string& user_id, const std::string& id,
                         int64_t timeout_ms);
  ExecutorStats Stats();

  // Stops taking work, lets running work finish within grace_ms, leaves
  // queued work in the store for the next start. Idempotent.
  void Shutdown(int64_t grace_ms);

 private:
  struct Rep;
  explicit Executor(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace dex

#endif  // DEX_EXECUTOR_H_
