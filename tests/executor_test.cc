// Executor tests run the real store and quota; the sandbox is replaced by a
// fake, since these tests are about queueing, records and recovery.
#include "dex/executor.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "dex/quota.h"
#include "dex/store.h"
#include "libdex/records.h"
#include "tests/store_fixture.h"
#include "tests/test_util.h"

namespace {

// Echoes the script as stdout. While closed, runs wait at the gate.
class FakeSandbox : public dex::Sandbox {
 public:
  dex::Result<dex::RunOutcome> Run(const dex::RunRequest& request) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++started_;
      order_.push_back(request.script);
      cv_.wait(lock, [&] { return open_; });
    }
    if (delay_ms_ > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
    }
    if (request.script == "fail") {
      return dex::Status(dex::Category::kUnavailable, "unavailable",
                         "sandbox: spawner gone");
    }
    dex::RunOutcome outcome;
    outcome.reason = dex::Reason::kOk;
    outcome.stdout_data = request.script;
    return outcome;
  }
  dex::MemoryMode memory_mode() const override {
    return dex::MemoryMode::kSampled;
  }
  void SetOpen(bool open) {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = open;
    cv_.notify_all();
  }
  int started() {
    std::lock_guard<std::mutex> lock(mu_);
    return started_;
  }
  std::vector<std::string> order() {
    std::lock_guard<std::mutex> lock(mu_);
    return order_;
  }
  int delay_ms_ = 0;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  int started_ = 0;
  std::vector<std::string> order_;
};

struct ExecutorFixture : dex::test::StoreFixture {
  std::unique_ptr<dex::Quota> quota = OpenQuota();
  FakeSandbox sandbox;
  dex::ExecutorOptions options;
  std::unique_ptr<dex::Executor> executor;

  ExecutorFixture() {
    options.clock = &clock;
    options.workers = 2;
    options.janitor_interval_ms = 10;
  }

  void Start() {
    auto opened =
        dex::Executor::Open(store.get(), quota.get(), &sandbox, options);
    REQUIRE_MESSAGE(opened.ok(), opened.status().ToString());
    executor = std::move(*opened);
  }

  std::string User(int64_t runs = 1000, int64_t concurrent = 16) {
    dex::Plan plan{"test", runs, dex::PlanMaxima{}};
    plan.max.concurrent = concurrent;
    REQUIRE(quota->SetPlan(plan).ok());
    return quota->CreateUser("test")->id;
  }

  dex::Result<dex::SubmitResult> Submit(const std::string& user,
                                        const std::string& script,
                                        const std::string& idem = "",
                                        const std::string& fp = "") {
    dex::SubmitRequest request;
    request.user_id = user;
    request.run.script = script;
    request.idempotency_key = idem;
    request.fingerprint = fp;
    request.max_concurrent = 16;
    return executor->Submit(request);
  }

  dex::Execution WaitDone(const std::string& user, const std::string& id) {
    auto e = executor->Wait(user, id, 30'000);
    REQUIRE(e.ok());
    return *e;
  }

  int64_t Used(const std::string& user) { return quota->Usage(user)->used; }
};

}  // namespace

TEST_CASE_FIXTURE(ExecutorFixture, "a submitted run completes and is charged") {
  Start();
  std::string user = User();
  auto submitted = Submit(user, "print(1)");
  REQUIRE(submitted.ok());
  CHECK(submitted->execution.id.rfind("exec_", 0) == 0);
  CHECK(submitted->execution.state == dex::ExecState::kQueued);
  auto done = WaitDone(user, submitted->execution.id);
  CHECK(done.state == dex::ExecState::kCompleted);
  CHECK(done.outcome.stdout_data == "print(1)");
  CHECK(Used(user) == 1);
}

