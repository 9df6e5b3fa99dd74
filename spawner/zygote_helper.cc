// dex-zygote-helper.so: the zygote's loop, in C++, loaded into the
// zygote's interpreter with ctypes (see zygote.cc). The interpreter calls
// dex_zygote_serve() once, holding its GIL; the call returns only in a
// script process, fully set up for its run, which then reinitialises the
// interpreter after the fork (PyOS_AfterFork_Child) and runs the script.
//
// Doing this loop and the script process's set-up here rather than in
// Python keeps the interpreter's objects untouched between the zygote's
// start and the script: each run copies only the pages its script writes.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <unordered_map>
#include <vector>

#include "libdex/fd_passing.h"
#include "libdex/spawn_protocol.h"
#include "spawner/script_process.h"
#include "spawner/unique_fd.h"

namespace dex::spawner {
namespace {

using internal::kZygoteFdCount;
using internal::ZygoteRequest;

// The namespaces a script process joins through its init's pidfd; its pid
// namespace it entered by being forked there.
constexpr int kJoinNamespaces = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET |
                                CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;

void SetName(const char* name) {
  prctl(PR_SET_NAME, reinterpret_cast<unsigned long>(name), 0, 0, 0);
}

bool ReadByte(int fd, char expected) {
  char c = 0;
  ssize_t n;
  do {
    n = read(fd, &c, 1);
  } while (n < 0 && errno == EINTR);
  return n == 1 && c == expected;
}

// A script process, from the zygote's fork to its run's start. Returns
// only when the run may start; anything else ends the process with 126
// (or 0 when its pool entry was closed unused).
void BecomeScriptProcess(const int fds[kZygoteFdCount],
                         const sock_fprog* seccomp) {
  int pidfd = fds[internal::kZygotePidfd];
  int link = fds[internal::kZygoteLinkFd];
  int go = fds[internal::kZygoteGoFd];
  CloseAllExcept({pidfd, link, go});
  signal(SIGCHLD, SIG_DFL);

  // The entry's init has finished the new root once it writes 'r'. Then
  // join its namespaces as root of its user namespace: while it waits,
  // the host sees the entry's own root id, never the zygote's.
  if (!ReadByte(link, 'r') || setns(pidfd, kJoinNamespaces) < 0 ||
      setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) {
    _exit(126);
  }
  close(pidfd);
  SetName("dex-idle");
  int32_t pid = getpid();
  if (write(link, &pid, sizeof(pid)) != sizeof(pid)) _exit(126);

  // The run: its limits and stdio. End of file: the pool shrank.
  ZygoteRequest run = {};
  int stdio[internal::kScriptGoFdCount];
  size_t count = 0;
  ssize_t n = internal::ReceiveWithFds(go, &run, sizeof(run), stdio,
                                       internal::kScriptGoFdCount, &count);
  if (n != sizeof(run) || count != internal::kScriptGoFdCount ||
      run.magic != internal::kZygoteMagic) {
    _exit(0);
  }
  close(go);

  ScriptLimits limits = {static_cast<rlim_t>(run.processes),
                         static_cast<rlim_t>(run.cpu_seconds),
                         static_cast<rlim_t>(run.open_files),
                         static_cast<rlim_t>(run.file_size_bytes)};
  // Without exec, a changed uid leaves the process undumpable, its /proc
  // files root's: dumpable again, as after the exec of a cold run.
  if (!DropToScriptUser(limits) || prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0 ||
      !CheckNoCapabilities() ||
      !TakeStdio(stdio[internal::kScriptStdinFd],
                 stdio[internal::kScriptStdoutFd],
                 stdio[internal::kScriptStderrFd])) {
    _exit(126);
  }
  SetName("python3");
  // /work is this run's once init has sized it and written main.py. Init
  // counts the run's script as started only once told so: an end before
  // that is a set-up failure, not the script's exit.
  if (!ReadByte(link, 'g') || !SealScriptProcess(seccomp, link) ||
      write(link, &internal::kScriptStarted, 1) != 1) {
    _exit(126);
  }
  close(link);
}

class ZygoteLoop {
 public:
  ZygoteLoop(int socket, std::vector<char> filter, int own_pid_ns,
             int signal_fd)
      : socket_(socket),
        filter_(std::move(filter)),
        program_{
            static_cast<unsigned short>(filter_.size() / sizeof(sock_filter)),
            reinterpret_cast<sock_filter*>(filter_.data())},
        own_pid_ns_(own_pid_ns),
        signal_fd_(signal_fd) {}

