// Service tests: the quota and key rules of DESIGN §3-§4 through the
// facade, with the clock injected so months and grace periods pass at
// once. Runs go through the real executor and sandbox.
#include "dex/service.h"

#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "tests/test_util.h"

namespace {

using dex::test::UtcMs;

constexpr int64_t kDayMs = 24ll * 3600 * 1000;

struct ServiceFixture {
  dex::test::TempDir dir;
  dex::test::FakeClock clock{UtcMs(2026, 12, 4, 12)};
  std::unique_ptr<dex::Service> service;

  ServiceFixture() {
    dex::ServiceOptions options;
    options.data_dir = dir.path();
    options.clock = &clock;
    options.run_executions = true;
    auto opened = dex::Service::Open(options);
    REQUIRE_MESSAGE(opened.ok(), opened.status().ToString());
    service = std::move(*opened);
  }

  std::string UserOn(const std::string& plan) {
    auto created = service->CreateUser(plan);
    REQUIRE_MESSAGE(created.ok(), created.status().ToString());
    return created->user.id;
  }

  void SetPlan(const std::string& name, int64_t quota) {
    auto base = service->GetPlan("starter");
    REQUIRE(base.ok());
    base->name = name;
    base->quota_monthly = quota;
    REQUIRE(service->SetPlan(*base).ok());
  }

  void SetStatus(const std::string& user_id, dex::SubscriptionStatus status) {
    REQUIRE(service->UpdateUser(user_id, std::nullopt, status).ok());
  }

  dex::Result<dex::SubmitResult> Submit(const std::string& user_id,
                                        dex::RunSpec spec = {}) {
    if (spec.script.empty()) spec.script = "print(1)";
    return service->Submit(user_id, spec);
  }

