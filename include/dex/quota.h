// Quota: plans, users' subscription state, usage per calendar month,
// admission and refunds. Knows nothing of keys' secrets.
#ifndef DEX_QUOTA_H_
#define DEX_QUOTA_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dex/env.h"
#include "dex/export.h"
#include "dex/status.h"
#include "dex/store.h"

namespace dex {

// The largest limits a run of a plan may ask for.
struct PlanMaxima {
  int64_t wall_ms = 30'000;
  int64_t cpu_ms = 30'000;
  int64_t memory_mb = 256;
  int64_t output_bytes = 1 << 20;  // per stream
  int64_t processes = 64;
  int64_t concurrent = 4;  // a user's runs in sandboxes at the same time
};

struct Plan {
  std::string name;
  int64_t quota_monthly = 0;  // runs per calendar month
  PlanMaxima max;
};

enum class SubscriptionStatus { kActive, kTrialing, kPastDue, kCanceled };
DEX_EXPORT const char* SubscriptionStatusName(SubscriptionStatus status);
DEX_EXPORT bool ParseSubscriptionStatus(std::string_view text,
                                        SubscriptionStatus* status);

struct User {
  std::string id;  // "user_" + random characters
  std::string plan;
  SubscriptionStatus status = SubscriptionStatus::kActive;
  int64_t status_changed_ms = 0;
  int64_t created_ms = 0;
};

// What GET /me shows.
struct UsageView {
  User user;
  Plan effective_plan;
  int64_t used = 0;
  int64_t remaining = 0;
  int64_t period_start_ms = 0;  // first instant of the UTC month
  int64_t period_end_ms = 0;    // first instant of the next UTC month
};

struct QuotaOptions {
  Clock* clock = SystemClock();
  // A past_due subscription keeps its plan this long after the status
  // changed, then falls back to the free plan. Default 7 days.
  int64_t past_due_grace_ms = 7ll * 24 * 3600 * 1000;
  // The plan every inactive subscription falls back to. Default "free".
  std::string fallback_plan = "free";
};

// Safe to share between threads.
class DEX_EXPORT Quota {
 public:
  // `store` is borrowed and must outlive the Quota. Creates the default
  // plans (free, starter, pro) on first use.
  static Result<std::unique_ptr<Quota>> Open(Store* store,
                                             const QuotaOptions& options);

  // Creates or replaces a plan. kInvalidArgument for an empty name,
  // negative quota or non-positive maxima.
  Result<Plan> SetPlan(const Plan& plan);
  Result<Plan> GetPlan(const std::string& name);
  Result<Plan> GetPlan(Txn& txn, const std::string& name);

  Result<User> CreateUser(const std::string& plan);
  Result<User> CreateUser(Txn& txn, const std::string& plan);
  Result<User> GetUser(const std::string& user_id);
  Result<User> GetUser(Txn& txn, const std::string& user_id);
  // Changes plan and/or status; a status change restarts the grace clock.
  Result<User> UpdateUser(const std::string& user_id,
                          const std::optional<std::string>& plan,
                          const std::optional<SubscriptionStatus>& status);

  // The plan in force now: the user's plan while active, trialing or
  // past_due within the grace period; otherwise the fallback plan.
  Result<Plan> EffectivePlan(Txn& txn, const User& user);
  Result<UsageView> Usage(const std::string& user_id);
  Result<UsageView> Usage(Txn& txn, const std::string& user_id);

  // Charges one run inside the caller's write transaction, so the check and
  // the charge commit together. kFailedPrecondition
  // "subscription_inactive" when the effective plan allows no runs,
  // kResourceExhausted "quota_exceeded" when the month's quota is used.
  // On success `period` receives the charged month ("2026-12").
  Status Admit(Txn& txn, const std::string& user_id, std::string* period);
  // Gives back one unit charged in `period` (never below zero).
  Status Refund(Txn& txn, const std::string& user_id,
                const std::string& period);

  Clock* clock() const { return options_.clock; }

 private:
  Quota(Store* store, const QuotaOptions& options);
  Store* store_;  // borrowed
  QuotaOptions options_;
};

// "2026-12" for a Unix time in ms; and the month's bounds.
DEX_EXPORT std::string PeriodOf(int64_t unix_ms);
DEX_EXPORT void PeriodBounds(int64_t unix_ms, int64_t* start_ms,
                             int64_t* end_ms);

}  // namespace dex

#endif  // DEX_QUOTA_H_
