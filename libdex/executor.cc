#include "dex/executor.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "dex/keys.h"
#include "libdex/records.h"

namespace dex {
namespace {

constexpr int64_t kIdempotencyKeepMs = 24ll * 3600 * 1000;
// A worker that could not record a run's start waits this long before
// taking work again, so a full store is not retried in a hot loop.
constexpr int64_t kStoreBackoffMs = 200;

// Writes whose loss in a machine crash the next start repairs: a run's
// start, its end and purges. Submissions are flushed before the answer.
WriteOptions Lazy() {
  WriteOptions write;
  write.sync = false;
  return write;
}

bool Terminal(ExecState state) {
  return state == ExecState::kCompleted || state == ExecState::kFailed;
}

Status NotFound(const std::string& id) {
  return Status(Category::kNotFound, "not_found", "no execution " + id);
}

Result<Execution> LoadExecution(Txn& txn, const std::string& id) {
  std::string bytes;
  Status s = txn.Get(Table::kExecutions, id, &bytes);
  if (s.category() == Category::kNotFound) return NotFound(id);
  DEX_RETURN_IF_ERROR(s);
  Execution e;
  DEX_RETURN_IF_ERROR(internal::DecodeExecution(bytes, &e));
  return e;
}

std::string ExpiryKey(int64_t finished_ms, const std::string& id) {
  return internal::PadNumber(static_cast<uint64_t>(finished_ms)) + "/" + id;
}

}  // namespace

const char* ExecStateName(ExecState state) {
  switch (state) {
    case ExecState::kQueued:
      return "queued";
    case ExecState::kRunning:
      return "running";
    case ExecState::kCompleted:
      return "completed";
    case ExecState::kFailed:
      return "failed";
  }
  return "failed";
}

// One queued run as the scheduler sees it.
struct QueuedRun {
  std::string id;
  int64_t created_ms = 0;
};

// Per-user scheduling state. Guarded by Rep::mu.
struct UserQueue {
  std::deque<QueuedRun> runs;
  int64_t running = 0;
  int64_t max_concurrent = 0;  // 0: no cap of its own
};

struct Executor::Rep {
  Store* store;      // borrowed
  Quota* quota;      // borrowed
  Sandbox* sandbox;  // borrowed
  ExecutorOptions options;

  std::mutex mu;
  std::condition_variable work_cv;     // queued work or shutdown
  std::condition_variable idle_cv;     // a run left its sandbox
  std::condition_variable janitor_cv;  // shutdown, for the janitor
  // Users with queued runs, in round-robin order. Guarded by mu.
  std::deque<std::string> ready;
  std::unordered_map<std::string, UserQueue> users;  // guarded by mu
  size_t queued = 0;                                 // guarded by mu
  size_t reserved = 0;    // submissions in flight, guarded by mu
  size_t running = 0;     // guarded by mu
  bool stopping = false;  // guarded by mu
  std::vector<std::thread> workers;
  std::thread janitor;

  // Callers of Wait on one run. Each run's end wakes its own waiters only:
  // one condition variable for all would wake every waiting request (and
  // have each read its run back) at every run's end.
  struct Waiters {
    std::condition_variable cv;
    uint64_t ends = 0;  // times the run was recorded as ended
    int count = 0;      // callers waiting
  };
  // Run id -> its waiters, while any wait. Guarded by mu.
  std::unordered_map<std::string, std::shared_ptr<Waiters>> waiters;

  void Log(LogLevel level, const std::string& message) {
    options.logger->Log(level, message);
  }

  void NotifyEnded(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = waiters.find(id);
    if (it == waiters.end()) return;
    ++it->second->ends;
    it->second->cv.notify_all();
  }

