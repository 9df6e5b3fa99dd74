// dex-spawner: the single-threaded helper that starts sandboxes.
//
// Started by libdex with posix_spawn, the socket to the library on fd 3 and
// nothing else open but stderr; its options come as arguments (see
// ParseOptions). It serves one request at a time and replies with the
// run's init as a pidfd. Cold: clone the run's init into fresh namespaces,
// write its id maps, release it. Warm (the default): take a pre-built
// sandbox from a bounded pool (ids mapped, root built and sealed, a script
// process forked by the zygote already waiting in it) and hand its init
// and its script process the run (README.md, "Warm sandboxes"). Between
// requests it refills the pool. It reaps inits as they exit and ends when the
// library closes the socket.
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "libdex/fd_passing.h"
#include "libdex/spawn_protocol.h"
#include "spawner/init.h"
#include "spawner/script_process.h"
#include "spawner/seccomp_policy.h"
#include "spawner/unique_fd.h"
#include "spawner/zygote.h"

namespace dex::spawner {
namespace {

using internal::kSpawnFdCount;
using internal::SpawnReply;
using internal::SpawnRequest;
using internal::ZygoteRequest;

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

// Set by libdex from SandboxOptions; see there for meaning and defaults.
struct Options {
  uint32_t host_id_base = 1'000'000'000;
  uint32_t host_id_count = 1'000'000;
  std::string python_path = "/usr/bin/python3";
  int warm_pool_max = 0;  // 0: cold only
  int warm_pool_min = 0;
  int64_t warm_idle_ms = 2'000;
};

bool ParseOptions(int argc, char** argv, Options* options) {
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string name = argv[i];
    char* end = nullptr;
    long long value = std::strtoll(argv[i + 1], &end, 10);
    bool number = end != argv[i + 1] && *end == '\0' && value >= 0;
    if (name == "--python") {
      options->python_path = argv[i + 1];
    } else if (!number) {
      return false;
    } else if (name == "--host-id-base") {
      options->host_id_base = static_cast<uint32_t>(value);
    } else if (name == "--host-id-count") {
      options->host_id_count = std::max<uint32_t>(1, value);
    } else if (name == "--warm-max") {
      options->warm_pool_max = static_cast<int>(std::min(value, 1024LL));
    } else if (name == "--warm-min") {
      options->warm_pool_min = static_cast<int>(std::min(value, 1024LL));
    } else if (name == "--warm-idle-ms") {
      options->warm_idle_ms = value;
    } else {
      return false;
    }
  }
  options->warm_pool_min =
      std::min(options->warm_pool_min, options->warm_pool_max);
  return argc % 2 == 1;
}

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// One request. False at end of file or on a broken socket.
bool ReceiveRequest(Received* received) {
  int fds[kSpawnFdCount];
  size_t count = 0;
  ssize_t n = internal::ReceiveWithFds(kSocketFd, &received->request,
                                       sizeof(received->request), fds,
                                       kSpawnFdCount, &count);
  if (n <= 0) return false;
  received->fds.clear();
  for (size_t i = 0; i < count; ++i) received->fds.emplace_back(fds[i]);
  if (n != sizeof(SpawnRequest)) received->fds.clear();
  return true;
}

// Sends `data` with `count` fds attached. False if the peer is gone.
bool SendWithFds(int socket, const void* data, size_t size, const int* fds,
                 int count) {
  return internal::SendWithFds(socket, data, size, fds,
                               static_cast<size_t>(count)) ==
         static_cast<ssize_t>(size);
}

void SendReply(const SpawnReply& reply, int pidfd) {
  internal::SendWithFds(kSocketFd, &reply, sizeof(reply), &pidfd,
                        pidfd >= 0 ? 1 : 0);
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
bool WriteIdMaps(pid_t pid, uint32_t root_id, uint32_t user_id,
                 std::string* error) {
  std::string dir = "/proc/" + std::to_string(pid) + "/";
  std::string root = std::to_string(root_id);
  std::string user = std::to_string(user_id);
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

// A pre-built sandbox waiting for its run: its init (namespaces, ids
// mapped, root built and sealed) and the script process the zygote forked
// into it. Both run under the entry's own host root id while they wait.
struct PooledInit {
  pid_t pid = -1;
  UniqueFd pidfd;
  uint32_t host_root_id = 0;  // host_root_id + 1 is its user 1000
  UniqueFd go;         // to init; closing it unused makes the sandbox exit
  UniqueFd script_go;  // to the script process; closing it makes it exit

  bool Alive() const {
    pollfd p = {pidfd.get(), POLLIN, 0};
    return poll(&p, 1, 0) == 0;
  }
};

class Spawner {
 public:
  Spawner(const Options& options, const sock_fprog* seccomp,
          std::unique_ptr<Zygote> zygote)
      : options_(options),
        seccomp_(seccomp),
        zygote_(std::move(zygote)),
        target_(options.warm_pool_min),
        last_request_ns_(MonotonicNs()) {}

  // Starts one run's init; replies to the library either way.
  void Serve(Received* received) {
    last_request_ns_ = MonotonicNs();
    if (!ValidRequest(*received)) {
      SendReply(ErrorReply("spawner: malformed request"), -1);
      return;
    }
    if (zygote_ != nullptr && ServeWarm(received)) return;
    AssignIds(&received->request);
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
    reply.warm_ready = static_cast<int32_t>(pool_.size());
    SendReply(reply, pidfd.get());
  }

  // Milliseconds until the pool wants attention, -1 for never. 0 means
  // "refill now, unless a request is waiting".
  int PoolTimeoutMs() const {
    if (zygote_ == nullptr) return -1;
    if (static_cast<int>(pool_.size()) < target_) return 0;
    if (target_ <= options_.warm_pool_min) return -1;
    int64_t due = last_request_ns_ + options_.warm_idle_ms * 1'000'000;
    return static_cast<int>(
        std::max<int64_t>(0, (due - MonotonicNs()) / 1'000'000 + 1));
  }

  // A child of the spawner ended: the zygote's end turns runs cold (the
  // pool's script processes were its children; closing the pool ends
  // their inits, and with them those processes).
  void OnChildEnded(pid_t pid) {
    if (zygote_ != nullptr && pid == zygote_->pid()) ZygoteGone();
  }

  void ZygoteGone() {
    fprintf(stderr, "dex-spawner: zygote gone; runs are cold from now\n");
    zygote_.reset();
    pool_.clear();
  }

  // The library is gone: takes the pool down and reaps it, so that no
  // idle sandbox outlives the spawner (orphans would wait on the host's
  // init to be reaped). The zygote exits at its socket's end of file.
  // Reaps any child while it waits: an init's exit waits for the zombies
  // of its namespace, which may be the spawner's to reap (see Main).
  void Shutdown() {
    std::vector<pid_t> inits;
    for (PooledInit& init : pool_) {
      syscall(SYS_pidfd_send_signal, init.pidfd.get(), SIGKILL, nullptr, 0);
      inits.push_back(init.pid);
    }
    while (!inits.empty()) {
      pid_t pid = waitpid(-1, nullptr, 0);
      if (pid < 0 && errno == EINTR) continue;
      if (pid < 0) break;
      inits.erase(std::remove(inits.begin(), inits.end(), pid), inits.end());
    }
    pool_.clear();
    if (zygote_ != nullptr) {
      pid_t zygote_pid = zygote_->pid();
      zygote_.reset();
      while (waitpid(zygote_pid, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
  }

  // Called when nothing else is waiting: builds one init, or shrinks the
  // pool by one after an idle period.
  void TendPool() {
    if (zygote_ == nullptr) return;
    if (static_cast<int>(pool_.size()) < target_) {
      PooledInit init;
      if (BuildPooledInit(&init)) pool_.push_back(std::move(init));
      return;
    }
    int64_t idle_ns = options_.warm_idle_ms * 1'000'000;
    if (target_ > options_.warm_pool_min &&
        MonotonicNs() - last_request_ns_ >= idle_ns) {
      --target_;
      last_request_ns_ = MonotonicNs();
      while (static_cast<int>(pool_.size()) > target_) pool_.pop_front();
    }
  }

 private:
  // The next host id pair's root id; its user id is one more.
  uint32_t NextRootId() {
    uint32_t pair = next_pair_++ % options_.host_id_count;
    return options_.host_id_base + 2 * pair;
  }

  void AssignIds(SpawnRequest* request) {
    request->host_root_id = NextRootId();
    request->host_user_id = request->host_root_id + 1;
  }

  // A pre-built sandbox serves the run. False (nothing sent to the library
  // yet) when warm runs are unavailable: the caller goes cold.
  bool ServeWarm(Received* received) {
    PooledInit init;
    while (!pool_.empty() && !init.pidfd.valid()) {
      init = std::move(pool_.front());
      pool_.pop_front();
      if (!init.Alive()) init = PooledInit();
    }
    if (!init.pidfd.valid()) {
      target_ = std::min(options_.warm_pool_max, target_ + 1);
      if (!BuildPooledInit(&init)) return false;
    }
    SpawnRequest& request = received->request;
    request.host_root_id = init.host_root_id;
    request.host_user_id = init.host_root_id + 1;
    std::vector<UniqueFd>& fds = received->fds;
    int to_init[internal::kWarmInitFdCount] = {fds[internal::kScriptFd].get(),
                                               fds[internal::kStatusFd].get(),
                                               fds[internal::kControlFd].get()};
    if (!SendWithFds(init.go.get(), &request, sizeof(request), to_init,
                     internal::kWarmInitFdCount)) {
      return false;  // that init died before its run: go cold
    }
    // From here on the init owns the run and reports on it, even should
    // its script process be gone (it then fails the run's set-up).
    ZygoteRequest limits = {};
    limits.magic = internal::kZygoteMagic;
    limits.processes = request.processes;
    limits.cpu_seconds = request.cpu_ms / 1000 + 2;
    limits.open_files = internal::kScriptOpenFiles;
    limits.file_size_bytes = internal::kScriptFileSizeBytes;
    int to_script[internal::kScriptGoFdCount] = {
        fds[internal::kStdinFd].get(), fds[internal::kStdoutFd].get(),
        fds[internal::kStderrFd].get()};
    SendWithFds(init.script_go.get(), &limits, sizeof(limits), to_script,
                internal::kScriptGoFdCount);
    SpawnReply reply = {};
    reply.ok = 1;
    reply.pid = init.pid;
    reply.warm = 1;
    reply.warm_ready = static_cast<int32_t>(pool_.size());
    SendReply(reply, init.pidfd.get());
    return true;
  }

  // Makes one pool entry: clones its init, maps the entry's ids, lets it
  // build the root, and asks the zygote for its script process. Neither
  // step is waited for; a run that takes the entry early queues behind
  // them.
  bool BuildPooledInit(PooledInit* init) {
    int pair[2], link[2], script_go[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
      return false;
    }
    UniqueFd ours(pair[0]), theirs(pair[1]);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, link) < 0) {
      return false;
    }
    UniqueFd init_link(link[0]), script_link(link[1]);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, script_go) < 0) {
      return false;
    }
    UniqueFd script_go_ours(script_go[0]), script_go_theirs(script_go[1]);
    pid_t pid = CloneInit(&init->pidfd);
    if (pid < 0) return false;
    if (pid == 0) {
      CloseAllExcept({theirs.get(), init_link.get()});
      RunWarmInit(theirs.Release(), init_link.Release());
    }
    init->pid = pid;
    init->go = std::move(ours);
    init->script_go = std::move(script_go_ours);
    init->host_root_id = NextRootId();
    std::string error;
    char mapped = 'm';
    if (!WriteIdMaps(init->pid, init->host_root_id, init->host_root_id + 1,
                     &error) ||
        write(init->go.get(), &mapped, 1) != 1) {
      *init = PooledInit();  // its go socket's end of file ends it
      return false;
    }
    ZygoteRequest fork_request = {};
    fork_request.magic = internal::kZygoteMagic;
    int to_zygote[internal::kZygoteFdCount] = {
        init->pidfd.get(), script_link.get(), script_go_theirs.get()};
    if (!zygote_->Send(fork_request, to_zygote)) {
      ZygoteGone();
      *init = PooledInit();
      return false;
    }
    return true;
  }

  // An init in fresh namespaces: 0 in the child, its pid (and *pidfd) in
  // the spawner, -1 with errno set. The spawner is single-threaded, so a
  // fork-like clone3 (no new stack) leaves the child a consistent heap.
  static pid_t CloneInit(UniqueFd* pidfd) {
    int pidfd_raw = -1;
    clone_args args = {};
    args.flags = kNamespaces | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<uint64_t>(&pidfd_raw);
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid > 0) pidfd->Reset(pidfd_raw);
    return static_cast<pid_t>(pid);
  }

  pid_t StartInit(Received* received, UniqueFd* pidfd, std::string* error) {
    int sync[2];
    if (pipe2(sync, O_CLOEXEC) < 0) {
      *error = ErrnoText("spawner: pipe");
      return -1;
    }
    UniqueFd sync_read(sync[0]), sync_write(sync[1]);
    pid_t pid = CloneInit(pidfd);
    if (pid < 0) {
      *error = ErrnoText("spawner: clone3");
      return -1;
    }
    if (pid == 0) RunChild(received, sync_read.Release());
    sync_read.Reset();
    if (!WriteIdMaps(pid, received->request.host_root_id,
                     received->request.host_user_id, error)) {
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
    InitArgs args = {};
    args.request = &received->request;
    std::vector<int> keep = {sync_fd};
    for (int i = 0; i < kSpawnFdCount; ++i) {
      args.fds[i] = received->fds[i].Release();
      keep.push_back(args.fds[i]);
    }
    CloseAllExcept(keep);
    args.sync_fd = sync_fd;
    args.seccomp = seccomp_;
    RunInit(args);
  }

  const Options options_;
  const sock_fprog* seccomp_;
  std::unique_ptr<Zygote> zygote_;  // null: cold runs only
  std::deque<PooledInit> pool_;
  int target_;  // pool size wanted now, warm_pool_min..warm_pool_max
  int64_t last_request_ns_;
  uint32_t next_pair_ = 0;
};

void ReapChildren(int signal_fd, Spawner* spawner) {
  signalfd_siginfo info;
  while (read(signal_fd, &info, sizeof(info)) == sizeof(info)) {
  }
  pid_t pid;
  while ((pid = waitpid(-1, nullptr, WNOHANG)) > 0) spawner->OnChildEnded(pid);
}

// dex-zygote-helper.so, installed and built beside the spawner.
std::string HelperPath() {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return "dex-zygote-helper.so";
  std::string path(exe, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/') + 1) + "dex-zygote-helper.so";
}

int Main(int argc, char** argv) {
  Options options;
  if (!ParseOptions(argc, argv, &options)) {
    fprintf(stderr, "dex-spawner: bad arguments\n");
    return 1;
  }
  // A warm script process is the zygote's child, outside its run's pid
  // namespace: should the zygote die, the spawner (not the host's init)
  // inherits and reaps it, as the run's init must wait for it to go.
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
    fprintf(stderr, "dex-spawner: child subreaper: %s\n", std::strerror(errno));
    return 1;
  }
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

  // No warm runs without the zygote; a cold run needs nothing of it.
  std::unique_ptr<Zygote> zygote;
  if (options.warm_pool_max > 0) {
    zygote = Zygote::Start(options.python_path, HelperPath(), filter, &error);
    if (zygote == nullptr) {
      fprintf(stderr, "dex-spawner: %s; runs are cold\n", error.c_str());
    }
  }
  Spawner spawner(options, &seccomp, std::move(zygote));
  Received received;
  for (;;) {
    pollfd fds[2] = {{kSocketFd, POLLIN, 0}, {signal_fd.get(), POLLIN, 0}};
    int ready = poll(fds, 2, spawner.PoolTimeoutMs());
    if (ready < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (fds[1].revents != 0) ReapChildren(signal_fd.get(), &spawner);
    if (ready == 0) spawner.TendPool();
    if (fds[0].revents == 0) continue;
    if (!ReceiveRequest(&received)) break;
    spawner.Serve(&received);
    received.fds.clear();  // the run's copies are the init's now
  }
  // Library gone: the inits still running notice their control pipe's end
  // of file and kill their runs; reap those that already ended.
  spawner.Shutdown();
  ReapChildren(signal_fd.get(), &spawner);
  return 0;
}

}  // namespace
}  // namespace dex::spawner

int main(int argc, char** argv) { return dex::spawner::Main(argc, argv); }
