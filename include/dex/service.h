// Service: the facade the shim and host applications call. Ties Store,
// Keys, Quota, Sandbox and Executor together. Knows nothing of sockets.
#ifndef DEX_SERVICE_H_
#define DEX_SERVICE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dex/env.h"
#include "dex/executor.h"
#include "dex/export.h"
#include "dex/keys.h"
#include "dex/quota.h"
#include "dex/sandbox.h"
#include "dex/status.h"
#include "dex/store.h"

namespace dex {

struct ServiceOptions {
  // Folder of the store; created if missing. Default "./dex-data".
  std::string data_dir = "dex-data";
  // When false, no sandbox or executor is started: enough for the admin
  // commands, which may run while a server uses the same folder.
  bool run_executions = true;
  StoreOptions store;        // path is set from data_dir
  QuotaOptions quota;        // clock is set from `clock`
  KeysOptions keys;          // clock is set from `clock`
  SandboxOptions sandbox;    // logger is set from `logger`
  ExecutorOptions executor;  // clock and logger are set from here
  Clock* clock = SystemClock();
  Logger* logger = NullLogger();
};

// Who is calling, once the key is verified.
struct Principal {
  std::string user_id;
  std::string key_id;
};

// Limits a caller asked for; absent fields take the plan's defaults.
struct LimitsRequest {
  std::optional<int64_t> wall_ms, cpu_ms, memory_mb, output_bytes, processes;
};

struct RunSpec {
  std::string script;
  std::string language = "python";
  std::optional<std::string> stdin_data;
  LimitsRequest limits;
  std::string idempotency_key;  // empty: none
  std::string fingerprint;      // digest of body and query, for replays
};

struct NewUser {
  User user;
  MintedKey key;
};

// Upper bounds, in ms, of the buckets of RunStats::latency_counts.
inline constexpr std::array<int64_t, 13> kRunLatencyBoundsMs = {
    10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000};

// Runs that reached the sandbox since the service opened. Counters only
// grow, so a scraper may take differences.
struct RunStats {
  // Indexed by Reason: runs that ended with that verdict; a run the
  // sandbox could not carry out counts as Reason::kSandboxError.
  std::array<uint64_t, 8> by_reason = {};
  // Time each run spent in the sandbox, from the spawn request to its
  // end. latency_counts[i] counts runs above the previous bound and at
  // most kRunLatencyBoundsMs[i]; the last entry counts the rest.
  std::array<uint64_t, kRunLatencyBoundsMs.size() + 1> latency_counts = {};
  int64_t latency_sum_ms = 0;
};

struct Health {
  bool store_ok = false;
  std::string memory_mode;  // "sampled", "cgroup2", or "none" (admin)
  size_t queued = 0;
  size_t running = 0;
  int workers = 0;
  // Sandboxes prepared in advance and ready to take a run now; 0 when
  // there is no warm pool.
  size_t warm_available = 0;
  RunStats runs;  // all zero when run_executions is false
};

// Safe to share between threads.
class DEX_EXPORT Service {
 public:
  static Result<std::unique_ptr<Service>> Open(const ServiceOptions& options);
  ~Service();

  // The caller of a raw key: invalid_token, key_disabled (kUnauthenticated).
  Result<Principal> Authenticate(std::string_view raw_key);

  Result<UsageView> Me(const std::string& user_id);
  Result<std::vector<KeyInfo>> ListKeys(const std::string& user_id);
  Result<MintedKey> CreateKey(const std::string& user_id,
                              std::string_view name);
  Result<KeyInfo> DisableKey(const std::string& user_id,
                             const std::string& key_id);

  // Resolves limits against the effective plan: kInvalidArgument naming
  // the field ("limits.wall_ms: ...") when above the plan's maxima or not
  // positive. Unknown language: kInvalidArgument naming "language".
  Result<RunLimits> ResolveLimits(const Plan& plan,
                                  const LimitsRequest& request);
  // Validates, charges and queues a run. Order of checks: language and
  // limits (400), then quota (402/429).
  Result<SubmitResult> Submit(const std::string& user_id, const RunSpec& spec);
  Result<Execution> GetExecution(const std::string& user_id,
                                 const std::string& id);
  Result<Execution> WaitExecution(const std::string& user_id,
                                  const std::string& id, int64_t timeout_ms);

  // Admin: users, plans, subscription state.
  Result<NewUser> CreateUser(const std::string& plan);
  Result<UsageView> UpdateUser(const std::string& user_id,
                               const std::optional<std::string>& plan,
                               const std::optional<SubscriptionStatus>& status);
  Result<Plan> SetPlan(const Plan& plan);
  Result<Plan> GetPlan(const std::string& name);

  Health GetHealth();
  // Stops the executor: running work finishes within grace_ms; queued
  // work stays for the next start.
  void Shutdown(int64_t grace_ms);

  Keys* keys();
  Quota* quota();
  Store* store();
  Executor* executor();  // null when run_executions is false

 private:
  struct Rep;
  explicit Service(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace dex

#endif  // DEX_SERVICE_H_