  // Picks the next run: the first user in round-robin order that has work
  // and room under its cap; that user goes to the back. REQUIRES: mu held.
  bool PickLocked(QueuedRun* run, std::string* user_id) {
    for (size_t i = 0; i < ready.size(); ++i) {
      std::string user = ready[i];
      UserQueue& q = users[user];
      if (q.max_concurrent > 0 && q.running >= q.max_concurrent) continue;
      *run = q.runs.front();
      q.runs.pop_front();
      ++q.running;
      --queued;
      ready.erase(ready.begin() + static_cast<long>(i));
      if (!q.runs.empty()) ready.push_back(user);
      *user_id = user;
      return true;
    }
    return false;
  }

  void EnqueueLocked(const std::string& user_id, QueuedRun run,
                     int64_t max_concurrent) {
    UserQueue& q = users[user_id];
    q.max_concurrent = max_concurrent;
    if (q.runs.empty()) ready.push_back(user_id);
    q.runs.push_back(std::move(run));
    ++queued;
  }

  // A run left its sandbox (or never entered one). REQUIRES: mu held.
  void ReleaseLocked(const std::string& user_id) {
    UserQueue& q = users[user_id];
    --q.running;
    --running;
    // A user at its cap may have work waiting: make sure it is in the
    // round-robin order.
    if (!q.runs.empty() &&
        std::find(ready.begin(), ready.end(), user_id) == ready.end()) {
      ready.push_back(user_id);
    }
    if (q.runs.empty() && q.running == 0) users.erase(user_id);
    work_cv.notify_all();
    idle_cv.notify_all();
  }

