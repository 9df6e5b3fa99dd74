#include "dex/env.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstring>
#include <iterator>
#include <mutex>
#include <shared_mutex>

#include "libdex/calendar.h"

namespace dex {
namespace {

class RealClock : public Clock {
 public:
  int64_t NowMs() override {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
        .count();
  }
};

class StderrSink : public Logger {
 public:
  explicit StderrSink(LogLevel min_level) : min_level_(min_level) {}

  void Log(LogLevel level, std::string_view message) override {
    if (level < min_level_) return;
    static const char* kNames[] = {"debug", "info", "warn", "error", "off"};
    char time[kFormattedTimeChars];
    fmt::memory_buffer line;  // on the stack unless the line is long
    fmt::format_to(std::back_inserter(line), "{} {} {}\n",
                   FormatTime(SystemClock()->NowMs(), time),
                   kNames[static_cast<int>(level)], message);
    // One write per line, so that lines of several threads do not
    // interleave. A write of at most PIPE_BUF bytes is atomic on a pipe,
    // a tty or a regular file, so such lines (every access-log line) only
    // share the lock and request threads do not queue behind each other.
    // A longer line, which a pipe may take in pieces, holds it alone.
    if (line.size() <= PIPE_BUF) {
      std::shared_lock<std::shared_mutex> lock(mu_);
      ssize_t ignored = write(2, line.data(), line.size());
      (void)ignored;
      return;
    }
    std::lock_guard<std::shared_mutex> lock(mu_);
    ssize_t ignored = write(2, line.data(), line.size());
    (void)ignored;
  }

 private:
  LogLevel min_level_;
  std::shared_mutex mu_;
};

class NullSink : public Logger {
 public:
  void Log(LogLevel, std::string_view) override {}
};

}  // namespace

Clock* SystemClock() {
  static RealClock* clock = new RealClock();
  return clock;
}

Logger* StderrLogger(LogLevel min_level) {
  static StderrSink* sinks[] = {
      new StderrSink(LogLevel::kDebug), new StderrSink(LogLevel::kInfo),
      new StderrSink(LogLevel::kWarn), new StderrSink(LogLevel::kError),
      new StderrSink(LogLevel::kOff)};
  return sinks[static_cast<int>(min_level)];
}

Logger* NullLogger() {
  static NullSink* sink = new NullSink();
  return sink;
}

bool ParseLogLevel(std::string_view text, LogLevel* level) {
  static const std::pair<std::string_view, LogLevel> kLevels[] = {
      {"debug", LogLevel::kDebug},
      {"info", LogLevel::kInfo},
      {"warn", LogLevel::kWarn},
      {"error", LogLevel::kError},
      {"off", LogLevel::kOff}};
  for (const auto& [name, value] : kLevels) {
    if (text == name) {
      *level = value;
      return true;
    }
  }
  return false;
}

// Plain arithmetic (calendar.h), not gmtime_r: glibc's takes a
// process-wide lock, and every request's log line and timestamps went
// through it.
std::string FormatTime(int64_t unix_ms) {
  char out[kFormattedTimeChars];
  return std::string(FormatTime(unix_ms, out));
}

std::string_view FormatTime(int64_t unix_ms, char (&out)[kFormattedTimeChars]) {
  using internal::FloorDiv;
  int64_t seconds = FloorDiv(internal::ClampToFourDigitYears(unix_ms), 1000);
  int64_t days = FloorDiv(seconds, 86'400);
  int64_t second_of_day = seconds - days * 86'400;
  internal::CivilDate date = internal::CivilFromDays(days);
  // YYYY-MM-DDTHH:MM:SSZ, written digit by digit (no locale, no printf).
  static_assert(sizeof("0000-00-00T00:00:00Z") == kFormattedTimeChars + 1);
  std::memcpy(out, "0000-00-00T00:00:00Z", kFormattedTimeChars);
  auto put = [&out](size_t at, int64_t value, int digits) {
    for (int i = digits - 1; i >= 0; --i, value /= 10) {
      out[at + i] = static_cast<char>('0' + value % 10);
    }
  };
  put(0, date.year, 4);
  put(5, date.month, 2);
  put(8, date.day, 2);
  put(11, second_of_day / 3600, 2);
  put(14, second_of_day / 60 % 60, 2);
  put(17, second_of_day % 60, 2);
  return std::string_view(out, kFormattedTimeChars);
}

}  // namespace dex
