// dex-spawner: the single-threaded helper that starts sandboxes.
//
// Started by libdex with posix_spawn, the socket to the library on fd 3 and
// nothing else open but stderr. It serves one request at a time: clone the
// run's init into fresh namespaces, write its id maps, release it, and reply
// with a pidfd. It reaps inits as they exit and ends when the library closes
// the socket.
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "libdex/spawn_protocol.h"
#include "spawner/init.h"
#include "spawner/seccomp_policy.h"
#include "spawner/unique_fd.h"

namespace dex::spawner {
namespace {

using internal::kSpawnFdCount;
using internal::SpawnReply;
using internal::SpawnRequest;

constexpr int kSocketFd = 3;

constexpr uint64_t kNamespaces = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS |
                                 CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS |
                                 CLONE_NEWCGROUP;

struct Received {
  SpawnRequest request;
  std::vector<UniqueFd> fds;
};

std::string ErrnoText(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

// One request. False at end of file or on a broken socket.
bool ReceiveRequest(Received* received) {
  char control[CMSG_SPACE(sizeof(int) * kSpawnFdCount)];
  iovec iov = {&received->request, sizeof(received->request)};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(kSocketFd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  received->fds.clear();
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr;
       c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      received->fds.emplace_back(fd);
    }
  }
  if (n != sizeof(SpawnRequest)) received->fds.clear();
  return true;
}

void SendReply(const SpawnReply& reply, int pidfd) {
  char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov = {const_cast<SpawnReply*>(&reply), sizeof(reply)};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (pidfd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pidfd, sizeof(int));
  }
  while (sendmsg(kSocketFd, &msg, MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

SpawnReply ErrorReply(const std::string& error) {
  SpawnReply reply = {};
  snprintf(reply.error, sizeof(reply.error), "%s", error.c_str());
  return reply;
}

bool WriteFile(const std::string& path, const std::string& text) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return false;
  return write(fd.get(), text.data(), text.size()) ==
         static_cast<ssize_t>(text.size());
}

// Sandbox root (0) and user (1000) map to the run's own host ids; nothing
// else is mapped, so every other host id shows as the overflow id.
bool WriteIdMaps(pid_t pid, const SpawnRequest& request, std::string* error) {
  std::string dir = "/proc/" + std::to_string(pid) + "/";
  std::string root = std::to_string(request.host_root_id);
  std::string user = std::to_string(request.host_user_id);
  std::string map = "0 " + root + " 1\n1000 " + user + " 1\n";
  if (!WriteFile(dir + "uid_map", map)) {
    *error = ErrnoText("write uid_map");
    return false;
  }
  if (!WriteFile(dir + "setgroups", "deny") ||
      !WriteFile(dir + "gid_map", map)) {
    *error = ErrnoText("write gid_map");
    return false;
  }
  return true;
}

bool ValidRequest(const Received& received) {
  const SpawnRequest& r = received.request;
  return received.fds.size() == kSpawnFdCount &&
         r.magic == internal::kSpawnMagic &&
         r.python_path[sizeof(r.python_path) - 1] == '\0' &&
         r.python_path[0] == '/' && r.cpu_ms > 0 && r.memory_kb > 0 &&
         r.processes > 0 && r.tmpfs_kb > 0 && r.script_bytes >= 0;
}

class Spawner {
 public:
  Spawner(int signal_fd, const sock_fprog* seccomp)
      : signal_fd_(signal_fd), seccomp_(seccomp) {}

  // Starts one run's init; replies to the library either way.
  void Serve(Received* received) {
    if (!ValidRequest(*received)) {
      SendReply(ErrorReply("spawner: malformed request"), -1);
      return;
    }
    UniqueFd pidfd;
    SpawnReply reply = {};
    std::string error;
    pid_t pid = StartInit(received, &pidfd, &error);
    if (pid < 0) {
      SendReply(ErrorReply(error), -1);
      return;
    }
    reply.ok = 1;
    reply.pid = pid;
    SendReply(reply, pidfd.get());
  }

 private:
  pid_t StartInit(Received* received, UniqueFd* pidfd, std::string* error) {
    int sync[2];
    if (pipe2(sync, O_CLOEXEC) < 0) {
      *error = ErrnoText("spawner: pipe");
      return -1;
    }
    UniqueFd sync_read(sync[0]), sync_write(sync[1]);
    int pidfd_raw = -1;
    clone_args args = {};
    args.flags = kNamespaces | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<uint64_t>(&pidfd_raw);
    args.exit_signal = SIGCHLD;
    // The spawner is single-threaded, so a fork-like clone3 (no new stack)
    // leaves the child a consistent heap.
    long pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid < 0) {
      *error = ErrnoText("spawner: clone3");
      return -1;
    }
    if (pid == 0) RunChild(received, sync_read.Release());
    pidfd->Reset(pidfd_raw);
    sync_read.Reset();
    if (!WriteIdMaps(pid, received->request, error)) {
      // Closing the sync pipe unwritten makes the child exit.
      return -1;
    }
    char go = 1;
    if (write(sync_write.get(), &go, 1) != 1) {
      *error = ErrnoText("spawner: release init");
      return -1;
    }
    return pid;
  }

  [[noreturn]] void RunChild(Received* received, int sync_fd) {
    close(kSocketFd);
    close(signal_fd_);
    InitArgs args = {};
    args.request = &received->request;
    for (int i = 0; i < kSpawnFdCount; ++i) {
      args.fds[i] = received->fds[i].Release();
    }
    args.sync_fd = sync_fd;
    args.seccomp = seccomp_;
    RunInit(args);
  }

  int signal_fd_;
  const sock_fprog* seccomp_;
};

void ReapChildren(int signal_fd) {
  signalfd_siginfo info;
  while (read(signal_fd, &info, sizeof(info)) == sizeof(info)) {
  }
  while (waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

int Main() {
  // Runs inherit the supplementary groups of the spawner and cannot drop
  // them inside the user namespace (setgroups is denied there).
  if (setgroups(0, nullptr) < 0) {
    fprintf(stderr, "dex-spawner: setgroups: %s\n", std::strerror(errno));
    return 1;
  }
  std::vector<sock_filter> filter;
  std::string error;
  if (!CompileSeccompPolicy(&filter, &error)) {
    fprintf(stderr, "dex-spawner: %s\n", error.c_str());
    return 1;
  }
  sock_fprog seccomp = {static_cast<unsigned short>(filter.size()),
                        filter.data()};

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  UniqueFd signal_fd(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd.valid()) {
    fprintf(stderr, "dex-spawner: signalfd: %s\n", std::strerror(errno));
    return 1;
  }

  Spawner spawner(signal_fd.get(), &seccomp);
  Received received;
  for (;;) {
    pollfd fds[2] = {{kSocketFd, POLLIN, 0}, {signal_fd.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (fds[1].revents != 0) ReapChildren(signal_fd.get());
    if (fds[0].revents == 0) continue;
    if (!ReceiveRequest(&received)) break;
    spawner.Serve(&received);
    received.fds.clear();  // the run's copies are the init's now
  }
  // Library gone: the inits still running notice their control pipe's end
  // of file and kill their runs; reap those that already ended.
  ReapChildren(signal_fd.get());
  return 0;
}

}  // namespace
}  // namespace dex::spawner

int main() { return dex::spawner::Main(); }
