#include "shim/admin.h"

#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "dex/service.h"
#include "shim/json_io.h"

namespace dex::shim {
namespace {

constexpr const char* kDefaultData = "./dex-data";
constexpr const char* kDefaultListen = "127.0.0.1:8080";
// Remembers, by id only, the user the first-run helper created.
constexpr const char* kQuickstartMarker = "quickstart-user";

Status Usage(std::string message) {
  return Status(Category::kInvalidArgument, "usage", std::move(message));
}

// Prints "dex-shim <command>: <why>" and picks the exit code: a wrong
// command line is 2, anything else 1.
int Report(std::string_view command, const Status& status) {
  bool usage = status.code() == "usage";
  fmt::print(stderr, "dex-shim {}: {}\n", command,
             usage ? status.message() : status.ToString());
  return usage ? kExitUsage : kExitFailed;
}

void PrintJson(const std::string& json) {
  fmt::print("{}\n", json);
  std::fflush(stdout);
}

// Admin commands never start sandboxes, so they can share the folder
// with a running server.
Result<std::unique_ptr<Service>> OpenAdmin(const Flags& flags) {
  ServiceOptions options;
  options.data_dir = flags.Get("--data", kDefaultData);
  options.run_executions = false;
  options.logger = StderrLogger(LogLevel::kWarn);
  return Service::Open(options);
}

Status RequireFlag(const Flags& flags, const std::string& flag) {
  if (flags.Has(flag) && !flags.Get(flag, "").empty()) return Status::Ok();
  return Usage(fmt::format("{} is required (see --help)", flag));
}

// Sets `*field` from `flag` when given; maxima must be positive.
Status ApplyMax(const Flags& flags, const std::string& flag, int64_t* field) {
  if (!flags.Has(flag)) return Status::Ok();
  Result<int64_t> value = ParseCount(flag, flags.Get(flag, ""));
  if (!value.ok()) return value.status();
  if (*value == 0) return Usage(flag + " must be a positive integer");
  *field = *value;
  return Status::Ok();
}

// The plan to start from: the plan itself if it exists, else a new one
// with starter's maxima.
Result<Plan> BasePlan(Service* service, const std::string& name, bool* exists) {
  Result<Plan> plan = service->GetPlan(name);
  *exists = plan.ok();
  if (plan.ok() || plan.status().category() != Category::kNotFound) {
    return plan;
  }
  Result<Plan> starter = service->GetPlan("starter");
  if (!starter.ok()) return starter.status();
  Plan fresh;
  fresh.name = name;
  fresh.max = starter->max;
  return fresh;
}

Result<Plan> PlanFromFlags(Service* service, const Flags& flags) {
  const std::string& name = flags.positionals[0];
  bool exists = false;
  Result<Plan> plan = BasePlan(service, name, &exists);
  if (!plan.ok()) return plan.status();
  if (!exists) DEX_RETURN_IF_ERROR(RequireFlag(flags, "--quota"));
  if (flags.Has("--quota")) {
    Result<int64_t> quota = ParseCount("--quota", flags.Get("--quota", ""));
    if (!quota.ok()) return quota.status();
    plan->quota_monthly = *quota;
  }
  PlanMaxima& max = plan->max;
  DEX_RETURN_IF_ERROR(ApplyMax(flags, "--max-wall-ms", &max.wall_ms));
  DEX_RETURN_IF_ERROR(ApplyMax(flags, "--max-memory-mb", &max.memory_mb));
  DEX_RETURN_IF_ERROR(ApplyMax(flags, "--max-output-bytes", &max.output_bytes));
  DEX_RETURN_IF_ERROR(ApplyMax(flags, "--max-processes", &max.processes));
  DEX_RETURN_IF_ERROR(ApplyMax(flags, "--max-concurrent", &max.concurrent));
  max.cpu_ms = max.wall_ms;  // a run's CPU limit never exceeds its wall
  return plan;
}

// A URL a local curl can reach: a wildcard bind is reached on loopback.
std::string LocalUrl(const std::string& base_url) {
  std::string url = base_url;
  for (const char* any : {"http://0.0.0.0:", "http://[::]:"}) {
    std::string prefix(any);
    if (url.rfind(prefix, 0) == 0) {
      url = "http://127.0.0.1:" + url.substr(prefix.size());
    }
  }
  return url;
}

void PrintQuickstart(const NewUser& created, const std::string& base_url) {
  std::string url = LocalUrl(base_url);
  const std::string& key = created.key.raw_key;
  fmt::print(
      "Created user {} on plan starter.\n"
      "API key (shown only now; dex keeps only its hash):\n  {}\n\n"
      "Try it:\n"
      "  curl -s -H \"Authorization: Bearer {}\" {}/me\n"
      "  curl -s -H \"Authorization: Bearer {}\" -H \"Content-Type: "
      "application/json\" -d '{{\"script\": \"print(\\\"hello\\\")\"}}' "
      "\"{}/run?wait=true\"\n\n",
      created.user.id, key, key, url, key, url);
}

Status QuickstartPrelude(const std::string& data_dir, Service* service,
                         const std::string& base_url) {
  std::string marker = data_dir + "/" + kQuickstartMarker;
  std::ifstream existing(marker);
  std::string user_id;
  if (existing && std::getline(existing, user_id) && !user_id.empty()) {
    fmt::print(
        "This folder already has a quickstart user ({}); its key was shown "
        "when it was made.\nMake another with: dex-shim user create --data "
        "{} --plan starter\n\n",
        user_id, data_dir);
    std::fflush(stdout);
    return Status::Ok();
  }
  Result<NewUser> created = service->CreateUser("starter");
  if (!created.ok()) return created.status();
  std::ofstream(marker) << created->user.id << "\n";
  PrintQuickstart(*created, base_url);
  std::fflush(stdout);
  return Status::Ok();
}

}  // namespace

std::string Flags::Get(const std::string& flag, std::string fallback) const {
  auto it = values.find(flag);
  return it == values.end() ? fallback : it->second;
}

Result<int64_t> ParseCount(std::string_view flag, std::string_view text) {
  constexpr int64_t kMax = int64_t{1} << 62;
  bool ok = !text.empty() &&
            text.find_first_not_of("0123456789") == std::string_view::npos;
  int64_t value = 0;
  for (size_t i = 0; ok && i < text.size(); ++i) {
    int digit = text[i] - '0';
    ok = value <= (kMax - digit) / 10;
    value = value * 10 + digit;
  }
  if (!ok) {
    return Usage(fmt::format("{} must be a non-negative integer, got '{}'",
                             flag, SanitizeUtf8(text)));
  }
  return value;
}

Status ParseListen(std::string_view text, std::string* host, int* port) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return Usage("--listen must be HOST:PORT, e.g. 127.0.0.1:8080");
  }
  std::string_view h = text.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') {
    h = h.substr(1, h.size() - 2);
  }
  Result<int64_t> p = ParseCount("--listen port", text.substr(colon + 1));
  if (!p.ok()) return p.status();
  if (*p > 65535) return Usage("--listen port must be at most 65535");
  *host = std::string(h);
  *port = static_cast<int>(*p);
  return Status::Ok();
}

