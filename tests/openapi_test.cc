// Live answers against docs/openapi.json (the JSON twin of openapi.yaml,
// kept in step by openapi_sync_test): each answer's status is documented
// for its route, its content type is documented for that status, and its
// body has every required property with the documented type, enum and
// pattern. Also: the server answers no route or method the document lacks.
#include <doctest/doctest.h>
#include <rapidjson/document.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace dex::test {
namespace {

const rapidjson::Document& Spec() {
  static const rapidjson::Document* spec = [] {
    std::ifstream in(std::string(DEX_SOURCE_DIR) + "/docs/openapi.json");
    std::stringstream text;
    text << in.rdbuf();
    auto* doc = new rapidjson::Document;
    doc->Parse(text.str().c_str());
    return doc;
  }();
  return *spec;
}

// Follows "#/components/..." references.
const rapidjson::Value& Deref(const rapidjson::Value& v) {
  if (!v.IsObject() || !v.HasMember("$ref")) return v;
  std::string ref = v["$ref"].GetString();
  const rapidjson::Value* at = &Spec();
  std::stringstream parts(ref.substr(2));  // after "#/"
  for (std::string part; std::getline(parts, part, '/');) {
    REQUIRE_MESSAGE(at->HasMember(part.c_str()), ref);
    at = &(*at)[part.c_str()];
  }
  return Deref(*at);
}

bool HasType(const rapidjson::Value& value, const std::string& type) {
  if (type == "string") return value.IsString();
  if (type == "integer") return value.IsInt64() || value.IsUint64();
  if (type == "number") return value.IsNumber();
  if (type == "boolean") return value.IsBool();
  if (type == "object") return value.IsObject();
  if (type == "array") return value.IsArray();
  if (type == "null") return value.IsNull();
  return false;
}

// Problems of `value` against `schema`, each naming its JSON path.
void Check(const rapidjson::Value& schema_ref, const rapidjson::Value& value,
           const std::string& where, std::vector<std::string>* errors) {
  const rapidjson::Value& schema = Deref(schema_ref);
  if (schema.HasMember("oneOf")) {
    int matches = 0;
    for (const auto& branch : schema["oneOf"].GetArray()) {
      std::vector<std::string> branch_errors;
      Check(branch, value, where, &branch_errors);
      matches += branch_errors.empty();
    }
    if (matches != 1) errors->push_back(where + ": matches no oneOf branch");
    return;
  }
  if (schema.HasMember("type")) {
    const rapidjson::Value& type = schema["type"];
    bool ok = false;
    if (type.IsString()) ok = HasType(value, type.GetString());
    if (type.IsArray()) {
      for (const auto& t : type.GetArray()) ok |= HasType(value, t.GetString());
    }
    if (!ok) {
      errors->push_back(where + ": not of the documented type");
      return;
    }
  }
  if (schema.HasMember("enum")) {
    bool listed = false;
    for (const auto& e : schema["enum"].GetArray()) listed |= e == value;
    if (!listed) errors->push_back(where + ": value not in the enum");
  }
  if (schema.HasMember("pattern") && value.IsString() &&
      !std::regex_search(value.GetString(),
                         std::regex(schema["pattern"].GetString()))) {
    errors->push_back(where + ": does not match the pattern");
  }
  if (value.IsObject() && schema.HasMember("required")) {
    for (const auto& name : schema["required"].GetArray()) {
      if (!value.HasMember(name)) {
        errors->push_back(where + "." + name.GetString() + ": missing");
      }
    }
  }
  if (value.IsObject() && schema.HasMember("properties")) {
    const rapidjson::Value& properties = schema["properties"];
    for (const auto& member : value.GetObject()) {
      std::string name = member.name.GetString();
      if (properties.HasMember(member.name)) {
        Check(properties[member.name], member.value, where + "." + name,
              errors);
      }
    }
  }
  if (value.IsArray() && schema.HasMember("items")) {
    for (rapidjson::SizeType i = 0; i < value.Size(); ++i) {
      Check(schema["items"], value[i], where + "[" + std::to_string(i) + "]",
            errors);
    }
  }
}

// The document's path template matching a request path ("/status/x" ->
// "/status/{id}"), or "" when none does.
std::string Template(const std::string& path) {
  for (const auto& p : Spec()["paths"].GetObject()) {
    std::string t = p.name.GetString();
    size_t brace = t.find('{');
    if (brace == std::string::npos
            ? t == path
            : path.size() > brace && path.compare(0, brace, t, 0, brace) == 0 &&
                  path.find('/', brace) == std::string::npos) {
      return t;
    }
  }
  return "";
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(tolower(c));
  return s;
}

// Checks one live answer against the document; returns it for the
// caller's own checks.
HttpReply Conforms(int port, const std::string& method,
                   const std::string& target, const std::string& key = "",
                   const std::string& body = "",
                   const std::map<std::string, std::string>& headers = {}) {
  HttpReply reply = Http(port, method, target, key, body, headers);
  std::string path = target.substr(0, target.find('?'));
  std::string where =
      method + " " + target + " -> " + std::to_string(reply.status);
  INFO(where);
  INFO(reply.body);
  std::string tmpl = Template(path);
  REQUIRE_MESSAGE(!tmpl.empty(), "no documented path");
  const rapidjson::Value& item = Spec()["paths"][tmpl.c_str()];
  std::string status = std::to_string(reply.status);
  // A 405 is documented on the path's operations, not the missing one.
  const rapidjson::Value* responses = nullptr;
  for (const auto& op : item.GetObject()) {
    if (!op.value.IsObject() || !op.value.HasMember("responses")) continue;
    bool same = Lower(method) == op.name.GetString();
    if (same || (reply.status == 405 &&
                 op.value["responses"].HasMember(status.c_str()))) {
      responses = &op.value["responses"];
      if (same) break;
    }
  }
  REQUIRE_MESSAGE(responses != nullptr, "method not documented");
  REQUIRE_MESSAGE(responses->HasMember(status.c_str()),
                  "status not documented for the route");
  const rapidjson::Value& response = Deref((*responses)[status.c_str()]);
  std::string type = reply.Header("content-type");
  type = type.substr(0, type.find(';'));
  REQUIRE_MESSAGE(response.HasMember("content"), "no content documented");
  REQUIRE_MESSAGE(response["content"].HasMember(type.c_str()),
                  (std::string("content type ") + type + " not documented"));
  rapidjson::Document doc;
  doc.Parse(reply.body.c_str());
  REQUIRE_MESSAGE(!doc.HasParseError(), "body is not JSON");
  std::vector<std::string> errors;
  Check(response["content"][type.c_str()]["schema"], doc, "$", &errors);
  for (const std::string& e : errors) FAIL_CHECK(e);
  return reply;
}

std::string Field(const HttpReply& reply, const char* name) {
  rapidjson::Document doc;
  doc.Parse(reply.body.c_str());
  return doc.IsObject() && doc.HasMember(name) && doc[name].IsString()
             ? doc[name].GetString()
             : "";
}

struct ApiFixture {
  TempDir dir;
  std::string key = CreateUser(dir.path(), "starter");
  ShimServer shim{dir.path()};
  int port = shim.port();
};

TEST_CASE("the document parses and lists the design's routes") {
  REQUIRE(Spec().IsObject());
  for (const char* path : {"/me", "/apikey", "/apikey/{id}", "/run",
                           "/status/{id}", "/result/{id}", "/healthz"}) {
    CHECK_MESSAGE(Spec()["paths"].HasMember(path), path);
  }
}

TEST_CASE_FIXTURE(ApiFixture, "account, health and key answers conform") {
  REQUIRE(shim.started());
  Conforms(port, "GET", "/healthz");
  Conforms(port, "GET", "/me", key);
  Conforms(port, "GET", "/me");
  Conforms(port, "GET", "/me", "dex_live_bogus");
  Conforms(port, "POST", "/me", key);
  Conforms(port, "GET", "/apikey", key);
  HttpReply minted =
      Conforms(port, "POST", "/apikey", key, R"({"name": "ci"})");
  CHECK(minted.status == 201);
  Conforms(port, "POST", "/apikey", key, R"({"name": ""})");
  Conforms(port, "POST", "/apikey", key, R"({"name": )");
  Conforms(port, "POST", "/apikey", key, "x", {{"Content-Type", "text/plain"}});
  Conforms(port, "POST", "/apikey", key, std::string(3u << 20, ' '));
  std::string id = Field(minted, "id");
  CHECK(Conforms(port, "DELETE", "/apikey/" + id, key).status == 200);
  Conforms(port, "DELETE", "/apikey/key_nosuchkey", key);
  Conforms(port, "GET", "/apikey/" + id, key);
  // The caller's last active key.
  HttpReply keys = Http(port, "GET", "/apikey", key);
  rapidjson::Document doc;
  doc.Parse(keys.body.c_str());
  for (const auto& k : doc["keys"].GetArray()) {
    if (std::string(k["status"].GetString()) == "active") {
      CHECK(Conforms(port, "DELETE",
                     std::string("/apikey/") + k["id"].GetString(), key)
                .status == 409);
    }
  }
}

TEST_CASE_FIXTURE(ApiFixture, "run, status and result answers conform") {
  REQUIRE(shim.started());
  HttpReply queued = Conforms(port, "POST", "/run", key,
                              R"j({"script": "import time; time.sleep(1)"})j");
  CHECK(queued.status == 202);
  std::string id = Field(queued, "execution_id");
  Conforms(port, "GET", "/status/" + id, key);
  CHECK(Conforms(port, "GET", "/result/" + id, key).status == 409);
  Conforms(port, "GET", "/result/" + id + "?encoding=latin1", key);
  HttpReply done = Conforms(port, "POST", "/run?wait=true", key,
                            R"j({"script": "print('hello')"})j");
  CHECK(done.status == 200);
  std::string done_id = Field(done, "execution_id");
  Conforms(port, "GET", "/result/" + done_id, key);
  Conforms(port, "GET", "/result/" + done_id + "?encoding=base64", key);
  Conforms(port, "GET", "/status/exec_nosuchrun", key);
  Conforms(port, "GET", "/result/exec_nosuchrun", key);
  Conforms(port, "POST", "/run", key, R"({"script": "1", "limits": {}})");
  Conforms(port, "POST", "/run", key,
           R"({"script": "1", "limits": {"wall_ms": 0}})");
  Conforms(port, "POST", "/run", key, R"({"scrpt": "1"})");
  std::map<std::string, std::string> idem = {{"Idempotency-Key", "k1"}};
  CHECK(
      Conforms(port, "POST", "/run", key, R"({"script": "1"})", idem).status ==
      202);
  CHECK(
      Conforms(port, "POST", "/run", key, R"({"script": "2"})", idem).status ==
      422);
  Conforms(port, "PUT", "/run", key, R"({"script": "1"})");
}

// Found by fuzz/json_fuzz: RapidJSON decoded "\udd8e" into bytes that are
// not UTF-8, and the run was queued and charged.
TEST_CASE_FIXTURE(ApiFixture,
                  "regression: an unpaired surrogate escape is invalid_json") {
  REQUIRE(shim.started());
  for (const char* body : {R"j({"script": "print('\udd8e')"})j",
                           R"({"script": "1", "x\udc00": 1})",
                           R"j({"script": "print('\ud83d')"})j"}) {
    HttpReply r = Conforms(port, "POST", "/run", key, body);
    CHECK(r.status == 400);
    CHECK(Field(r, "code") == "invalid_json");
  }
  HttpReply me = Http(port, "GET", "/me", key);
  CHECK(me.body.find("\"usage_this_period\":0") != std::string::npos);
}

// Found by fuzz/json_fuzz: RapidJSON read 1e400 as infinity, which the
// canonical writer (idempotency fingerprints) cannot write back.
TEST_CASE_FIXTURE(ApiFixture, "regression: a number beyond double is refused") {
  REQUIRE(shim.started());
  for (const char* body : {R"({"script": "1", "limits": {"wall_ms": 1e400}})",
                           R"({"script": "1", "b": 6665e0306})", "-1e999"}) {
    HttpReply r = Conforms(port, "POST", "/run", key, body);
    CHECK(r.status == 400);
    CHECK(Field(r, "code") == "invalid_json");
  }
}

// Found by fuzz/json_fuzz under ASan: a body ending inside a UTF-8
// sequence made RapidJSON read past the end of the buffer.
TEST_CASE_FIXTURE(ApiFixture,
                  "regression: a body ending mid UTF-8 sequence is refused") {
  REQUIRE(shim.started());
  for (std::string body :
       {"{\"<<<<\xed", "{\"script\": \"\xf0\x9f", "\"\xe2"}) {
    HttpReply r = Conforms(port, "POST", "/run", key, body);
    CHECK(r.status == 400);
    CHECK(Field(r, "code") == "invalid_json");
  }
}

TEST_CASE("quota answers conform") {
  TempDir dir;
  REQUIRE(RunShim({"plan", "set", "--data", dir.path(), "one", "--quota", "1"})
              .exit_code == 0);
  REQUIRE(RunShim({"plan", "set", "--data", dir.path(), "none", "--quota", "0"})
              .exit_code == 0);
  std::string one = CreateUser(dir.path(), "one");
  std::string none = CreateUser(dir.path(), "none");
  ShimServer shim(dir.path());
  REQUIRE(shim.started());
  std::string run = R"({"script": "1"})";
  CHECK(Conforms(shim.port(), "POST", "/run", one, run).status == 202);
  CHECK(Conforms(shim.port(), "POST", "/run", one, run).status == 429);
  CHECK(Conforms(shim.port(), "POST", "/run", none, run).status == 402);
}

TEST_CASE_FIXTURE(ApiFixture, "the server answers nothing undocumented") {
  REQUIRE(shim.started());
  // Paths the document lacks are unknown routes.
  for (const char* path :
       {"/", "/metrics", "/openapi.json", "/docs", "/admin", "/users",
        "/v1/run", "/run/x", "/apikey/a/b", "/status", "/result/", "/me/"}) {
    HttpReply r = Http(port, "GET", path, key);
    CHECK_MESSAGE(r.status == 404, path);
    CHECK_MESSAGE(Field(r, "code") == "not_found", path);
  }
  // Methods the document lacks on a documented path answer 405.
  const char* methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
  for (const auto& p : Spec()["paths"].GetObject()) {
    std::string path = p.name.GetString();
    size_t brace = path.find('{');
    if (brace != std::string::npos) path = path.substr(0, brace) + "x_1";
    for (const char* method : methods) {
      if (p.value.HasMember(Lower(method).c_str())) continue;
      HttpReply r = Http(port, method, path, key, "{}");
      std::string what = std::string(method) + " " + path;
      CHECK_MESSAGE(r.status == 405, what);
    }
  }
}

}  // namespace
}  // namespace dex::test
