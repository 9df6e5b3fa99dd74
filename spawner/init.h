// The run's init: pid 1 of the sandbox's pid namespace. It builds the new
// root, starts the script, watches memory and CPU, and when the script exits
// kills and reaps everything before reporting on the status pipe.
#ifndef DEX_SPAWNER_INIT_H_
#define DEX_SPAWNER_INIT_H_

#include <linux/filter.h>

#include "libdex/spawn_protocol.h"

namespace dex::spawner {

struct InitArgs {
  const internal::SpawnRequest* request;  // borrowed, lives in the spawner
  int fds[internal::kSpawnFdCount];       // owned by init
  int sync_fd;                // read end: one byte once the id maps are written
  const sock_fprog* seccomp;  // precompiled, borrowed
};

// The fixed environment of every script (and of the zygote).
extern char* const* const kScriptEnvironment;

// Runs in the child of clone(), never returns.
[[noreturn]] void RunInit(const InitArgs& args);

// A pre-built init (warm runs): runs in the child of clone(). Once the
// spawner has mapped its ids (one byte on `go_fd`) it builds the whole root
// and lets the zygote fork the script process into its namespaces
// (`link_fd`, see spawn_protocol.h); then it waits on `go_fd` for its run.
// Exits quietly, taking its namespaces down, when the socket ends unused.
[[noreturn]] void RunWarmInit(int go_fd, int link_fd);

}  // namespace dex::spawner

#endif  // DEX_SPAWNER_INIT_H_
