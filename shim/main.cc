// dex-shim: the HTTP server and admin command line of dex (§8 of the
// design). This file only parses the command line and dispatches.
#include <fmt/format.h>

#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "shim/admin.h"
#include "shim/config.h"
#include "shim/http_server.h"

namespace dex::shim {
namespace {

constexpr std::string_view kProgramHelp =
    R"(dex-shim: run dex's HTTP API and manage its users and plans.

Usage:
  dex-shim serve       [--data DIR] [--listen HOST:PORT] [--workers N]
                       [--log-level LEVEL] [--metrics-listen HOST:PORT]
                       [--max-queued N] [--queue-timeout-ms N]
                       [--retention-ms N] [--shutdown-grace-ms N]
                       [--max-store-mb N]
  dex-shim quickstart  [--data DIR] [--listen HOST:PORT] [--workers N]
                       [--log-level LEVEL] [--metrics-listen HOST:PORT]
  dex-shim user create [--data DIR] --plan NAME
  dex-shim user update [--data DIR] --user ID [--plan NAME]
                       [--status active|trialing|past_due|canceled]
  dex-shim plan set    [--data DIR] NAME --quota N [--max-wall-ms N]
                       [--max-memory-mb N] [--max-output-bytes N]
                       [--max-processes N] [--max-concurrent N]

--data defaults to ./dex-data and --listen to 127.0.0.1:8080. Options may
come in any order, as "--flag value" or "--flag=value". Every command also
takes --config FILE, a JSON object of its flags without the dashes and
with '_' for '-' ({"data": "/srv/dex", "log_level": "warn"}); flags on
the command line override the file. Admin commands
print JSON on stdout and work while serve runs on the same folder. Errors
go to stderr; the exit code is 1 when a command fails and 2 when the
command line is wrong. "dex-shim COMMAND --help" describes one command.
)";

constexpr std::string_view kServeHelp =
    R"(Usage: dex-shim serve [--data DIR] [--listen HOST:PORT] [--workers N]
                      [--log-level debug|info|warn|error|off]
                      [--metrics-listen HOST:PORT] [--config FILE]
                      [--max-queued N] [--queue-timeout-ms N]
                      [--retention-ms N] [--shutdown-grace-ms N]
                      [--max-store-mb N]

Serves the HTTP API over the store in DIR (default ./dex-data) on
HOST:PORT (default 127.0.0.1:8080; port 0 picks a free port). Once it
accepts connections it prints exactly one line to stdout:
  listening on http://HOST:PORT
and nothing else; logs (one access line per request at info) go to
stderr; --log-level (default info) sets which. --workers sets the
sandbox workers (default, or 0: one per CPU, at least 2). --metrics-listen HOST:PORT serves Prometheus metrics at
GET /metrics on a listener of its own (default: off); it needs no key,
so bind it to loopback or a private address. SIGTERM or SIGINT stops
accepting, gives running work --shutdown-grace-ms (default 10000) to
finish, leaves queued work for the next start, and exits 0; runs still
running then fail as interrupted and are refunded at the next start.
--max-queued N (default 1000): queued runs in all before POST /run
answers 503 with Retry-After. --queue-timeout-ms N (default 600000): a
run queued longer fails with detail queue_timeout and is refunded.
--retention-ms N (default 86400000, 24 h): finished runs are purged this
long after they end, then answer 404. --max-store-mb N (default 16384):
the store's ceiling; past it new runs answer 503 (store_full) while
reads keep working. Every submission is on disk before its answer.
)";

constexpr std::string_view kQuickstartHelp =
    R"(Usage: dex-shim quickstart [--data DIR] [--listen HOST:PORT]
                           [--workers N] [--log-level LEVEL]
                           [--metrics-listen HOST:PORT] [--config FILE]

The first-run helper: on a folder where it has not run before, creates a
user on plan starter and prints its API key and ready-to-paste curl lines
for GET /me and POST /run, then serves exactly like "dex-shim serve" (its
"listening on" line follows). On later runs it only serves.
)";