  // Submits and waits for the end, so no run is still queued when the
  // test moves the clock (a queued run would then look expired).
  void RunToEnd(const std::string& user_id, dex::RunSpec spec = {}) {
    auto submitted = Submit(user_id, spec);
    REQUIRE_MESSAGE(submitted.ok(), submitted.status().ToString());
    auto done = service->WaitExecution(user_id, submitted->execution.id,
                                       60'000);  // liveness bound
    REQUIRE(done.ok());
    REQUIRE(done->state == dex::ExecState::kCompleted);
  }

  int64_t Used(const std::string& user_id) {
    auto me = service->Me(user_id);
    REQUIRE(me.ok());
    return me->used;
  }

  std::string EffectivePlan(const std::string& user_id) {
    auto me = service->Me(user_id);
    REQUIRE(me.ok());
    return me->effective_plan.name;
  }
};

dex::RunSpec WithWall(int64_t wall_ms) {
  dex::RunSpec spec;
  spec.script = "print(1)";
  spec.limits.wall_ms = wall_ms;
  return spec;
}

}  // namespace

// ---- Quota: the month ---------------------------------------------------

TEST_CASE_FIXTURE(ServiceFixture, "the month rolls over through the clock") {
  SetPlan("two", 2);
  std::string user = UserOn("two");
  clock.Set(UtcMs(2026, 12, 31, 23, 59, 59));
  RunToEnd(user);
  RunToEnd(user);
  auto over = Submit(user);
  CHECK(over.status().code() == "quota_exceeded");
  CHECK(over.status().category() == dex::Category::kResourceExhausted);
  auto december = service->Me(user);
  REQUIRE(december.ok());
  CHECK(december->used == 2);
  CHECK(december->remaining == 0);
  CHECK(december->period_end_ms == UtcMs(2027, 1, 1));

  clock.Set(UtcMs(2027, 1, 1));
  auto january = service->Me(user);
  REQUIRE(january.ok());
  CHECK(january->used == 0);
  CHECK(january->remaining == 2);
  CHECK(january->period_start_ms == UtcMs(2027, 1, 1));
  CHECK(january->period_end_ms == UtcMs(2027, 2, 1));
  RunToEnd(user);
  CHECK(Used(user) == 1);
}

TEST_CASE_FIXTURE(ServiceFixture, "a rejected run costs nothing") {
  SetPlan("one", 1);
  std::string user = UserOn("one");
  CHECK(Submit(user, WithWall(0)).status().code() == "invalid_request");
  dex::RunSpec ruby;
  ruby.script = "puts 1";
  ruby.language = "ruby";
  CHECK(Submit(user, ruby).status().code() == "invalid_request");
  CHECK(Used(user) == 0);
}

TEST_CASE_FIXTURE(ServiceFixture, "limits are checked before the quota") {
  SetPlan("one", 1);
  std::string user = UserOn("one");
  RunToEnd(user);
  auto bad = Submit(user, WithWall(-5));
  CHECK(bad.status().code() == "invalid_request");
  CHECK(bad.status().message().find("limits.wall_ms") != std::string::npos);
  CHECK(Submit(user).status().code() == "quota_exceeded");
  CHECK(Used(user) == 1);
}

// ---- Quota: subscription state ------------------------------------------

TEST_CASE_FIXTURE(ServiceFixture,
                  "a canceled subscription falls back to the free plan") {
  std::string user = UserOn("pro");
  RunToEnd(user, WithWall(60'000));  // within pro's 120 s
  SetStatus(user, dex::SubscriptionStatus::kCanceled);
  auto me = service->Me(user);
  REQUIRE(me.ok());
  CHECK(me->user.plan == "pro");
  CHECK(me->effective_plan.name == "free");
  CHECK(me->effective_plan.quota_monthly == 100);
  CHECK(me->remaining == 99);
  // Free's maxima now apply to the run's limits, too.
  auto refused = Submit(user, WithWall(60'000));
  CHECK(refused.status().code() == "invalid_request");
  CHECK(refused.status().message().find("plan free") != std::string::npos);
  auto submitted = Submit(user);
  REQUIRE(submitted.ok());
  CHECK(submitted->execution.limits.wall_ms == 5'000);
  CHECK(submitted->execution.limits.memory_mb == 128);
}

TEST_CASE_FIXTURE(ServiceFixture,
                  "past_due keeps the plan for 7 days from the change") {
  std::string user = UserOn("pro");
  clock.Advance(30 * kDayMs);  // the grace runs from the change, not signup
  SetStatus(user, dex::SubscriptionStatus::kPastDue);
  clock.Advance(7 * kDayMs - 1);
  CHECK(EffectivePlan(user) == "pro");
  clock.Advance(1);
  CHECK(EffectivePlan(user) == "free");
  // Saying past_due again is no change and restarts nothing.
  SetStatus(user, dex::SubscriptionStatus::kPastDue);
  CHECK(EffectivePlan(user) == "free");
  SetStatus(user, dex::SubscriptionStatus::kActive);
  CHECK(EffectivePlan(user) == "pro");
}

TEST_CASE_FIXTURE(ServiceFixture, "trialing keeps the plan") {
  std::string user = UserOn("pro");
  SetStatus(user, dex::SubscriptionStatus::kTrialing);
  clock.Advance(60 * kDayMs);
  CHECK(EffectivePlan(user) == "pro");
}

TEST_CASE_FIXTURE(ServiceFixture,
                  "nothing allowed at all answers subscription_inactive") {
  std::string user = UserOn("starter");
  REQUIRE(service->SetPlan(dex::Plan{"free", 0, dex::PlanMaxima{}}).ok());
  SetStatus(user, dex::SubscriptionStatus::kCanceled);
  auto refused = Submit(user);
  CHECK(refused.status().code() == "subscription_inactive");
  CHECK(refused.status().category() == dex::Category::kFailedPrecondition);
  CHECK(Used(user) == 0);
}

// ---- Limits -------------------------------------------------------------

TEST_CASE_FIXTURE(ServiceFixture, "a run naming no limits gets the defaults") {
  auto starter = service->GetPlan("starter");
  REQUIRE(starter.ok());
  auto limits = service->ResolveLimits(*starter, dex::LimitsRequest{});
  REQUIRE(limits.ok());
  CHECK(limits->wall_ms == 10'000);
  CHECK(limits->cpu_ms == 10'000);
  CHECK(limits->memory_mb == 256);
  CHECK(limits->output_bytes == 1 << 20);
  CHECK(limits->processes == 64);

  auto free_plan = service->GetPlan("free");
  REQUIRE(free_plan.ok());
  limits = service->ResolveLimits(*free_plan, dex::LimitsRequest{});
  REQUIRE(limits.ok());
  CHECK(limits->wall_ms == 5'000);  // the plan's maximum is lower
  CHECK(limits->cpu_ms == 5'000);
}

TEST_CASE_FIXTURE(ServiceFixture, "CPU defaults to the run's own wall limit") {
  auto starter = service->GetPlan("starter");
  REQUIRE(starter.ok());
  dex::LimitsRequest request;
  request.wall_ms = 2'000;
  auto limits = service->ResolveLimits(*starter, request);
  REQUIRE(limits.ok());
  CHECK(limits->cpu_ms == 2'000);
}

// ---- Keys ---------------------------------------------------------------

TEST_CASE_FIXTURE(ServiceFixture, "last_used_at is written once a minute") {
  auto created = service->CreateUser("starter");
  REQUIRE(created.ok());
  const std::string& raw = created->key.raw_key;
  auto last_used = [&] {
    auto keys = service->ListKeys(created->user.id);
    REQUIRE(keys.ok());
    REQUIRE(keys->size() == 1);
    return (*keys)[0].last_used_ms;
  };
  CHECK(!last_used().has_value());
  int64_t t0 = clock.NowMs();
  REQUIRE(service->Authenticate(raw).ok());
  CHECK(last_used() == t0);
  clock.Advance(59'999);
  REQUIRE(service->Authenticate(raw).ok());
  CHECK(last_used() == t0);
  clock.Advance(1);
  REQUIRE(service->Authenticate(raw).ok());
  CHECK(last_used() == t0 + 60'000);
}

TEST_CASE_FIXTURE(ServiceFixture, "a broken checksum never reaches the store") {
  auto created = service->CreateUser("starter");
  REQUIRE(created.ok());
  std::string typo = created->key.raw_key;
  typo[12] = typo[12] == 'x' ? 'y' : 'x';
  auto refused = service->Authenticate(typo);
  CHECK(refused.status().code() == "invalid_token");
  CHECK(refused.status().message().find("checksum") != std::string::npos);
}

// ---- Idempotency --------------------------------------------------------

TEST_CASE_FIXTURE(ServiceFixture, "an Idempotency-Key is kept 24 hours") {
  std::string user = UserOn("starter");
  dex::RunSpec spec;
  spec.script = "print(1)";
  spec.idempotency_key = "daily";
  spec.fingerprint = "f1";
  auto first = Submit(user, spec);
  REQUIRE(first.ok());
  REQUIRE(service->WaitExecution(user, first->execution.id, 60'000)->state ==
          dex::ExecState::kCompleted);
  clock.Advance(kDayMs - 1);
  auto replay = Submit(user, spec);
  REQUIRE(replay.ok());
  CHECK(replay->replayed);
  CHECK(replay->execution.id == first->execution.id);
  CHECK(Used(user) == 1);
  clock.Advance(1);
  auto fresh = Submit(user, spec);
  REQUIRE(fresh.ok());
  CHECK_FALSE(fresh->replayed);
  CHECK(fresh->execution.id != first->execution.id);
  CHECK(Used(user) == 2);
}
