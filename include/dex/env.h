// Seams shared by the layers: a clock and a logger, both injected through
// the Options structs so tests can drive time and capture logs.
#ifndef DEX_ENV_H_
#define DEX_ENV_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "dex/export.h"

namespace dex {

// Wall-clock time. Implementations must be safe to call from any thread.
class DEX_EXPORT Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch, UTC.
  virtual int64_t NowMs() = 0;
};

// The real clock; a process-wide instance that lives forever.
DEX_EXPORT Clock* SystemClock();

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

// Receives lifecycle events, stalls and failures. Never passed a key, a
// script or a user's output. Implementations must be thread-safe.
class DEX_EXPORT Logger {
 public:
  virtual ~Logger() = default;
  virtual void Log(LogLevel level, std::string_view message) = 0;
};

// A logger writing "2026-12-04T15:16:12Z info message" lines to stderr for
// messages at `min_level` or above. Lives forever; one per level.
DEX_EXPORT Logger* StderrLogger(LogLevel min_level = LogLevel::kInfo);
// Discards everything; the default of every Options struct.
DEX_EXPORT Logger* NullLogger();

// Parses "debug", "info", "warn", "error", "off". False when unknown.
DEX_EXPORT bool ParseLogLevel(std::string_view text, LogLevel* level);

// RFC 3339 UTC with second precision: "2026-12-04T15:16:12Z".
DEX_EXPORT std::string FormatTime(int64_t unix_ms);
// The same into `out`, without allocating; returns a view of `out`.
inline constexpr size_t kFormattedTimeChars = 20;
DEX_EXPORT std::string_view FormatTime(int64_t unix_ms,
                                       char (&out)[kFormattedTimeChars]);

}  // namespace dex

#endif  // DEX_ENV_H_
