#include "shim/config.h"

#include <fmt/format.h>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "dex/sandbox.h"

namespace dex::shim {
namespace {

// Config files are small; anything bigger is a mistake.
constexpr std::streamsize kMaxConfigBytes = 1 << 20;

Status ConfigError(const std::string& path, std::string_view why) {
  return Status(Category::kInvalidArgument, "usage",
                fmt::format("--config {}: {}", SanitizeUtf8(path), why));
}

// The flag a member names: "log_level" -> "--log-level".
std::string FlagName(std::string_view member) {
  std::string flag = "--" + std::string(member);
  std::replace(flag.begin(), flag.end(), '_', '-');
  return flag;
}

// A member's value as the command line would spell it.
bool FlagValue(const rapidjson::Value& value, std::string* out) {
  if (value.IsString()) {
    *out = std::string(value.GetString(), value.GetStringLength());
  } else if (value.IsInt64()) {
    *out = std::to_string(value.GetInt64());
  } else if (value.IsUint64()) {
    *out = std::to_string(value.GetUint64());
  } else if (value.IsBool()) {
    *out = value.GetBool() ? "true" : "false";
  } else {
    return false;
  }
  return true;
}

}  // namespace

Status MergeConfigFile(const std::string& path,
                       const std::vector<std::string_view>& allowed,
                       Flags* flags) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ConfigError(path, "cannot be read");
  std::string text(kMaxConfigBytes + 1, '\0');
  in.read(text.data(), kMaxConfigBytes + 1);
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > static_cast<size_t>(kMaxConfigBytes)) {
    return ConfigError(path, "is larger than 1 MiB");
  }
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
  if (doc.HasParseError()) {
    return ConfigError(
        path, fmt::format("invalid JSON at byte {}: {}", doc.GetErrorOffset(),
                          rapidjson::GetParseError_En(doc.GetParseError())));
  }
  if (!doc.IsObject()) return ConfigError(path, "must be a JSON object");
  for (const auto& member : doc.GetObject()) {
    std::string_view name(member.name.GetString(),
                          member.name.GetStringLength());
    std::string flag = FlagName(name);
    bool known = flag != "--config" && std::find(allowed.begin(), allowed.end(),
                                                 flag) != allowed.end();
    if (!known) {
      return ConfigError(path, fmt::format("unknown setting \"{}\" for this "
                                           "command",
                                           SanitizeUtf8(name)));
    }
    std::string value;
    if (!FlagValue(member.value, &value)) {
      return ConfigError(path, fmt::format("\"{}\" must be a string, an "
                                           "integer or a boolean",
                                           SanitizeUtf8(name)));
    }
    if (!flags->Has(flag)) flags->values[flag] = std::move(value);
  }
  return Status::Ok();
}

}  // namespace dex::shim
