#include "dex/quota.h"

#include <doctest/doctest.h>

#include <ctime>

#include "dex/store.h"
#include "tests/store_fixture.h"
#include "tests/test_util.h"

namespace {

struct QuotaFixture : dex::test::StoreFixture {
  std::unique_ptr<dex::Quota> quota = OpenQuota();

  dex::Status Admit(const std::string& user_id, std::string* period) {
    return store->Update(
        [&](dex::Txn& txn) { return quota->Admit(txn, user_id, period); });
  }

  std::string UserOn(const std::string& plan_name, int64_t runs) {
    dex::Plan plan{plan_name, runs, dex::PlanMaxima{}};
    REQUIRE(quota->SetPlan(plan).ok());
    auto user = quota->CreateUser(plan_name);
    REQUIRE(user.ok());
    return user->id;
  }
};

}  // namespace

TEST_CASE_FIXTURE(QuotaFixture, "the default plans exist from the first open") {
  auto starter = quota->GetPlan("starter");
  REQUIRE(starter.ok());
  CHECK(starter->quota_monthly == 3000);
  CHECK(starter->max.wall_ms == 30'000);
  CHECK(starter->max.memory_mb == 256);
  CHECK(quota->GetPlan("free")->quota_monthly == 100);
  CHECK(quota->GetPlan("pro")->max.concurrent == 16);
}

TEST_CASE_FIXTURE(QuotaFixture, "admission stops exactly at the limit") {
  std::string user = UserOn("tiny", 3);
  std::string period;
  for (int i = 0; i < 3; ++i) CHECK(Admit(user, &period).ok());
  dex::Status over = Admit(user, &period);
  CHECK(over.code() == "quota_exceeded");
  CHECK(quota->Usage(user)->used == 3);
  CHECK(quota->Usage(user)->remaining == 0);
}

TEST_CASE_FIXTURE(QuotaFixture, "a new month starts with no usage") {
  std::string user = UserOn("tiny", 1);
  std::string period;
  CHECK(Admit(user, &period).ok());
  CHECK(period == "2026-12");
  CHECK(Admit(user, &period).code() == "quota_exceeded");
  clock.Set(dex::test::UtcMs(2027, 1, 1, 0, 0, 0));
  CHECK(quota->Usage(user)->used == 0);
  CHECK(Admit(user, &period).ok());
  CHECK(period == "2027-01");
}

TEST_CASE_FIXTURE(QuotaFixture, "period bounds are the UTC calendar month") {
  auto view = quota->Usage(UserOn("tiny", 1));
  REQUIRE(view.ok());
  CHECK(view->period_start_ms == dex::test::UtcMs(2026, 12, 1));
  CHECK(view->period_end_ms == dex::test::UtcMs(2027, 1, 1));
}

// PeriodOf and PeriodBounds do their own calendar arithmetic; the C
// library's agrees, across leap years and centuries.
TEST_CASE("periods agree with gmtime_r and timegm from 1970 to 2400") {
  int mismatches = 0;
  for (int64_t s = 0; s < 13'569'465'600; s += 86'399 * 5 + 7) {
    time_t t = static_cast<time_t>(s);
    struct tm tm;
    gmtime_r(&t, &tm);
    char period[16];
    strftime(period, sizeof period, "%Y-%m", &tm);
    struct tm start = {};
    start.tm_year = tm.tm_year;
    start.tm_mon = tm.tm_mon;
    start.tm_mday = 1;
    struct tm end = start;
    end.tm_mon += 1;
    int64_t want_start = static_cast<int64_t>(timegm(&start)) * 1000;
    int64_t want_end = static_cast<int64_t>(timegm(&end)) * 1000;
    int64_t start_ms = 0, end_ms = 0;
    dex::PeriodBounds(s * 1000 + 999, &start_ms, &end_ms);
    bool same = dex::PeriodOf(s * 1000 + 999) == period &&
                start_ms == want_start && end_ms == want_end;
    if (!same && ++mismatches < 5) {
      CHECK(dex::PeriodOf(s * 1000 + 999) == period);
      CHECK(start_ms == want_start);
      CHECK(end_ms == want_end);
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE_FIXTURE(QuotaFixture, "a refund gives back one unit") {
  std::string user = UserOn("tiny", 1);
  std::string period;
  CHECK(Admit(user, &period).ok());
  CHECK(store
            ->Update(
                [&](dex::Txn& txn) { return quota->Refund(txn, user, period); })
            .ok());
  CHECK(quota->Usage(user)->used == 0);
  CHECK(Admit(user, &period).ok());
}

TEST_CASE_FIXTURE(QuotaFixture, "a canceled subscription falls back to free") {
  auto user = quota->CreateUser("pro");
  REQUIRE(user.ok());
  CHECK(quota
            ->UpdateUser(user->id, std::nullopt,
                         dex::SubscriptionStatus::kCanceled)
            .ok());
  auto view = quota->Usage(user->id);
  CHECK(view->effective_plan.name == "free");
  CHECK(view->user.plan == "pro");
}

TEST_CASE_FIXTURE(QuotaFixture,
                  "past_due keeps the plan for the grace period") {
  auto user = quota->CreateUser("pro");
  REQUIRE(user.ok());
  CHECK(quota
            ->UpdateUser(user->id, std::nullopt,
                         dex::SubscriptionStatus::kPastDue)
            .ok());
  clock.Advance(6ll * 24 * 3600 * 1000);
  CHECK(quota->Usage(user->id)->effective_plan.name == "pro");
  clock.Advance(1ll * 24 * 3600 * 1000);
  CHECK(quota->Usage(user->id)->effective_plan.name == "free");
}

TEST_CASE_FIXTURE(QuotaFixture,
                  "a plan that allows nothing answers subscription_inactive") {
  std::string user = UserOn("none", 0);
  std::string period;
  CHECK(Admit(user, &period).code() == "subscription_inactive");
  CHECK(quota->Usage(user)->used == 0);
}

TEST_CASE_FIXTURE(QuotaFixture, "invalid plans are refused") {
  dex::Plan bad{"bad", -1, dex::PlanMaxima{}};
  CHECK(quota->SetPlan(bad).status().code() == "invalid_request");
  bad.quota_monthly = 1;
  bad.max.memory_mb = 0;
  CHECK(quota->SetPlan(bad).status().code() == "invalid_request");
  CHECK(quota->CreateUser("nosuch").status().code() == "invalid_request");
}
