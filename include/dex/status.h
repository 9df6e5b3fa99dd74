// Status and Result: errors cross every dex layer as values.
//
// A Status is ok, or a Category (a small fixed set), a stable machine code
// callers may branch on ("quota_exceeded", "last_active_key") and a
// "what we were doing: why" message. Safe to copy and share between threads.
#ifndef DEX_STATUS_H_
#define DEX_STATUS_H_

#include <optional>
#include <string>
#include <utility>

#include "dex/export.h"

namespace dex {

enum class Category {
  kOk,
  kInvalidArgument,
  kUnauthenticated,
  kNotFound,
  kResourceExhausted,
  kDeadlineExceeded,
  kFailedPrecondition,
  kUnavailable,
  kInternal,
};

class [[nodiscard]] DEX_EXPORT Status {
 public:
  Status() = default;
  Status(Category category, std::string code, std::string message);

  static Status Ok() { return Status(); }
  // An error whose code is the category's default ("invalid_request" for
  // kInvalidArgument, "internal_error" for kInternal, ...).
  static Status Error(Category category, std::string message);
  // "context: strerror(err)" with category kInternal unless given.
  static Status FromErrno(std::string context, int err,
                          Category category = Category::kInternal);

  bool ok() const { return category_ == Category::kOk; }
  Category category() const { return category_; }
  const std::string& code() const { return code_; }
  const std::string& message() const { return message_; }
  // "code: message", or "ok".
  std::string ToString() const;
  // The same error with "context: " put before the message.
  Status WithContext(const std::string& context) const;

 private:
  Category category_ = Category::kOk;
  std::string code_;
  std::string message_;
};

// A value or the Status saying why there is none. REQUIRES for value():
// ok() is true.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {}  // NOLINT

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T&& operator*() && { return std::move(*value_); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace dex

// Returns early from the enclosing function when `expr` is an error.
#define DEX_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::dex::Status dex_status_ = (expr);        \
    if (!dex_status_.ok()) return dex_status_; \
  } while (0)

#endif  // DEX_STATUS_H_
