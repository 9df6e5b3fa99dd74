#include "dex/status.h"

#include <cstring>

namespace dex {
namespace {

const char* DefaultCode(Category category) {
  switch (category) {
    case Category::kOk:
      return "";
    case Category::kInvalidArgument:
      return "invalid_request";
    case Category::kUnauthenticated:
      return "invalid_token";
    case Category::kNotFound:
      return "not_found";
    case Category::kResourceExhausted:
      return "quota_exceeded";
    case Category::kDeadlineExceeded:
      return "deadline_exceeded";
    case Category::kFailedPrecondition:
      return "failed_precondition";
    case Category::kUnavailable:
      return "unavailable";
    case Category::kInternal:
      return "internal_error";
  }
  return "internal_error";
}

}  // namespace

Status::Status(Category category, std::string code, std::string message)
    : category_(category),
      code_(std::move(code)),
      message_(std::move(message)) {
  if (code_.empty()) code_ = DefaultCode(category_);
}

Status Status::Error(Category category, std::string message) {
  return Status(category, DefaultCode(category), std::move(message));
}

Status Status::FromErrno(std::string context, int err, Category category) {
  return Status(category, DefaultCode(category),
                context + ": " + std::strerror(err));
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return code_ + ": " + message_;
}

Status Status::WithContext(const std::string& context) const {
  if (ok()) return *this;
  return Status(category_, code_, context + ": " + message_);
}

}  // namespace dex
