#include "dex/status.h"

#include <doctest/doctest.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dex/env.h"

TEST_CASE("an error keeps its code and message") {
  dex::Status s(dex::Category::kFailedPrecondition, "last_active_key",
                "disabling: last key");
  CHECK_FALSE(s.ok());
  CHECK(s.code() == "last_active_key");
  CHECK(s.ToString() == "last_active_key: disabling: last key");
}

TEST_CASE("errno keeps its text after the context") {
  dex::Status s = dex::Status::FromErrno("opening x", ENOENT);
  CHECK(s.category() == dex::Category::kInternal);
  CHECK(s.message() == "opening x: No such file or directory");
}

TEST_CASE("WithContext puts the context first and keeps the code") {
  dex::Status s = dex::Status::Error(dex::Category::kNotFound, "no user u");
  dex::Status wrapped = s.WithContext("me");
  CHECK(wrapped.code() == "not_found");
  CHECK(wrapped.message() == "me: no user u");
}

TEST_CASE("a Result holds a value or a status") {
  dex::Result<int> good = 7;
  dex::Result<int> bad = dex::Status::Error(dex::Category::kInternal, "x");
  REQUIRE(good.ok());
  CHECK(*good == 7);
  CHECK_FALSE(bad.ok());
  CHECK(bad.status().code() == "internal_error");
}

TEST_CASE("times are RFC 3339 UTC") {
  CHECK(dex::FormatTime(1796397372000) == "2026-12-04T15:16:12Z");
  CHECK(dex::FormatTime(0) == "1970-01-01T00:00:00Z");
  CHECK(dex::FormatTime(951782400000) == "2000-02-29T00:00:00Z");
  CHECK(dex::FormatTime(-1) == "1969-12-31T23:59:59Z");
  CHECK(dex::FormatTime(INT64_MAX) == "9999-12-31T23:59:59Z");
  CHECK(dex::FormatTime(INT64_MIN) == "0000-01-01T00:00:00Z");
}

// FormatTime does its own calendar arithmetic; the C library's agrees.
TEST_CASE("times agree with gmtime_r from 1900 to 2400") {
  int mismatches = 0;
  for (int64_t s = -2'208'988'800; s < 13'569'465'600; s += 86'399 * 7 + 13) {
    time_t t = static_cast<time_t>(s);
    struct tm tm;
    gmtime_r(&t, &tm);
    char want[40];
    strftime(want, sizeof want, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (dex::FormatTime(s * 1000 + 999) != want && ++mismatches < 5) {
      CHECK(dex::FormatTime(s * 1000 + 999) == want);
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("a time formatted into a buffer is the same text") {
  for (int64_t ms : {int64_t{1796397372000}, int64_t{0}, int64_t{-1}, INT64_MAX,
                     INT64_MIN, int64_t{951782400000}}) {
    char out[dex::kFormattedTimeChars];
    CHECK(dex::FormatTime(ms, out) == dex::FormatTime(ms));
  }
}

// Log lines go out in one write(2) each, short ones sharing the lock: lines
// of threads logging at once must still arrive whole, one per line, even
// beside lines too long for a pipe to take at once.
TEST_CASE("lines logged by many threads at once arrive whole") {
  int pipe_fds[2];
  REQUIRE(pipe(pipe_fds) == 0);
  int saved_stderr = dup(2);
  REQUIRE(saved_stderr >= 0);
  REQUIRE(dup2(pipe_fds[1], 2) == 2);
  close(pipe_fds[1]);
  std::string received;
  std::thread reader([&] {
    char buf[65536];
    ssize_t n;
    while ((n = read(pipe_fds[0], buf, sizeof buf)) > 0)
      received.append(buf, n);
  });
  constexpr int kThreads = 8, kLines = 500;
  const std::string padding(150, 'x');
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      dex::Logger* logger = dex::StderrLogger(dex::LogLevel::kInfo);
      for (int i = 0; i < kLines; ++i) {
        logger->Log(
            dex::LogLevel::kInfo,
            "t" + std::to_string(t) + " n" + std::to_string(i) + " " + padding);
      }
    });
  }
  // One more thread writes lines longer than a pipe takes at once.
  const std::string long_padding(200000, 'L');
  writers.emplace_back([&] {
    dex::Logger* logger = dex::StderrLogger(dex::LogLevel::kInfo);
    for (int i = 0; i < 20; ++i) {
      logger->Log(dex::LogLevel::kInfo,
                  "long n" + std::to_string(i) + " " + long_padding);
    }
  });
  for (auto& w : writers) w.join();
  REQUIRE(dup2(saved_stderr, 2) == 2);  // closes the pipe's last writer
  close(saved_stderr);
  reader.join();
  close(pipe_fds[0]);

  std::map<int, int> next;  // thread -> next line number expected
  std::istringstream lines(received);
  std::string line;
  int count = 0, bad = 0;
  int long_lines = 0;
  while (std::getline(lines, line)) {
    if (line.size() > 20 && line.substr(20) == " info long n" +
                                                   std::to_string(long_lines) +
                                                   " " + long_padding) {
      ++long_lines;
      continue;
    }
    ++count;
    // "<20-char time> info t<T> n<I> <padding>"
    int t = -1, i = -1;
    char tail[200] = "";
    bool parsed =
        line.size() > 26 && line.substr(20, 6) == " info " &&
        sscanf(line.c_str() + 26, "t%d n%d %199s", &t, &i, tail) == 3 &&
        tail == padding;
    if (!parsed || next[t] != i) {
      if (++bad < 3) CHECK_MESSAGE(false, "torn or out-of-order: " << line);
      continue;
    }
    ++next[t];
  }
  CHECK(bad == 0);
  CHECK(count == kThreads * kLines);
  CHECK(long_lines == 20);
}