  void WorkerLoop();
  void RunOne(const std::string& user_id, const QueuedRun& run);
  Status Finish(Execution& e, bool refund);
  void JanitorLoop();
  void ExpireQueued();
  void PurgeExpired();
  Status Recover();
};

void Executor::Rep::WorkerLoop() {
  for (;;) {
    QueuedRun run;
    std::string user_id;
    {
      std::unique_lock<std::mutex> lock(mu);
      work_cv.wait(lock,
                   [&] { return stopping || PickLocked(&run, &user_id); });
      if (stopping && user_id.empty()) return;
      ++running;
    }
    RunOne(user_id, run);
    std::lock_guard<std::mutex> lock(mu);
    ReleaseLocked(user_id);
  }
}

// Writes a terminal record, drops the script, and refunds when asked; all
// in one commit. When the store is full, keeps the verdict and drops the
// output rather than leaving the run without an end.
Status Executor::Rep::Finish(Execution& e, bool refund) {
  auto write = [&](Txn& txn) -> Status {
    DEX_RETURN_IF_ERROR(
        txn.Put(Table::kExecutions, e.id, internal::EncodeExecution(e)));
    DEX_RETURN_IF_ERROR(txn.Delete(Table::kScripts, e.id));
    DEX_RETURN_IF_ERROR(
        txn.Put(Table::kExpiry, ExpiryKey(e.finished_ms, e.id), ""));
    if (refund) DEX_RETURN_IF_ERROR(quota->Refund(txn, e.user_id, e.period));
    return Status::Ok();
  };
  Status s = store->Update(write, Lazy());
  if (s.code() == "store_full") {
    Log(LogLevel::kError,
        "executor: store full; result of " + e.id + " kept without its output");
    e.outcome.stdout_data.clear();
    e.outcome.stderr_data.clear();
    s = store->Update(write, Lazy());
  }
  if (!s.ok()) {
    Log(LogLevel::kError,
        "executor: recording the end of " + e.id + ": " + s.ToString());
  }
  NotifyEnded(e.id);
  return s;
}

void Executor::Rep::RunOne(const std::string& user_id, const QueuedRun& run) {
  Execution e;
  internal::ScriptRecord script;
  bool lost = false;
  {
    auto txn = store->BeginRead();
    if (!txn.ok()) return;
    auto loaded = LoadExecution(*txn, run.id);
    if (!loaded.ok() || loaded->state != ExecState::kQueued) return;
    e = *loaded;
    std::string bytes;
    lost = !txn->Get(Table::kScripts, run.id, &bytes).ok() ||
           !internal::DecodeScript(bytes, &script).ok();
  }
  int64_t now = options.clock->NowMs();
  bool too_old = now - e.created_ms > options.queue_timeout_ms;
  if (lost || too_old) {
    e.state = ExecState::kFailed;
    e.detail = too_old ? "queue_timeout" : "script_lost";
    e.finished_ms = now;
    e.outcome = RunOutcome{};
    (void)Finish(e, true);
    return;
  }
  e.state = ExecState::kRunning;
  e.started_ms = now;
  e.queue_ms = now - e.created_ms;
  Status s = store->Update(
      [&](Txn& txn) {
        return txn.Put(Table::kExecutions, e.id, internal::EncodeExecution(e));
      },
      Lazy());
  if (!s.ok()) {
    Log(LogLevel::kError, "executor: starting " + e.id + ": " + s.ToString());
    std::unique_lock<std::mutex> lock(mu);
    EnqueueLocked(user_id, run, users[user_id].max_concurrent);
    work_cv.notify_one();
    // Back off (keeping this run's slot) rather than retry at once.
    work_cv.wait_for(lock, std::chrono::milliseconds(kStoreBackoffMs),
                     [&] { return stopping; });
    return;
  }

  RunRequest request;
  request.script = std::move(script.script);
  if (script.has_stdin) request.stdin_data = std::move(script.stdin_data);
  request.limits = e.limits;
  auto outcome = sandbox->Run(request);
  e.finished_ms = options.clock->NowMs();
  if (outcome.ok()) {
    e.state = ExecState::kCompleted;
    e.outcome = std::move(*outcome);
    (void)Finish(e, false);
  } else {
    Log(LogLevel::kError, "executor: sandbox failed for " + e.id + ": " +
                              outcome.status().ToString());
    e.state = ExecState::kFailed;
    e.outcome = RunOutcome{};
    e.detail = outcome.status().message();
    (void)Finish(e, true);
  }
}

void Executor::Rep::ExpireQueued() {
  int64_t now = options.clock->NowMs();
  std::vector<std::pair<std::string, QueuedRun>> expired;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& [user, q] : users) {
      while (!q.runs.empty() &&
             now - q.runs.front().created_ms > options.queue_timeout_ms) {
        expired.emplace_back(user, q.runs.front());
        q.runs.pop_front();
        --queued;
      }
    }
    ready.erase(std::remove_if(ready.begin(), ready.end(),
                               [&](const std::string& u) {
                                 return users[u].runs.empty();
                               }),
                ready.end());
    for (auto it = users.begin(); it != users.end();) {
      bool idle = it->second.runs.empty() && it->second.running == 0;
      it = idle ? users.erase(it) : std::next(it);
    }
  }
  for (auto& [user, run] : expired) {
    Execution e;
    {
      auto txn = store->BeginRead();
      if (!txn.ok()) continue;
      auto loaded = LoadExecution(*txn, run.id);
      if (!loaded.ok() || loaded->state != ExecState::kQueued) continue;
      e = *loaded;
    }
    e.state = ExecState::kFailed;
    e.detail = "queue_timeout";
    e.finished_ms = now;
    e.outcome = RunOutcome{};
    Log(LogLevel::kWarn, "executor: " + e.id + " waited too long in the queue");
    (void)Finish(e, true);
  }
}

