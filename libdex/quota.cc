#include "dex/quota.h"

#include <charconv>
#include <string_view>
#include <system_error>

#include "dex/env.h"
#include "dex/keys.h"
#include "libdex/calendar.h"
#include "libdex/records.h"

namespace dex {
namespace {

// DESIGN §4: the plans every new store starts with.
Plan DefaultPlan(const char* name, int64_t quota, int64_t wall_ms,
                 int64_t memory_mb, int64_t output_bytes, int64_t processes,
                 int64_t concurrent) {
  return Plan{name, quota,
              PlanMaxima{wall_ms, wall_ms, memory_mb, output_bytes, processes,
                         concurrent}};
}

const Plan kDefaultPlans[] = {
    DefaultPlan("free", 100, 5'000, 128, 64 << 10, 16, 1),
    DefaultPlan("starter", 3000, 30'000, 256, 1 << 20, 64, 4),
    DefaultPlan("pro", 100'000, 120'000, 1024, 8 << 20, 256, 16),
};

std::string UsageKey(const std::string& user_id, const std::string& period) {
  std::string key;
  key.reserve(user_id.size() + 1 + period.size());
  key.append(user_id).append(1, '/').append(period);
  return key;
}

Result<int64_t> ReadUsage(Txn& txn, const std::string& user_id,
                          const std::string& period) {
  std::string_view bytes;
  Status s = txn.Get(Table::kUsage, UsageKey(user_id, period), &bytes);
  if (s.category() == Category::kNotFound) return int64_t{0};
  DEX_RETURN_IF_ERROR(s);
  int64_t used = 0;
  auto [end, error] =
      std::from_chars(bytes.data(), bytes.data() + bytes.size(), used);
  if (error != std::errc() || end != bytes.data() + bytes.size()) {
    return Status(Category::kInternal, "internal_error",
                  "store: corrupt usage record");
  }
  return used;
}

Status ValidatePlan(const Plan& plan) {
  const auto& m = plan.max;
  if (plan.name.empty() || plan.name.size() > 64) {
    return Status::Error(Category::kInvalidArgument,
                         "plan: the name must be 1 to 64 characters");
  }
  if (plan.quota_monthly < 0) {
    return Status::Error(Category::kInvalidArgument,
                         "plan: quota must not be negative");
  }
  if (m.wall_ms <= 0 || m.cpu_ms <= 0 || m.memory_mb <= 0 ||
      m.output_bytes <= 0 || m.processes <= 0 || m.concurrent <= 0) {
    return Status::Error(Category::kInvalidArgument,
                         "plan: every maximum must be positive");
  }
  return Status::Ok();
}

}  // namespace

const char* SubscriptionStatusName(SubscriptionStatus status) {
  switch (status) {
    case SubscriptionStatus::kActive:
      return "active";
    case SubscriptionStatus::kTrialing:
      return "trialing";
    case SubscriptionStatus::kPastDue:
      return "past_due";
    case SubscriptionStatus::kCanceled:
      return "canceled";
  }
  return "canceled";
}

bool ParseSubscriptionStatus(std::string_view text,
                             SubscriptionStatus* status) {
  for (auto s : {SubscriptionStatus::kActive, SubscriptionStatus::kTrialing,
                 SubscriptionStatus::kPastDue, SubscriptionStatus::kCanceled}) {
    if (text == SubscriptionStatusName(s)) {
      *status = s;
      return true;
    }
  }
  return false;
}

// Both clamp the time to years 0000 to 9999, as FormatTime does: a clock
// outside those (only a broken one) maps to the nearest end.
std::string PeriodOf(int64_t unix_ms) {
  char time[kFormattedTimeChars];
  return std::string(FormatTime(unix_ms, time).substr(0, 7));  // YYYY-MM
}

void PeriodBounds(int64_t unix_ms, int64_t* start_ms, int64_t* end_ms) {
  constexpr int64_t kDayMs = 86'400'000;
  internal::CivilDate start = internal::CivilFromDays(
      internal::FloorDiv(internal::ClampToFourDigitYears(unix_ms), kDayMs));
  start.day = 1;
  internal::CivilDate end = start;
  if (++end.month > 12) {
    end.month = 1;
    ++end.year;
  }
  *start_ms = internal::DaysFromCivil(start) * kDayMs;
  *end_ms = internal::DaysFromCivil(end) * kDayMs;
}

Quota::Quota(Store* store, const QuotaOptions& options)
    : store_(store), options_(options) {}

Result<std::unique_ptr<Quota>> Quota::Open(Store* store,
                                           const QuotaOptions& options) {
  std::unique_ptr<Quota> quota(new Quota(store, options));
  Status status = store->Update([&](Txn& txn) -> Status {
    for (const Plan& plan : kDefaultPlans) {
      std::string existing;
      Status s = txn.Get(Table::kPlans, plan.name, &existing);
      if (s.ok()) continue;
      if (s.category() != Category::kNotFound) return s;
      DEX_RETURN_IF_ERROR(
          txn.Put(Table::kPlans, plan.name, internal::EncodePlan(plan)));
    }
    return Status::Ok();
  });
  if (!status.ok()) return status.WithContext("quota: default plans");
  return quota;
}

Result<Plan> Quota::SetPlan(const Plan& plan) {
  DEX_RETURN_IF_ERROR(ValidatePlan(plan));
  Status s = store_->Update([&](Txn& txn) {
    return txn.Put(Table::kPlans, plan.name, internal::EncodePlan(plan));
  });
  if (!s.ok()) return s;
  return plan;
}

Result<Plan> Quota::GetPlan(const std::string& name) {
  auto txn = store_->BeginRead();
  if (!txn.ok()) return txn.status();
  return GetPlan(*txn, name);
}

Result<Plan> Quota::GetPlan(Txn& txn, const std::string& name) {
  std::string_view bytes;
  Status s = txn.Get(Table::kPlans, name, &bytes);
  if (s.category() == Category::kNotFound) {
    return Status(Category::kNotFound, "not_found", "no plan named " + name);
  }
  DEX_RETURN_IF_ERROR(s);
  Plan plan;
  DEX_RETURN_IF_ERROR(internal::DecodePlan(bytes, &plan));
  return plan;
}

Result<User> Quota::CreateUser(const std::string& plan) {
  Result<User> user = Status::Error(Category::kInternal, "not run");
  Status s = store_->Update([&](Txn& txn) {
    user = CreateUser(txn, plan);
    return user.status();
  });
  if (!s.ok()) return s;
  return user;
}

Result<User> Quota::CreateUser(Txn& txn, const std::string& plan) {
  auto found = GetPlan(txn, plan);
  if (!found.ok()) {
    return Status::Error(Category::kInvalidArgument,
                         "creating a user: no plan named " + plan);
  }
  User user;
  user.id = RandomId("user_");
  user.plan = plan;
  user.status = SubscriptionStatus::kActive;
  user.created_ms = user.status_changed_ms = options_.clock->NowMs();
  DEX_RETURN_IF_ERROR(
      txn.Put(Table::kUsers, user.id, internal::EncodeUser(user)));
  return user;
}

Result<User> Quota::GetUser(const std::string& user_id) {
  auto txn = store_->BeginRead();
  if (!txn.ok()) return txn.status();
  return GetUser(*txn, user_id);
}

Result<User> Quota::GetUser(Txn& txn, const std::string& user_id) {
  std::string_view bytes;
  Status s = txn.Get(Table::kUsers, user_id, &bytes);
  if (s.category() == Category::kNotFound) {
    return Status(Category::kNotFound, "not_found", "no user " + user_id);
  }
  DEX_RETURN_IF_ERROR(s);
  User user;
  DEX_RETURN_IF_ERROR(internal::DecodeUser(bytes, &user));
  return user;
}

Result<User> Quota::UpdateUser(
    const std::string& user_id, const std::optional<std::string>& plan,
    const std::optional<SubscriptionStatus>& status) {
  Result<User> updated = Status::Error(Category::kInternal, "not run");
  Status s = store_->Update([&](Txn& txn) -> Status {
    auto user = GetUser(txn, user_id);
    if (!user.ok()) return user.status();
    if (plan) {
      auto found = GetPlan(txn, *plan);
      if (!found.ok()) {
        return Status::Error(Category::kInvalidArgument,
                             "updating a user: no plan named " + *plan);
      }
      user->plan = *plan;
    }
    if (status && *status != user->status) {
      user->status = *status;
      user->status_changed_ms = options_.clock->NowMs();
    }
    updated = *user;
    return txn.Put(Table::kUsers, user_id, internal::EncodeUser(*user));
  });
  if (!s.ok()) return s;
  return updated;
}

Result<Plan> Quota::EffectivePlan(Txn& txn, const User& user) {
  int64_t now = options_.clock->NowMs();
  bool in_force = false;
  switch (user.status) {
    case SubscriptionStatus::kActive:
    case SubscriptionStatus::kTrialing:
      in_force = true;
      break;
    case SubscriptionStatus::kPastDue:
      in_force = now - user.status_changed_ms < options_.past_due_grace_ms;
      break;
    case SubscriptionStatus::kCanceled:
      in_force = false;
      break;
  }
  auto plan = GetPlan(txn, in_force ? user.plan : options_.fallback_plan);
  if (plan.ok()) return plan;
  // A fallback plan someone deleted allows nothing rather than failing.
  return Plan{options_.fallback_plan, 0, PlanMaxima{}};
}

Result<UsageView> Quota::Usage(const std::string& user_id) {
  auto txn = store_->BeginRead();
  if (!txn.ok()) return txn.status();
  return Usage(*txn, user_id);
}

Result<UsageView> Quota::Usage(Txn& txn, const std::string& user_id) {
  auto user = GetUser(txn, user_id);
  if (!user.ok()) return user.status();
  auto plan = EffectivePlan(txn, *user);
  if (!plan.ok()) return plan.status();
  int64_t now = options_.clock->NowMs();
  UsageView view;
  view.user = *user;
  view.effective_plan = *plan;
  auto used = ReadUsage(txn, user_id, PeriodOf(now));
  if (!used.ok()) return used.status();
  view.used = *used;
  view.remaining = std::max<int64_t>(0, plan->quota_monthly - view.used);
  PeriodBounds(now, &view.period_start_ms, &view.period_end_ms);
  return view;
}

Status Quota::Admit(Txn& txn, const std::string& user_id, std::string* period) {
  auto view = Usage(txn, user_id);
  if (!view.ok()) return view.status();
  if (view->effective_plan.quota_monthly <= 0) {
    return Status(Category::kFailedPrecondition, "subscription_inactive",
                  "admitting a run: the plan in force (" +
                      view->effective_plan.name + ") allows no runs");
  }
  if (view->remaining <= 0) {
    return Status(Category::kResourceExhausted, "quota_exceeded",
                  "admitting a run: the monthly quota of " +
                      std::to_string(view->effective_plan.quota_monthly) +
                      " runs is used up");
  }
  *period = PeriodOf(options_.clock->NowMs());
  return txn.Put(Table::kUsage, UsageKey(user_id, *period),
                 std::to_string(view->used + 1));
}

Status Quota::Refund(Txn& txn, const std::string& user_id,
                     const std::string& period) {
  auto used = ReadUsage(txn, user_id, period);
  if (!used.ok()) return used.status();
  if (*used <= 0) return Status::Ok();
  return txn.Put(Table::kUsage, UsageKey(user_id, period),
                 std::to_string(*used - 1));
}

}  // namespace dex