Result<ServeConfig> ServeConfigFromFlags(const Flags& flags) {
  ServeConfig config;
  config.data_dir = flags.Get("--data", kDefaultData);
  DEX_RETURN_IF_ERROR(ParseListen(flags.Get("--listen", kDefaultListen),
                                  &config.host, &config.port));
  if (flags.Has("--workers")) {
    Result<int64_t> workers =
        ParseCount("--workers", flags.Get("--workers", ""));
    if (!workers.ok()) return workers.status();
    if (*workers > 4096) return Usage("--workers must be at most 4096");
    config.workers = static_cast<int>(*workers);
  }
  if (flags.Has("--metrics-listen")) {
    DEX_RETURN_IF_ERROR(ParseListen(flags.Get("--metrics-listen", ""),
                                    &config.metrics_host,
                                    &config.metrics_port));
  }
  std::string level = flags.Get("--log-level", "info");
  if (!ParseLogLevel(level, &config.log_level)) {
    return Usage("--log-level must be debug, info, warn, error or off");
  }
  return config;
}

int RunUserCreate(const Flags& flags) {
  Status usage = RequireFlag(flags, "--plan");
  if (!usage.ok()) return Report("user create", usage);
  Result<std::unique_ptr<Service>> service = OpenAdmin(flags);
  if (!service.ok()) return Report("user create", service.status());
  Result<NewUser> created = (*service)->CreateUser(flags.Get("--plan", ""));
  if (!created.ok()) return Report("user create", created.status());
  PrintJson(NewUserJson(*created));
  return kExitOk;
}

int RunUserUpdate(const Flags& flags) {
  Status usage = RequireFlag(flags, "--user");
  std::optional<std::string> plan;
  std::optional<SubscriptionStatus> status;
  if (flags.Has("--plan")) plan = flags.Get("--plan", "");
  SubscriptionStatus parsed = SubscriptionStatus::kActive;
  if (usage.ok() && flags.Has("--status")) {
    if (ParseSubscriptionStatus(flags.Get("--status", ""), &parsed)) {
      status = parsed;
    } else {
      usage = Usage("--status must be active, trialing, past_due or canceled");
    }
  }
  if (!usage.ok()) return Report("user update", usage);
  Result<std::unique_ptr<Service>> service = OpenAdmin(flags);
  if (!service.ok()) return Report("user update", service.status());
  Result<UsageView> view =
      (*service)->UpdateUser(flags.Get("--user", ""), plan, status);
  if (!view.ok()) return Report("user update", view.status());
  PrintJson(UsageJson(*view));
  return kExitOk;
}

int RunPlanSet(const Flags& flags) {
  Result<std::unique_ptr<Service>> service = OpenAdmin(flags);
  if (!service.ok()) return Report("plan set", service.status());
  Result<Plan> plan = PlanFromFlags(service->get(), flags);
  if (!plan.ok()) return Report("plan set", plan.status());
  Result<Plan> saved = (*service)->SetPlan(*plan);
  if (!saved.ok()) return Report("plan set", saved.status());
  PrintJson(PlanJson(*saved));
  return kExitOk;
}

int RunQuickstart(const Flags& flags) {
  Result<ServeConfig> config = ServeConfigFromFlags(flags);
  if (!config.ok()) return Report("quickstart", config.status());
  std::string data_dir = config->data_dir;
  return RunServe(*config,
                  [data_dir](Service* service, const std::string& base_url) {
                    return QuickstartPrelude(data_dir, service, base_url);
                  });
}

}  // namespace dex::shim
