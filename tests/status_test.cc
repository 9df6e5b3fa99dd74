#include "dex/status.h"

#include <doctest/doctest.h>

#include <cerrno>

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
}
