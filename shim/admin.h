// The admin side of dex-shim (§8 of the design): users, plans and the
// first-run helper. Every admin command opens the store without sandboxes
// or an executor, so it works while `serve` runs on the same folder.
#ifndef DEX_SHIM_ADMIN_H_
#define DEX_SHIM_ADMIN_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "dex/status.h"
#include "shim/http_server.h"

namespace dex::shim {

// Exit codes of every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;  // the command ran and failed
inline constexpr int kExitUsage = 2;   // the command line was wrong

// One subcommand's options ("--plan" -> "pro") and positional words.
struct Flags {
  std::map<std::string, std::string> values;
  std::vector<std::string> positionals;

  bool Has(const std::string& flag) const { return values.count(flag) > 0; }
  std::string Get(const std::string& flag, std::string fallback) const;
};

// A non-negative decimal integer without sign or spaces, at most 2^62;
// kInvalidArgument naming `flag` otherwise.
Result<int64_t> ParseCount(std::string_view flag, std::string_view text);
// "HOST:PORT" or "[IPv6]:PORT" with PORT in 0-65535.
Status ParseListen(std::string_view text, std::string* host, int* port);
// --data, --listen, --workers and --log-level with their defaults.
Result<ServeConfig> ServeConfigFromFlags(const Flags& flags);

// Each prints its JSON (or help) on stdout, errors on stderr, and returns
// the exit code.
int RunUserCreate(const Flags& flags);
int RunUserUpdate(const Flags& flags);
int RunPlanSet(const Flags& flags);
int RunQuickstart(const Flags& flags);

}  // namespace dex::shim

#endif  // DEX_SHIM_ADMIN_H_
