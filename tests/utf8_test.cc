// SanitizeUtf8 must match Python's bytes.decode("utf-8", errors="replace");
// the expected strings below were produced by /usr/bin/python3 (3.11).
#include <doctest/doctest.h>

#include <string>

#include "dex/sandbox.h"

namespace dex {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

std::string Repeat(const std::string& text, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += text;
  return out;
}

TEST_CASE("valid UTF-8 passes unchanged") {
  CHECK(SanitizeUtf8("abc") == "abc");
  CHECK(SanitizeUtf8("\xe2\x82\xac") == "\xe2\x82\xac");
  CHECK(SanitizeUtf8("\xf0\x9f\x98\x80") == "\xf0\x9f\x98\x80");
  CHECK(SanitizeUtf8(std::string("a\0b", 3)) == std::string("a\0b", 3));
  CHECK(SanitizeUtf8("") == "");
}

TEST_CASE("each invalid byte that starts nothing is one replacement") {
  CHECK(SanitizeUtf8("ok \xfe\xff\n") == "ok " + kFffd + kFffd + "\n");
  CHECK(SanitizeUtf8("\x80\x80") == Repeat(kFffd, 2));
  CHECK(SanitizeUtf8("\xf8\x88\x80\x80\x80") == Repeat(kFffd, 5));
}

TEST_CASE("a cut-off sequence is one replacement") {
  CHECK(SanitizeUtf8("\xe2\x82") == kFffd);
  CHECK(SanitizeUtf8("a\xe2\x82"
                     "b") == "a" + kFffd + "b");
  CHECK(SanitizeUtf8("\xf0\x9f\x98") == kFffd);
  CHECK(SanitizeUtf8("\xe0\xa0") == kFffd);
  CHECK(SanitizeUtf8("\xf1\x80\x80\xe2\x82\xac") == kFffd + "\xe2\x82\xac");
}

TEST_CASE("overlongs, surrogates and too-large code points are refused") {
  CHECK(SanitizeUtf8("\xc0\xaf") == Repeat(kFffd, 2));
  CHECK(SanitizeUtf8("\xe0\x80\xaf") == Repeat(kFffd, 3));
  CHECK(SanitizeUtf8("\xed\xa0\x80") == Repeat(kFffd, 3));
  CHECK(SanitizeUtf8("\xf4\x90\x80\x80") == Repeat(kFffd, 4));
}

TEST_CASE("truncation below the cap keeps everything") {
  std::string text = "hello";
  CHECK_FALSE(TruncateUtf8(&text, 10));
  CHECK(text == "hello");
}

TEST_CASE("truncation cuts at the cap between whole characters") {
  std::string text = "abcdef";
  CHECK(TruncateUtf8(&text, 4));
  CHECK(text == "abcd");
}

TEST_CASE("truncation drops a character the cap would split") {
  std::string text = Repeat("\xe2\x82\xac", 3);  // 9 bytes
  CHECK(TruncateUtf8(&text, 7));
  CHECK(text == Repeat("\xe2\x82\xac", 2));
  std::string emoji = "a\xf0\x9f\x98\x80";
  CHECK(TruncateUtf8(&emoji, 4));
  CHECK(emoji == "a");
}

TEST_CASE("truncation keeps a character ending exactly at the cap") {
  std::string text = Repeat("\xe2\x82\xac", 3);
  CHECK(TruncateUtf8(&text, 6));
  CHECK(text == Repeat("\xe2\x82\xac", 2));
}

TEST_CASE("truncation keeps invalid bytes for the sanitizer") {
  std::string text = "ok \xfe\xff";
  CHECK_FALSE(TruncateUtf8(&text, 5));
  CHECK(text == "ok \xfe\xff");
  std::string bad_second = "a\xe0\x80";  // not a prefix of any character
  CHECK_FALSE(TruncateUtf8(&bad_second, 3));
  CHECK(bad_second == "a\xe0\x80");
}

TEST_CASE("truncation drops an incomplete character even under the cap") {
  std::string text = "a\xe2\x82";
  CHECK(TruncateUtf8(&text, 10));
  CHECK(text == "a");
}

}  // namespace
}  // namespace dex