constexpr std::string_view kUserHelp = R"(Usage:
  dex-shim user create [--data DIR] --plan NAME
  dex-shim user update [--data DIR] --user ID [--plan NAME]
                       [--status active|trialing|past_due|canceled]
)";

constexpr std::string_view kUserCreateHelp =
    R"(Usage: dex-shim user create [--data DIR] --plan NAME [--config FILE]

Creates a user subscribed to plan NAME (status active) with one API key,
and prints {"user_id": "...", "api_key": "dex_live_..."}. The key is shown
only here; dex keeps only its SHA-256.
)";

constexpr std::string_view kUserUpdateHelp =
    R"(Usage: dex-shim user update [--data DIR] --user ID [--plan NAME]
                            [--status active|trialing|past_due|canceled]
                            [--config FILE]

Changes a user's plan and/or subscription status and prints the user's
GET /me object. A status change restarts the 7-day past_due grace clock.
)";

constexpr std::string_view kPlanHelp = R"(Usage:
  dex-shim plan set [--data DIR] NAME --quota N [--max-wall-ms N] ...
)";

constexpr std::string_view kPlanSetHelp =
    R"(Usage: dex-shim plan set [--data DIR] NAME --quota N [--max-wall-ms N]
                         [--max-memory-mb N] [--max-output-bytes N]
                         [--max-processes N] [--max-concurrent N]
                         [--config FILE]

Creates or changes plan NAME and prints it as
{"name", "quota_monthly", "max": {"wall_ms", "cpu_ms", "memory_mb",
"output_bytes", "processes", "concurrent"}}.
--quota (runs per calendar month, 0 or more) is required for a new plan
and may be left out when changing one.
A new plan takes starter's maxima unless given; an existing plan keeps
its own. Maxima are positive integers; the CPU maximum equals the wall
maximum.
)";

using RunFn = int (*)(const Flags&);

struct Command {
  std::vector<std::string_view> words;    // e.g. {"user", "create"}
  std::vector<std::string_view> options;  // each takes a value
  size_t positionals;
  std::string_view help;
  RunFn run;
};

int RunServeCommand(const Flags& flags);

const std::vector<Command>& Commands() {
  static const std::vector<Command> commands = {
      {{"serve"},
       {"--data", "--listen", "--workers", "--log-level", "--metrics-listen",
        "--max-queued", "--queue-timeout-ms", "--retention-ms",
        "--shutdown-grace-ms", "--max-store-mb"},
       0,
       kServeHelp,
       RunServeCommand},
      {{"quickstart"},
       {"--data", "--listen", "--workers", "--log-level", "--metrics-listen"},
       0,
       kQuickstartHelp,
       RunQuickstart},
      {{"user", "create"},
       {"--data", "--plan"},
       0,
       kUserCreateHelp,
       RunUserCreate},
      {{"user", "update"},
       {"--data", "--user", "--plan", "--status"},
       0,
       kUserUpdateHelp,
       RunUserUpdate},
      {{"plan", "set"},
       {"--data", "--quota", "--max-wall-ms", "--max-memory-mb",
        "--max-output-bytes", "--max-processes", "--max-concurrent"},
       1,
       kPlanSetHelp,
       RunPlanSet},
  };
  return commands;
}

bool IsHelp(std::string_view arg) {
  return arg == "--help" || arg == "-h" || arg == "help";
}

int UsageError(const std::string& message) {
  fmt::print(stderr, "dex-shim: {}\n(see dex-shim --help)\n", message);
  return kExitUsage;
}

int PrintHelp(std::string_view help) {
  fmt::print("{}", help);
  std::fflush(stdout);
  return kExitOk;
}

