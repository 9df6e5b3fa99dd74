// JSON helpers for tests that read the server's answers: each REQUIREs
// what it reads, so a wrong shape fails the test at the line that read it.
// Include after doctest.
#ifndef DEX_TESTS_JSON_CHECK_H_
#define DEX_TESTS_JSON_CHECK_H_

#include <doctest/doctest.h>
#include <rapidjson/document.h>

#include <cstdint>
#include <string>

namespace dex::test {

inline rapidjson::Document Json(const std::string& text) {
  rapidjson::Document doc;
  doc.Parse(text.c_str(), text.size());
  REQUIRE_MESSAGE(!doc.HasParseError(), "not JSON: " << text.substr(0, 200));
  return doc;
}

// The string member `name`, byte for byte (NULs included).
inline std::string Str(const rapidjson::Value& doc, const char* name) {
  REQUIRE_MESSAGE(doc.IsObject(), "not an object");
  REQUIRE_MESSAGE(doc.HasMember(name), "missing " << name);
  REQUIRE_MESSAGE(doc[name].IsString(), name << " is not a string");
  return std::string(doc[name].GetString(), doc[name].GetStringLength());
}

inline int64_t Int(const rapidjson::Value& doc, const char* name) {
  REQUIRE_MESSAGE(doc.IsObject(), "not an object");
  REQUIRE_MESSAGE(doc.HasMember(name), "missing " << name);
  REQUIRE_MESSAGE(doc[name].IsInt64(), name << " is not an integer");
  return doc[name].GetInt64();
}

}  // namespace dex::test

#endif  // DEX_TESTS_JSON_CHECK_H_
