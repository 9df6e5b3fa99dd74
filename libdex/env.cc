#include "dex/env.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

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
    std::string line = FormatTime(SystemClock()->NowMs()) + " " +
                       kNames[static_cast<int>(level)] + " " +
                       std::string(message) + "\n";
    // One write per line, so lines of several threads never interleave.
    std::lock_guard<std::mutex> lock(mu_);
    ssize_t ignored = write(2, line.data(), line.size());
    (void)ignored;
  }

 private:
  LogLevel min_level_;
  std::mutex mu_;
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

std::string FormatTime(int64_t unix_ms) {
  time_t seconds = static_cast<time_t>(unix_ms / 1000);
  struct tm tm;
  gmtime_r(&seconds, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace dex