  // Serves until the spawner closes the socket (then exits) or a fork's
  // child is a script process ready to run (then returns).
  void Serve() {
    for (;;) {
      pollfd fds[2] = {{socket_, POLLIN, 0}, {signal_fd_.get(), POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents != 0) Reap();
      if (fds[0].revents != 0 && ForkOne()) return;
    }
  }

 private:
  // One pool entry's script process. True in that process.
  bool ForkOne() {
    ZygoteRequest request = {};
    int fds[kZygoteFdCount];
    size_t count = 0;
    ssize_t n = internal::ReceiveWithFds(socket_, &request, sizeof(request),
                                         fds, kZygoteFdCount, &count);
    if (n == 0) _exit(0);  // the spawner is gone
    if (n != sizeof(request) || count != kZygoteFdCount ||
        request.magic != internal::kZygoteMagic ||
        setns(fds[internal::kZygotePidfd], CLONE_NEWPID) < 0) {
      for (size_t i = 0; i < count; ++i) close(fds[i]);
      return false;
    }
    pid_t pid = fork();
    if (pid == 0) {
      BecomeScriptProcess(fds, &program_);
      return true;
    }
    setns(own_pid_ns_.get(), CLONE_NEWPID);
    if (pid > 0) {
      links_[pid] = fcntl(fds[internal::kZygoteLinkFd], F_DUPFD_CLOEXEC, 0);
    }
    for (int fd : fds) close(fd);
    return false;
  }

  // Reaps every child; tells each one's init how it ended.
  void Reap() {
    signalfd_siginfo info;
    while (read(signal_fd_.get(), &info, sizeof(info)) == sizeof(info)) {
    }
    for (;;) {
      int status = 0;
      rusage usage = {};
      pid_t pid = wait4(-1, &status, WNOHANG | __WALL, &usage);
      if (pid <= 0) return;
      auto it = links_.find(pid);
      if (it == links_.end()) continue;
      internal::ScriptExit exit = {};
      exit.magic = internal::kScriptExitMagic;
      exit.wait_status = status;
      exit.cpu_us =
          (int64_t{usage.ru_utime.tv_sec} + usage.ru_stime.tv_sec) * 1'000'000 +
          usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
      exit.max_rss_kb = usage.ru_maxrss;
      // The init may be gone already; nothing waits on this then.
      send(it->second, &exit, sizeof(exit), MSG_NOSIGNAL | MSG_DONTWAIT);
      close(it->second);
      links_.erase(it);
    }
  }

  int socket_;
  std::vector<char> filter_;
  sock_fprog program_;
  UniqueFd own_pid_ns_;
  UniqueFd signal_fd_;
  std::unordered_map<pid_t, int> links_;  // child -> its init's link
};

}  // namespace
}  // namespace dex::spawner

// Receives the seccomp filter on `socket`, answers 'R' and serves. Returns
// 0 in a script process ready to run its script; exits otherwise.
extern "C" [[gnu::visibility("default")]] int dex_zygote_serve(int socket) {
  using dex::spawner::UniqueFd;
  std::vector<char> filter(1 << 20);
  ssize_t n = recv(socket, filter.data(), filter.size(), 0);
  if (n <= 0 || n % sizeof(sock_filter) != 0) _exit(126);
  filter.resize(static_cast<size_t>(n));
  UniqueFd own_pid_ns(open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC));
  // Children are reaped through a signalfd; SIGCHLD stays blocked in the
  // zygote (each script process restores the default mask).
  sigset_t child;
  sigemptyset(&child);
  sigaddset(&child, SIGCHLD);
  sigprocmask(SIG_BLOCK, &child, nullptr);
  UniqueFd signal_fd(signalfd(-1, &child, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!own_pid_ns.valid() || !signal_fd.valid() ||
      send(socket, "R", 1, MSG_NOSIGNAL) != 1) {
    _exit(126);
  }
  // Leaked on purpose: the zygote never returns from here but as a script
  // process, which keeps only what BecomeScriptProcess kept.
  auto* zygote = new dex::spawner::ZygoteLoop(
      socket, std::move(filter), own_pid_ns.Release(), signal_fd.Release());
  zygote->Serve();
  return 0;
}