void Executor::Rep::PurgeExpired() {
  int64_t cutoff = options.clock->NowMs() - options.retention_ms;
  if (cutoff <= 0) return;
  std::string bound = internal::PadNumber(static_cast<uint64_t>(cutoff));
  std::vector<std::string> keys;
  {
    auto txn = store->BeginRead();
    if (!txn.ok()) return;
    (void)txn->Scan(Table::kExpiry, "",
                    [&](std::string_view key, std::string_view) {
                      if (key.substr(0, bound.size()) > bound) return false;
                      keys.emplace_back(key);
                      return keys.size() < 1000;
                    });
  }
  std::vector<std::string> idem;
  int64_t idem_cutoff = options.clock->NowMs() - kIdempotencyKeepMs;
  {
    auto txn = store->BeginRead();
    if (!txn.ok()) return;
    (void)txn->Scan(Table::kIdempotency, "",
                    [&](std::string_view key, std::string_view value) {
                      internal::IdempotencyRecord rec;
                      if (internal::DecodeIdempotency(value, &rec).ok() &&
                          rec.created_ms < idem_cutoff) {
                        idem.emplace_back(key);
                      }
                      return idem.size() < 1000;
                    });
  }
  if (keys.empty() && idem.empty()) return;
  Status s = store->Update(
      [&](Txn& txn) -> Status {
        for (const auto& key : keys) {
          std::string id = key.substr(key.find('/') + 1);
          DEX_RETURN_IF_ERROR(txn.Delete(Table::kExecutions, id));
          DEX_RETURN_IF_ERROR(txn.Delete(Table::kExpiry, key));
        }
        for (const auto& key : idem) {
          DEX_RETURN_IF_ERROR(txn.Delete(Table::kIdempotency, key));
        }
        return Status::Ok();
      },
      Lazy());
  if (!s.ok()) Log(LogLevel::kWarn, "executor: purging: " + s.ToString());
}

void Executor::Rep::JanitorLoop() {
  std::unique_lock<std::mutex> lock(mu);
  while (!stopping) {
    janitor_cv.wait_for(lock,
                        std::chrono::milliseconds(options.janitor_interval_ms));
    if (stopping) break;
    lock.unlock();
    ExpireQueued();
    PurgeExpired();
    // Bounds what a machine crash can take of the lazy writes to about
    // one interval; a no-op when nothing was written since the last flush.
    Status synced = store->Sync();
    if (!synced.ok()) {
      Log(LogLevel::kError, "executor: flushing: " + synced.ToString());
    }
    lock.lock();
  }
}

// Runs left running by a previous process fail as interrupted and are
// refunded; queued runs go back to the queue in submission order.
Status Executor::Rep::Recover() {
  std::vector<Execution> queued_runs, interrupted;
  {
    auto txn = store->BeginRead();
    if (!txn.ok()) return txn.status();
    DEX_RETURN_IF_ERROR(txn->Scan(Table::kExecutions, "",
                                  [&](std::string_view, std::string_view v) {
                                    Execution e;
                                    if (!internal::DecodeExecution(v, &e).ok())
                                      return true;
                                    if (e.state == ExecState::kQueued)
                                      queued_runs.push_back(e);
                                    if (e.state == ExecState::kRunning)
                                      interrupted.push_back(e);
                                    return true;
                                  }));
  }
  int64_t now = options.clock->NowMs();
  for (Execution& e : interrupted) {
    e.state = ExecState::kFailed;
    e.detail = "interrupted";
    e.finished_ms = now;
    e.outcome = RunOutcome{};
    // A store too damaged or full to record this must not keep the
    // service from starting: the run stays "running" and the next start
    // tries again. Finish has logged the cause.
    (void)Finish(e, true);
  }
  std::sort(queued_runs.begin(), queued_runs.end(),
            [](const Execution& a, const Execution& b) {
              return a.created_ms < b.created_ms;
            });
  std::map<std::string, int64_t> caps;
  for (const Execution& e : queued_runs) {
    if (!caps.count(e.user_id)) {
      auto view = quota->Usage(e.user_id);
      caps[e.user_id] = view.ok() ? view->effective_plan.max.concurrent : 1;
    }
  }
  std::lock_guard<std::mutex> lock(mu);
  for (const Execution& e : queued_runs) {
    EnqueueLocked(e.user_id, QueuedRun{e.id, e.created_ms}, caps[e.user_id]);
  }
  if (!interrupted.empty() || !queued_runs.empty()) {
    Log(LogLevel::kInfo,
        "executor: recovered " + std::to_string(queued_runs.size()) +
            " queued runs; " + std::to_string(interrupted.size()) +
            " interrupted runs failed and refunded");
  }
  return Status::Ok();
}

