// The steps every script process takes before its interpreter runs the
// script, cold (init's child, then exec) or warm (the zygote's child, then
// back to the interpreter it already is). Both call them in this order:
//   DropToScriptUser, [warm: CheckNoCapabilities], TakeStdio,
//   SealScriptProcess.
// Each returns false on failure; the caller then exits 126. Only
// CloseAllExcept allocates.
#ifndef DEX_SPAWNER_SCRIPT_PROCESS_H_
#define DEX_SPAWNER_SCRIPT_PROCESS_H_

#include <linux/filter.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <vector>

namespace dex::spawner {

inline constexpr uid_t kScriptId = 1000;

struct ScriptLimits {
  rlim_t processes;    // RLIMIT_NPROC
  rlim_t cpu_seconds;  // RLIMIT_CPU soft; hard is one more
  rlim_t open_files;   // RLIMIT_NOFILE
  rlim_t file_size;    // RLIMIT_FSIZE, bytes
};

// Default signal mask, a session of its own, the run's rlimits (core dumps
// off), then uid/gid 1000: leaving the user namespace's root clears every
// capability.
bool DropToScriptUser(const ScriptLimits& limits);

// CapPrm, CapEff and CapAmb of /proc/self/status are all zero.
bool CheckNoCapabilities();

// The run's pipes as fds 0, 1 and 2.
bool TakeStdio(int stdin_fd, int stdout_fd, int stderr_fd);

// Every fd above 2 closed but `keep` (-1 for none), /work the working
// directory, then no_new_privs and the seccomp filter, last, so that
// nothing above runs under it.
bool SealScriptProcess(const sock_fprog* seccomp, int keep = -1);

// Closes every fd from 3 up except those in `keep`.
void CloseAllExcept(std::vector<int> keep);

}  // namespace dex::spawner

#endif  // DEX_SPAWNER_SCRIPT_PROCESS_H_
