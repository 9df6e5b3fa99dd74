#include "spawner/script_process.h"

#include <fcntl.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

namespace dex::spawner {
namespace {

bool SetLimit(int resource, rlim_t soft, rlim_t hard) {
  rlimit limit = {soft, hard};
  return setrlimit(resource, &limit) == 0;
}

// The hexadecimal value after `field` in a /proc status text, or -1.
long long HexField(const char* text, const char* field) {
  const char* at = strstr(text, field);
  if (at == nullptr) return -1;
  return strtoll(at + strlen(field), nullptr, 16);
}

}  // namespace

bool DropToScriptUser(const ScriptLimits& limits) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  setsid();

  // RLIMIT_CPU is a per-process backstop only; init enforces the summed
  // limit. RLIMIT_AS stays unset: it breaks threads (see SANDBOX-NOTES).
  // A limit above the hard one the process holds is refused; it then
  // keeps the lower one.
  SetLimit(RLIMIT_NPROC, limits.processes, limits.processes);
  SetLimit(RLIMIT_NOFILE, limits.open_files, limits.open_files);
  SetLimit(RLIMIT_FSIZE, limits.file_size, limits.file_size);
  SetLimit(RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1);
  SetLimit(RLIMIT_CORE, 0, 0);

  return setresgid(kScriptId, kScriptId, kScriptId) == 0 &&
         setresuid(kScriptId, kScriptId, kScriptId) == 0;
}

bool CheckNoCapabilities() {
  char text[4096];
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, text, sizeof(text) - 1);
  close(fd);
  if (n <= 0) return false;
  text[n] = '\0';
  return HexField(text, "\nCapPrm:") == 0 && HexField(text, "\nCapEff:") == 0 &&
         HexField(text, "\nCapAmb:") == 0;
}

bool TakeStdio(int stdin_fd, int stdout_fd, int stderr_fd) {
  return dup2(stdin_fd, 0) == 0 && dup2(stdout_fd, 1) == 1 &&
         dup2(stderr_fd, 2) == 2;
}

bool SealScriptProcess(const sock_fprog* seccomp, int keep) {
  if (keep >= 0) {
    CloseAllExcept({keep});
  } else {
    syscall(SYS_close_range, 3u, ~0u, 0u);
  }
  if (chdir("/work") < 0) return false;

  // no_new_privs must precede an unprivileged seccomp load.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return false;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, seccomp) == 0;
}

void CloseAllExcept(std::vector<int> keep) {
  std::sort(keep.begin(), keep.end());
  unsigned first = 3;
  for (int fd : keep) {
    if (fd < static_cast<int>(first)) continue;
    if (static_cast<unsigned>(fd) > first) {
      syscall(SYS_close_range, first, static_cast<unsigned>(fd) - 1, 0u);
    }
    first = static_cast<unsigned>(fd) + 1;
  }
  syscall(SYS_close_range, first, ~0u, 0u);
}

}  // namespace dex::spawner