Executor::Executor(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}

Executor::~Executor() {
  // Running work ends at its own wall limit; the joins wait for it.
  Shutdown(0);
  for (auto& t : rep_->workers) {
    if (t.joinable()) t.join();
  }
  if (rep_->janitor.joinable()) rep_->janitor.join();
}

Result<std::unique_ptr<Executor>> Executor::Open(
    Store* store, Quota* quota, Sandbox* sandbox,
    const ExecutorOptions& options) {
  auto rep = std::make_unique<Rep>();
  rep->store = store;
  rep->quota = quota;
  rep->sandbox = sandbox;
  rep->options = options;
  if (rep->options.workers <= 0) {
    rep->options.workers =
        std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  }
  DEX_RETURN_IF_ERROR(rep->Recover());
  std::unique_ptr<Executor> executor(new Executor(std::move(rep)));
  Rep* r = executor->rep_.get();
  for (int i = 0; i < r->options.workers; ++i) {
    r->workers.emplace_back([r] { r->WorkerLoop(); });
  }
  r->janitor = std::thread([r] { r->JanitorLoop(); });
  r->Log(LogLevel::kInfo, "executor: started " +
                              std::to_string(r->options.workers) + " workers");
  return executor;
}

Result<SubmitResult> Executor::Submit(const SubmitRequest& request) {
  Rep* r = rep_.get();
  {
    std::lock_guard<std::mutex> lock(r->mu);
    if (r->stopping) {
      return Status(Category::kUnavailable, "shutting_down",
                    "submitting a run: the server is shutting down");
    }
    if (r->queued + r->reserved >= r->options.max_queued) {
      return Status(Category::kUnavailable, "queue_full",
                    "submitting a run: the queue is full (" +
                        std::to_string(r->options.max_queued) + " runs)");
    }
    ++r->reserved;
  }
  SubmitResult result;
  int64_t now = r->options.clock->NowMs();
  std::string idem_key = request.user_id + "/" + request.idempotency_key;
  // New work leaves the store's reserve to finishing work. The flush
  // comes after the run is queued, so a worker may start it meanwhile.
  WriteOptions write;
  write.sync = false;
  write.keep_reserve = true;
  auto record = [&](Txn& txn) -> Status {
    result = SubmitResult{};
    if (!request.idempotency_key.empty()) {
      std::string bytes;
      Status found = txn.Get(Table::kIdempotency, idem_key, &bytes);
      internal::IdempotencyRecord rec;
      if (found.ok() && internal::DecodeIdempotency(bytes, &rec).ok() &&
          now - rec.created_ms < kIdempotencyKeepMs) {
        if (rec.fingerprint != request.fingerprint) {
          return Status(Category::kFailedPrecondition, "idempotency_key_reused",
                        "submitting a run: the Idempotency-Key was used for "
                        "a different request");
        }
        auto first = LoadExecution(txn, rec.execution_id);
        if (!first.ok()) return first.status();
        result.execution = *first;
        result.replayed = true;
        return Status::Ok();
      }
    }
    Execution& e = result.execution;
    e.id = RandomId("exec_");
    e.user_id = request.user_id;
    e.language = request.language;
    e.state = ExecState::kQueued;
    e.limits = request.run.limits;
    e.created_ms = now;
    DEX_RETURN_IF_ERROR(r->quota->Admit(txn, request.user_id, &e.period));
    DEX_RETURN_IF_ERROR(
        txn.Put(Table::kExecutions, e.id, internal::EncodeExecution(e)));
    internal::ScriptRecord script{request.run.script,
                                  request.run.stdin_data.has_value(),
                                  request.run.stdin_data.value_or("")};
    DEX_RETURN_IF_ERROR(
        txn.Put(Table::kScripts, e.id, internal::EncodeScript(script)));
    if (!request.idempotency_key.empty()) {
      internal::IdempotencyRecord rec{e.id, request.fingerprint, now};
      DEX_RETURN_IF_ERROR(txn.Put(Table::kIdempotency, idem_key,
                                  internal::EncodeIdempotency(rec)));
    }
    return Status::Ok();
  };
  Status s = r->store->Update(record, write);
  {
    std::lock_guard<std::mutex> lock(r->mu);
    --r->reserved;
    if (s.code() == "store_full") {
      return Status(Category::kUnavailable, "store_full",
                    "submitting a run: the store is full; reads still work");
    }
    if (!s.ok()) return s;
    if (!result.replayed) {
      r->EnqueueLocked(
          request.user_id,
          QueuedRun{result.execution.id, result.execution.created_ms},
          request.max_concurrent);
      r->work_cv.notify_one();
    }
  }
  // Nothing is acknowledged before it is on disk (a replay included: its
  // first answer may still be waiting for the same flush). Concurrent
  // submissions share one flush.
  if (r->store->durable()) {
    Status synced = r->store->Sync();
    if (!synced.ok()) {
      // The run is stored and will run; only its durability is in doubt.
      // A retry with the same Idempotency-Key finds it.
      r->Log(LogLevel::kError, "executor: flushing " + result.execution.id +
                                   ": " + synced.ToString());
      return Status(
          Category::kInternal, "internal_error",
          "submitting a run: flushing it to disk: " + synced.message());
    }
  }
  return result;
}