// Each run's end wakes its own waiters. A waiter whose wake-up was lost
// (the end recorded between its read and its wait) would sit until its
// 30 s deadline: all must be back well before.
TEST_CASE_FIXTURE(ExecutorFixture,
                  "every waiter returns when its own run ends, many at once") {
  Start();
  std::string user = User();
  sandbox.SetOpen(false);
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    auto submitted = Submit(user, "run " + std::to_string(i));
    REQUIRE(submitted.ok());
    ids.push_back(submitted->execution.id);
  }
  auto start = std::chrono::steady_clock::now();
  std::atomic<int> completed{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 80; ++i) {  // two waiters per run
    waiters.emplace_back([&, i] {
      auto e = executor->Wait(user, ids[i / 2], 30'000);
      if (e.ok() && e->state == dex::ExecState::kCompleted &&
          e->outcome.stdout_data == "run " + std::to_string(i / 2)) {
        ++completed;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  sandbox.SetOpen(true);
  for (auto& t : waiters) t.join();
  CHECK(completed == 80);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE_FIXTURE(ExecutorFixture, "a sandbox failure fails and refunds") {
  Start();
  std::string user = User();
  auto submitted = Submit(user, "fail");
  REQUIRE(submitted.ok());
  auto done = WaitDone(user, submitted->execution.id);
  CHECK(done.state == dex::ExecState::kFailed);
  CHECK(done.outcome.reason == dex::Reason::kSandboxError);
  CHECK(done.detail == "sandbox: spawner gone");
  CHECK(Used(user) == 0);
}

TEST_CASE_FIXTURE(ExecutorFixture, "another user's run is not found") {
  Start();
  std::string a = User(), b = User();
  auto submitted = Submit(a, "x");
  REQUIRE(submitted.ok());
  CHECK(executor->Get(b, submitted->execution.id).status().code() ==
        "not_found");
}

TEST_CASE_FIXTURE(ExecutorFixture, "one user's burst does not starve another") {
  sandbox.delay_ms_ = 5;
  // Closed while submitting, so how fast submissions are (each waits for
  // a flush) does not decide how many of A's runs end first.
  sandbox.SetOpen(false);
  Start();
  std::string a = User(), b = User();
  std::vector<std::string> a_ids;
  for (int i = 0; i < 100; ++i) {
    a_ids.push_back(Submit(a, "a")->execution.id);
  }
  auto b_run = Submit(b, "b");
  REQUIRE(b_run.ok());
  sandbox.SetOpen(true);
  auto done = WaitDone(b, b_run->execution.id);
  CHECK(done.state == dex::ExecState::kCompleted);
  int a_queued = 0;
  for (const auto& id : a_ids) {
    if (executor->Get(a, id)->state == dex::ExecState::kQueued) ++a_queued;
  }
  CHECK(a_queued > 50);
}

TEST_CASE_FIXTURE(ExecutorFixture, "a user's runs at once are capped") {
  sandbox.SetOpen(false);
  options.workers = 4;
  Start();
  std::string user = User(1000, 1);
  dex::SubmitRequest request;
  request.user_id = user;
  request.run.script = "x";
  request.max_concurrent = 1;
  for (int i = 0; i < 3; ++i) REQUIRE(executor->Submit(request).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(sandbox.started() == 1);
  sandbox.SetOpen(true);
}

TEST_CASE_FIXTURE(ExecutorFixture, "a full queue answers queue_full") {
  sandbox.SetOpen(false);
  options.workers = 1;
  options.max_queued = 3;
  Start();
  std::string user = User();
  REQUIRE(Submit(user, "x").ok());
  // Wait until the first run is in the sandbox, so 3 more fill the queue.
  while (sandbox.started() < 1) std::this_thread::yield();
  for (int i = 0; i < 3; ++i) REQUIRE(Submit(user, "x").ok());
  auto over = Submit(user, "x");
  CHECK(over.status().code() == "queue_full");
  CHECK(over.status().category() == dex::Category::kUnavailable);
  CHECK(Used(user) == 4);
  sandbox.SetOpen(true);
}

TEST_CASE_FIXTURE(ExecutorFixture,
                  "a run queued past the deadline fails and is refunded") {
  sandbox.SetOpen(false);
  options.workers = 1;
  options.queue_timeout_ms = 60'000;
  Start();
  std::string user = User();
  REQUIRE(Submit(user, "x").ok());
  while (sandbox.started() < 1) std::this_thread::yield();
  auto waiting = Submit(user, "y");
  REQUIRE(waiting.ok());
  clock.Advance(61'000);
  auto done = WaitDone(user, waiting->execution.id);
  CHECK(done.state == dex::ExecState::kFailed);
  CHECK(done.detail == "queue_timeout");
  CHECK(Used(user) == 1);
  sandbox.SetOpen(true);
}

TEST_CASE_FIXTURE(ExecutorFixture, "finished runs are purged after retention") {
  options.retention_ms = 3'600'000;
  Start();
  std::string user = User();
  auto submitted = Submit(user, "x");
  WaitDone(user, submitted->execution.id);
  clock.Advance(3'600'001 + 1000);
  bool purged = false;
  for (int i = 0; i < 500 && !purged; ++i) {
    purged = executor->Get(user, submitted->execution.id).status().code() ==
             "not_found";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(purged);
}

TEST_CASE_FIXTURE(ExecutorFixture, "an idempotent replay charges nothing") {
  Start();
  std::string user = User();
  auto first = Submit(user, "x", "k1", "fp1");
  auto again = Submit(user, "x", "k1", "fp1");
  REQUIRE(first.ok());
  REQUIRE(again.ok());
  CHECK(again->replayed);
  CHECK(again->execution.id == first->execution.id);
  CHECK(Used(user) == 1);
  CHECK(Submit(user, "y", "k1", "fp2").status().code() ==
        "idempotency_key_reused");
  CHECK(Used(user) == 1);
}

TEST_CASE_FIXTURE(ExecutorFixture,
                  "concurrent submissions never overshoot the quota") {
  sandbox.SetOpen(false);
  Start();
  std::string user = User(10);
  std::atomic<int> admitted{0}, refused{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 64; ++i) {
    threads.emplace_back([&] {
      auto r = Submit(user, "x");
      if (r.ok()) ++admitted;
      if (r.status().code() == "quota_exceeded") ++refused;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(admitted == 10);
  CHECK(refused == 54);
  CHECK(Used(user) == 10);
  sandbox.SetOpen(true);
}

TEST_CASE_FIXTURE(ExecutorFixture,
                  "restart: running runs fail as interrupted, queued resume") {
  std::string user = User();
  std::string period = dex::PeriodOf(clock.NowMs());
  // A previous process charged two runs: one was running when it died,
  // one was still queued.
  REQUIRE(store
              ->Update([&](dex::Txn& txn) -> dex::Status {
                std::string p;
                DEX_RETURN_IF_ERROR(quota->Admit(txn, user, &p));
                DEX_RETURN_IF_ERROR(quota->Admit(txn, user, &p));
                dex::Execution running;
                running.id = "exec_running";
                running.user_id = user;
                running.state = dex::ExecState::kRunning;
                running.period = period;
                running.created_ms = clock.NowMs();
                dex::Execution queued = running;
                queued.id = "exec_queued";
                queued.state = dex::ExecState::kQueued;
                DEX_RETURN_IF_ERROR(
                    txn.Put(dex::Table::kExecutions, running.id,
                            dex::internal::EncodeExecution(running)));
                DEX_RETURN_IF_ERROR(
                    txn.Put(dex::Table::kExecutions, queued.id,
                            dex::internal::EncodeExecution(queued)));
                dex::internal::ScriptRecord script{"resumed", false, ""};
                return txn.Put(dex::Table::kScripts, queued.id,
                               dex::internal::EncodeScript(script));
              })
              .ok());
  Start();
  auto interrupted = executor->Get(user, "exec_running");
  REQUIRE(interrupted.ok());
  CHECK(interrupted->state == dex::ExecState::kFailed);
  CHECK(interrupted->detail == "interrupted");
  auto resumed = WaitDone(user, "exec_queued");
  CHECK(resumed.state == dex::ExecState::kCompleted);
  CHECK(resumed.outcome.stdout_data == "resumed");
  CHECK(Used(user) == 1);
}

TEST_CASE_FIXTURE(ExecutorFixture, "shutdown refuses new work") {
  Start();
  std::string user = User();
  executor->Shutdown(1000);
  CHECK(Submit(user, "x").status().code() == "shutting_down");
  CHECK(Used(user) == 0);
}

TEST_CASE_FIXTURE(ExecutorFixture,
                  "concurrent submitters under per-user caps lose no run") {
  options.workers = 3;
  Start();
  std::vector<std::string> users;
  for (int i = 0; i < 4; ++i) users.push_back(User(100000, 1 + i % 2));
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> runs;  // user, id
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 40; ++i) {
        dex::SubmitRequest request;
        request.user_id = users[(t + i) % users.size()];
        request.run.script = std::to_string(t) + "/" + std::to_string(i);
        request.max_concurrent = 1 + (t + i) % users.size() % 2;
        auto submitted = executor->Submit(request);
        if (!submitted.ok()) continue;
        std::lock_guard<std::mutex> lock(mu);
        runs.emplace_back(request.user_id, submitted->execution.id);
      }
    });
  }
  for (auto& c : clients) c.join();
  REQUIRE(runs.size() == 8 * 40);
  for (const auto& [user, id] : runs) {
    CHECK(WaitDone(user, id).state == dex::ExecState::kCompleted);
  }
  auto stats = executor->Stats();
  CHECK(stats.queued == 0);
  int64_t used = 0;
  for (const auto& user : users) used += Used(user);
  CHECK(used == 8 * 40);
}
