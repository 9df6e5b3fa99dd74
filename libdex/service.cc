#include "dex/service.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <utility>

namespace dex {
namespace {

constexpr int64_t kDefaultWallMs = 10'000;

// A requested limit: absent takes `fallback`; present must be positive and
// at most `max`.
Result<int64_t> PickLimit(const char* field,
                          const std::optional<int64_t>& asked, int64_t fallback,
                          int64_t max, const std::string& plan) {
  if (!asked) return fallback;
  if (*asked <= 0) {
    return Status::Error(
        Category::kInvalidArgument,
        std::string("limits.") + field + ": must be a positive integer");
  }
  if (*asked > max) {
    return Status::Error(Category::kInvalidArgument,
                         std::string("limits.") + field + ": " +
                             std::to_string(*asked) + " is above the maximum " +
                             std::to_string(max) + " of plan " + plan);
  }
  return *asked;
}

static_assert(static_cast<size_t>(Reason::kSandboxError) + 1 ==
              RunStats().by_reason.size());

// Counts what the executor's runs came to, for Health::runs. Forwards
// everything else to the real sandbox, which it owns.
class CountingSandbox : public Sandbox {
 public:
  explicit CountingSandbox(std::unique_ptr<Sandbox> inner)
      : inner_(std::move(inner)) {}

  Result<RunOutcome> Run(const RunRequest& request) override {
    auto start = std::chrono::steady_clock::now();
    Result<RunOutcome> outcome = inner_->Run(request);
    int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - start)
                     .count();
    Reason reason = outcome.ok() ? outcome->reason : Reason::kSandboxError;
    size_t bucket = std::lower_bound(kRunLatencyBoundsMs.begin(),
                                     kRunLatencyBoundsMs.end(), ms) -
                    kRunLatencyBoundsMs.begin();
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.by_reason[static_cast<size_t>(reason)];
    ++stats_.latency_counts[bucket];
    stats_.latency_sum_ms += ms;
    return outcome;
  }

  MemoryMode memory_mode() const override { return inner_->memory_mode(); }
  size_t warm_available() const override { return inner_->warm_available(); }
  bool warm() const override { return inner_->warm(); }

  RunStats Stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  std::unique_ptr<Sandbox> inner_;
  std::mutex mu_;
  RunStats stats_;  // guarded by mu_
};

}  // namespace

struct Service::Rep {
  ServiceOptions options;
  std::unique_ptr<Store> store;
  std::unique_ptr<Quota> quota;
  std::unique_ptr<Keys> keys;
  std::unique_ptr<CountingSandbox> sandbox;
  std::unique_ptr<Executor> executor;
};

Service::Service(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}

Service::~Service() {
  // The executor borrows the sandbox, quota and store: it goes first.
  rep_->executor.reset();
  rep_->sandbox.reset();
}

Result<std::unique_ptr<Service>> Service::Open(const ServiceOptions& options) {
  auto rep = std::make_unique<Rep>();
  rep->options = options;
  StoreOptions store_options = options.store;
  store_options.path = options.data_dir;
  store_options.logger = options.logger;
  auto store = Store::Open(store_options);
  if (!store.ok()) return store.status();
  rep->store = std::move(*store);

  QuotaOptions quota_options = options.quota;
  quota_options.clock = options.clock;
  auto quota = Quota::Open(rep->store.get(), quota_options);
  if (!quota.ok()) return quota.status();
  rep->quota = std::move(*quota);

  KeysOptions keys_options = options.keys;
  keys_options.clock = options.clock;
  rep->keys = std::make_unique<Keys>(rep->store.get(), keys_options);

  if (options.run_executions) {
    SandboxOptions sandbox_options = options.sandbox;
    sandbox_options.logger = options.logger;
    auto sandbox = Sandbox::Open(sandbox_options);
    if (!sandbox.ok()) return sandbox.status();
    rep->sandbox = std::make_unique<CountingSandbox>(std::move(*sandbox));

    ExecutorOptions executor_options = options.executor;
    executor_options.clock = options.clock;
    executor_options.logger = options.logger;
    auto executor = Executor::Open(rep->store.get(), rep->quota.get(),
                                   rep->sandbox.get(), executor_options);
    if (!executor.ok()) return executor.status();
    rep->executor = std::move(*executor);
  }
  return std::unique_ptr<Service>(new Service(std::move(rep)));
}

Result<Principal> Service::Authenticate(std::string_view raw_key) {
  auto key = rep_->keys->Verify(raw_key);
  if (!key.ok()) return key.status();
  return Principal{std::move(key->user_id), std::move(key->id)};
}

Result<UsageView> Service::Me(const std::string& user_id) {
  return rep_->quota->Usage(user_id);
}

Result<std::vector<KeyInfo>> Service::ListKeys(const std::string& user_id) {
  return rep_->keys->List(user_id);
}

Result<MintedKey> Service::CreateKey(const std::string& user_id,
                                     std::string_view name) {
  return rep_->keys->Mint(user_id, name);
}

Result<KeyInfo> Service::DisableKey(const std::string& user_id,
                                    const std::string& key_id) {
  return rep_->keys->Disable(user_id, key_id);
}

