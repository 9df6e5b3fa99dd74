#include "dex/status.h"

#include <doctest/doctest.h>
#include <time.h>

#include <cerrno>
#include <cstdint>

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
