#include "shim/listener.h"

#include <fmt/format.h>
#include <httplib.h>

#include <chrono>
#include <thread>

namespace dex::shim {

Result<int> BindListener(httplib::Server& server, const std::string& host,
                         int port, std::string_view what) {
  int bound = port;
  if (port == 0) {
    bound = server.bind_to_any_port(host);
  } else if (!server.bind_to_port(host, port)) {
    bound = -1;
  }
  if (bound <= 0) {
    return Status(
        Category::kUnavailable, "unavailable",
        fmt::format("{} {}:{}: address in use or invalid", what, host, port));
  }
  return bound;
}

Status AwaitAcceptLoop(httplib::Server& server, std::string_view what) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!server.is_running()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return Status(
          Category::kInternal, "internal_error",
          fmt::format("starting {}: accept loop did not start", what));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return Status::Ok();
}

}  // namespace dex::shim
