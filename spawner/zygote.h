// The zygote: one `python3 -I -u` interpreter, started once by the spawner,
// that forks a ready interpreter into each warm run's namespaces. It never
// runs a script itself and holds no secret; see README.md, "Warm sandboxes" for
// what its runs share.
#ifndef DEX_SPAWNER_ZYGOTE_H_
#define DEX_SPAWNER_ZYGOTE_H_

#include <linux/filter.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "libdex/spawn_protocol.h"
#include "spawner/unique_fd.h"

namespace dex::spawner {

// Not thread-safe; owned by the single-threaded spawner.
class Zygote {
 public:
  // Starts the interpreter with its socket on fd 3 and `helper_path`
  // (dex-zygote-helper.so) to load, hands it the seccomp filter and waits
  // (bounded) until it is ready. nullptr and `error` when it cannot
  // start. Call only from a single-threaded process.
  static std::unique_ptr<Zygote> Start(const std::string& python_path,
                                       const std::string& helper_path,
                                       const std::vector<sock_filter>& filter,
                                       std::string* error);
  // Closing the socket makes the zygote exit; the spawner's SIGCHLD
  // handling reaps it.
  ~Zygote() = default;

  // Asks for one pool entry's script process (fds in ZygoteFd order).
  // False when the zygote is gone.
  bool Send(const internal::ZygoteRequest& request,
            const int fds[internal::kZygoteFdCount]);

  pid_t pid() const { return pid_; }

 private:
  Zygote(pid_t pid, UniqueFd socket) : pid_(pid), socket_(std::move(socket)) {}

  pid_t pid_;
  UniqueFd socket_;
};

}  // namespace dex::spawner

#endif  // DEX_SPAWNER_ZYGOTE_H_