Result<RunLimits> Service::ResolveLimits(const Plan& plan,
                                         const LimitsRequest& request) {
  const PlanMaxima& max = plan.max;
  RunLimits limits;
  auto wall =
      PickLimit("wall_ms", request.wall_ms,
                std::min(kDefaultWallMs, max.wall_ms), max.wall_ms, plan.name);
  if (!wall.ok()) return wall.status();
  limits.wall_ms = *wall;
  // CPU defaults to the run's own wall limit.
  auto cpu =
      PickLimit("cpu_ms", request.cpu_ms, std::min(limits.wall_ms, max.cpu_ms),
                max.cpu_ms, plan.name);
  if (!cpu.ok()) return cpu.status();
  limits.cpu_ms = *cpu;
  auto memory = PickLimit("memory_mb", request.memory_mb, max.memory_mb,
                          max.memory_mb, plan.name);
  if (!memory.ok()) return memory.status();
  limits.memory_mb = *memory;
  auto output = PickLimit("output_bytes", request.output_bytes,
                          max.output_bytes, max.output_bytes, plan.name);
  if (!output.ok()) return output.status();
  limits.output_bytes = *output;
  auto processes = PickLimit("processes", request.processes, max.processes,
                             max.processes, plan.name);
  if (!processes.ok()) return processes.status();
  limits.processes = *processes;
  return limits;
}

Result<SubmitResult> Service::Submit(const std::string& user_id,
                                     const RunSpec& spec) {
  if (!rep_->executor) {
    return Status(Category::kUnavailable, "unavailable",
                  "submitting a run: this service runs no executions");
  }
  if (spec.language != "python") {
    return Status::Error(Category::kInvalidArgument,
                         "language: only \"python\" is supported");
  }
  if (spec.script.empty()) {
    return Status::Error(Category::kInvalidArgument,
                         "script: must not be empty");
  }
  auto view = rep_->quota->Usage(user_id);
  if (!view.ok()) return view.status();
  auto limits = ResolveLimits(view->effective_plan, spec.limits);
  if (!limits.ok()) return limits.status();
  SubmitRequest request;
  request.user_id = user_id;
  request.language = spec.language;
  request.run.script = spec.script;
  request.run.stdin_data = spec.stdin_data;
  request.run.limits = *limits;
  request.idempotency_key = spec.idempotency_key;
  request.fingerprint = spec.fingerprint;
  request.max_concurrent = view->effective_plan.max.concurrent;
  return rep_->executor->Submit(request);
}

Result<Execution> Service::GetExecution(const std::string& user_id,
                                        const std::string& id) {
  if (!rep_->executor) {
    return Status(Category::kUnavailable, "unavailable",
                  "reading a run: this service runs no executions");
  }
  return rep_->executor->Get(user_id, id);
}

Result<Execution> Service::WaitExecution(const std::string& user_id,
                                         const std::string& id,
                                         int64_t timeout_ms) {
  if (!rep_->executor) {
    return Status(Category::kUnavailable, "unavailable",
                  "waiting for a run: this service runs no executions");
  }
  return rep_->executor->Wait(user_id, id, timeout_ms);
}

Result<NewUser> Service::CreateUser(const std::string& plan) {
  NewUser created;
  Status s = rep_->store->Update([&](Txn& txn) -> Status {
    auto user = rep_->quota->CreateUser(txn, plan);
    if (!user.ok()) return user.status();
    auto key = rep_->keys->Mint(txn, user->id, "default");
    if (!key.ok()) return key.status();
    created = NewUser{*user, *key};
    return Status::Ok();
  });
  if (!s.ok()) return s;
  rep_->options.logger->Log(
      LogLevel::kInfo,
      "service: created " + created.user.id + " on plan " + plan);
  return created;
}

Result<UsageView> Service::UpdateUser(
    const std::string& user_id, const std::optional<std::string>& plan,
    const std::optional<SubscriptionStatus>& status) {
  auto user = rep_->quota->UpdateUser(user_id, plan, status);
  if (!user.ok()) return user.status();
  return rep_->quota->Usage(user_id);
}

Result<Plan> Service::SetPlan(const Plan& plan) {
  return rep_->quota->SetPlan(plan);
}

Result<Plan> Service::GetPlan(const std::string& name) {
  return rep_->quota->GetPlan(name);
}

Health Service::GetHealth() {
  Health health;
  health.store_ok = rep_->store->BeginRead().ok();
  health.memory_mode =
      rep_->sandbox ? MemoryModeName(rep_->sandbox->memory_mode()) : "none";
  if (rep_->executor) {
    ExecutorStats stats = rep_->executor->Stats();
    health.queued = stats.queued;
    health.running = stats.running;
    health.workers = stats.workers;
  }
  health.warm_available = rep_->sandbox ? rep_->sandbox->warm_available() : 0;
  if (rep_->sandbox) health.runs = rep_->sandbox->Stats();
  return health;
}

void Service::Shutdown(int64_t grace_ms) {
  if (rep_->executor) rep_->executor->Shutdown(grace_ms);
}

Keys* Service::keys() { return rep_->keys.get(); }
Quota* Service::quota() { return rep_->quota.get(); }
Store* Service::store() { return rep_->store.get(); }
Executor* Service::executor() { return rep_->executor.get(); }

}  // namespace dex