Result<Execution> Executor::Get(const std::string& user_id,
                                const std::string& id) {
  auto txn = rep_->store->BeginRead();
  if (!txn.ok()) return txn.status();
  auto e = LoadExecution(*txn, id);
  if (!e.ok()) return e.status();
  // Another user's execution answers exactly as an unknown one.
  if (e->user_id != user_id) return NotFound(id);
  return e;
}

Result<Execution> Executor::Wait(const std::string& user_id,
                                 const std::string& id, int64_t timeout_ms) {
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  Rep& r = *rep_;
  std::shared_ptr<Rep::Waiters> waiters;
  {
    std::lock_guard<std::mutex> lock(r.mu);
    std::shared_ptr<Rep::Waiters>& slot = r.waiters[id];
    if (slot == nullptr) slot = std::make_shared<Rep::Waiters>();
    ++slot->count;
    waiters = slot;
  }
  auto leave = [&] {
    std::lock_guard<std::mutex> lock(r.mu);
    if (--waiters->count == 0) r.waiters.erase(id);
  };
  for (;;) {
    // The count of ends is taken before the run is read: an end recorded
    // after the read changes it, so none is missed between the two.
    uint64_t ends;
    {
      std::lock_guard<std::mutex> lock(r.mu);
      ends = waiters->ends;
    }
    auto e = Get(user_id, id);
    if (!e.ok() || Terminal(e->state)) {
      leave();
      return e;
    }
    std::unique_lock<std::mutex> lock(r.mu);
    if (!waiters->cv.wait_until(lock, deadline,
                                [&] { return waiters->ends != ends; })) {
      lock.unlock();
      leave();
      return Get(user_id, id);
    }
  }
}

ExecutorStats Executor::Stats() {
  std::lock_guard<std::mutex> lock(rep_->mu);
  return ExecutorStats{rep_->queued, rep_->running, rep_->options.workers};
}

void Executor::Shutdown(int64_t grace_ms) {
  std::unique_lock<std::mutex> lock(rep_->mu);
  if (!rep_->stopping) {
    rep_->stopping = true;
    rep_->Log(LogLevel::kInfo, "executor: shutting down; " +
                                   std::to_string(rep_->running) +
                                   " running, " + std::to_string(rep_->queued) +
                                   " queued left for the next start");
  }
  rep_->work_cv.notify_all();
  rep_->janitor_cv.notify_all();
  rep_->idle_cv.wait_for(lock, std::chrono::milliseconds(grace_ms),
                         [&] { return rep_->running == 0; });
}

}  // namespace dex