// The queue, retention, shutdown and store flags of serve, each a count
// from 1 to `max`.
Status ParseServeLimits(const Flags& flags, ServeConfig* config) {
  struct Limit {
    const char* flag;
    int64_t max;
    std::function<void(int64_t)> set;
  };
  const Limit limits[] = {
      {"--max-queued", 1'000'000,
       [&](int64_t n) { config->max_queued = static_cast<size_t>(n); }},
      {"--queue-timeout-ms", 366ll * 86'400'000,
       [&](int64_t n) { config->queue_timeout_ms = n; }},
      {"--retention-ms", 3660ll * 86'400'000,
       [&](int64_t n) { config->retention_ms = n; }},
      {"--shutdown-grace-ms", 86'400'000,
       [&](int64_t n) { config->shutdown_grace_ms = n; }},
      {"--max-store-mb", 1ll << 30,
       [&](int64_t n) { config->max_store_bytes = uint64_t(n) << 20; }},
  };
  for (const Limit& limit : limits) {
    if (!flags.Has(limit.flag)) continue;
    Result<int64_t> n = ParseCount(limit.flag, flags.Get(limit.flag, ""));
    if (!n.ok()) return n.status();
    if (*n < 1 || *n > limit.max) {
      return Status::Error(
          Category::kInvalidArgument,
          fmt::format("{} must be from 1 to {}", limit.flag, limit.max));
    }
    limit.set(*n);
  }
  return Status::Ok();
}

int RunServeCommand(const Flags& flags) {
  Result<ServeConfig> config = ServeConfigFromFlags(flags);
  Status limits =
      config.ok() ? ParseServeLimits(flags, &*config) : config.status();
  if (!limits.ok()) {
    fmt::print(stderr, "dex-shim serve: {}\n", limits.message());
    return kExitUsage;
  }
  return RunServe(*config);
}

bool Allowed(const Command& command, std::string_view option) {
  for (std::string_view o : command.options) {
    if (o == option) return true;
  }
  return false;
}

// Parses what follows the command words. Sets *help when asked for it.
int ParseFlags(const Command& command, const std::vector<std::string>& args,
               Flags* flags, bool* help) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      *help = true;
      return kExitOk;
    }
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      flags->positionals.push_back(arg);
      continue;
    }
    size_t eq = arg.find('=');
    std::string name = arg.substr(0, eq);
    if (!Allowed(command, name) && name != "--config") {
      return UsageError(fmt::format("unknown option {}", name));
    }
    if (flags->Has(name)) return UsageError(name + " is given twice");
    if (eq != std::string::npos) {
      flags->values[name] = arg.substr(eq + 1);
    } else if (i + 1 < args.size()) {
      flags->values[name] = args[++i];
    } else {
      return UsageError(name + " needs a value");
    }
  }
  if (flags->positionals.size() != command.positionals) {
    return UsageError(
        command.positionals == 0
            ? fmt::format("unexpected argument '{}'", flags->positionals[0])
            : fmt::format("expected {} name argument(s)", command.positionals));
  }
  return kExitOk;
}

// The help of a command group ("user", "plan"), if `word` names one.
std::string_view GroupHelp(std::string_view word) {
  if (word == "user") return kUserHelp;
  if (word == "plan") return kPlanHelp;
  return {};
}

int Main(const std::vector<std::string>& args) {
  if (args.empty()) {
    fmt::print(stderr, "{}", kProgramHelp);
    return kExitUsage;
  }
  if (IsHelp(args[0])) return PrintHelp(kProgramHelp);
  for (const Command& command : Commands()) {
    size_t n = command.words.size();
    if (args.size() < n ||
        !std::equal(command.words.begin(), command.words.end(), args.begin())) {
      continue;
    }
    Flags flags;
    bool help = false;
    std::vector<std::string> rest(args.begin() + n, args.end());
    int rc = ParseFlags(command, rest, &flags, &help);
    if (help) return PrintHelp(command.help);
    if (rc != kExitOk) return rc;
    if (flags.Has("--config")) {
      Status merged =
          MergeConfigFile(flags.Get("--config", ""), command.options, &flags);
      if (!merged.ok()) return UsageError(merged.message());
    }
    return command.run(flags);
  }
  std::string_view group = GroupHelp(args[0]);
  if (!group.empty() && (args.size() == 1 || IsHelp(args[1]))) {
    return args.size() == 1 ? (fmt::print(stderr, "{}", group), kExitUsage)
                            : PrintHelp(group);
  }
  std::string name = args[0];
  if (!group.empty()) name += " " + args[1];
  return UsageError(fmt::format("unknown command '{}'", name));
}

}  // namespace
}  // namespace dex::shim

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return dex::shim::Main(args);
}
