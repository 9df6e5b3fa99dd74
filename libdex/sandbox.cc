#include "dex/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <utility>
#include <vector>

#include "libdex/fd_passing.h"
#include "libdex/spawn_protocol.h"
#include "libdex/unique_fd.h"

namespace dex {
namespace {

using internal::InitMessage;
using internal::SpawnReply;
using internal::SpawnRequest;

// How long init may take to build the sandbox before the run is abandoned.
constexpr int64_t kSetupTimeoutNs = 30'000'000'000;
// How long the output pipes are drained after every process of the run is
// gone (they are at end of file by then; this only bounds a surprise).
constexpr int64_t kDrainTimeoutNs = 1'000'000'000;
constexpr size_t kReadChunk = 65536;

using internal::UniqueFd;

// Both ends of a pipe, close-on-exec.
struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

Status MakePipe(Pipe* pipe) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) {
    return Status::FromErrno("sandbox: pipe", errno);
  }
  pipe->read.Reset(fds[0]);
  pipe->write.Reset(fds[1]);
  return Status::Ok();
}

void SetNonBlocking(int fd) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// glibc 2.36 declares pidfd_send_signal without C linkage for C++.
void KillByPidfd(int pidfd) {
  syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
}

// write() that never raises SIGPIPE in the host process: the run may close
// its end at any moment. SIGPIPE is blocked for this thread only, and one
// raised by this write is consumed before the mask is restored.
ssize_t WriteNoSigpipe(int fd, const void* data, size_t size) {
  sigset_t pipe_only, old;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  sigset_t pending;
  sigpending(&pending);
  bool already_pending = sigismember(&pending, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  ssize_t n = write(fd, data, size);
  int saved = errno;
  if (n < 0 && errno == EPIPE && !already_pending) {
    timespec zero = {0, 0};
    while (sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = saved;
  return n;
}

bool IsExecutable(const std::string& path) {
  return !path.empty() && access(path.c_str(), X_OK) == 0;
}

// Options, then $DEX_SPAWNER, then next to the running executable, then
// where an install puts it relative to the executable (bin/ and
// libexec/dex/ under one prefix, wherever that prefix was moved), then the
// build tree, then the configured install prefix.
std::string ResolveSpawnerPath(const SandboxOptions& options) {
  if (!options.spawner_path.empty()) return options.spawner_path;
  if (const char* env = getenv("DEX_SPAWNER"); env != nullptr && *env) {
    return env;
  }
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto dir = self.parent_path();
    for (auto candidate :
         {dir / "dex-spawner", dir.parent_path() / "libexec/dex/dex-spawner"}) {
      if (IsExecutable(candidate.string())) return candidate.string();
    }
  }
  if (IsExecutable(DEX_SPAWNER_BUILD_PATH)) return DEX_SPAWNER_BUILD_PATH;
  return DEX_SPAWNER_INSTALL_PATH;
}

// The spawner process and our end of its socket. Closing the socket makes
// it exit; the destructor then reaps it.
class SpawnerProcess {
 public:
  SpawnerProcess(pid_t pid, UniqueFd socket)
      : pid_(pid), socket_(std::move(socket)) {}
  ~SpawnerProcess() {
    socket_.Reset();
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  SpawnerProcess(const SpawnerProcess&) = delete;
  SpawnerProcess& operator=(const SpawnerProcess&) = delete;

  int socket() const { return socket_.get(); }

 private:
  pid_t pid_;
  UniqueFd socket_;
};

// The spawner's arguments: its share of SandboxOptions.
std::vector<std::string> SpawnerArguments(const std::string& path,
                                          const SandboxOptions& options) {
  int warm_max = std::max(0, options.warm_pool_max);
  int warm_min = std::clamp(options.warm_pool_min, 0, warm_max);
  return {path,
          "--host-id-base",
          std::to_string(options.host_id_base),
          "--host-id-count",
          std::to_string(std::max<uint32_t>(1, options.host_id_count)),
          "--python",
          options.python_path,
          "--warm-max",
          std::to_string(warm_max),
          "--warm-min",
          std::to_string(warm_min),
          "--warm-idle-ms",
          std::to_string(std::max<int64_t>(0, options.warm_idle_ms))};
}

Result<std::unique_ptr<SpawnerProcess>> StartSpawner(
    const std::vector<std::string>& arguments) {
  const std::string& path = arguments[0];
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
    return Status::FromErrno("sandbox: socketpair", errno,
                             Category::kUnavailable);
  }
  UniqueFd ours(pair[0]), theirs(pair[1]);
  if (theirs.get() == 3) {
    // dup2(3, 3) would keep close-on-exec set; move it out of the way.
    theirs.Reset(fcntl(pair[1], F_DUPFD_CLOEXEC, 10));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), 3);
  posix_spawn_file_actions_addclosefrom_np(&actions, 4);
  // The host may block or ignore signals (SIGCHLD above all); the spawner
  // starts from the defaults.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  std::vector<char*> argv;
  for (const std::string& argument : arguments) {
    argv.push_back(const_cast<char*>(argument.c_str()));
  }
  argv.push_back(nullptr);
  char* envp[] = {nullptr};
  pid_t pid;
  int rc = posix_spawn(&pid, path.c_str(), &actions, &attr, argv.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return Status::FromErrno("sandbox: start " + path, rc,
                             Category::kUnavailable);
  }
  return std::make_unique<SpawnerProcess>(pid, std::move(ours));
}

// The fds of one run: ours, and the ends handed to the spawner.
struct RunFds {
  UniqueFd script;  // memfd, also sent
  Pipe stdin_pipe, stdout_pipe, stderr_pipe, status_pipe, control_pipe;
};

Status MakeRunFds(const std::string& script, RunFds* fds) {
  fds->script.Reset(memfd_create("dex-script", MFD_CLOEXEC));
  if (!fds->script.valid()) {
    return Status::FromErrno("sandbox: memfd_create", errno);
  }
  size_t done = 0;
  while (done < script.size()) {
    ssize_t n =
        write(fds->script.get(), script.data() + done, script.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno("sandbox: write script", errno);
    done += n;
  }
  for (Pipe* pipe : {&fds->stdin_pipe, &fds->stdout_pipe, &fds->stderr_pipe,
                     &fds->status_pipe, &fds->control_pipe}) {
    DEX_RETURN_IF_ERROR(MakePipe(pipe));
  }
  SetNonBlocking(fds->stdin_pipe.write.get());
  SetNonBlocking(fds->stdout_pipe.read.get());
  SetNonBlocking(fds->stderr_pipe.read.get());
  return Status::Ok();
}

// One output stream: keeps the first `cap` bytes and counts the rest.
struct Stream {
  UniqueFd fd;
  std::string data;
  int64_t total = 0;

  // Reads what is there without blocking; closes the fd at end of file.
  void ReadAvailable(int64_t cap) {
    char buf[kReadChunk];
    while (fd.valid()) {
      ssize_t n = read(fd.get(), buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) {
        fd.Reset();
        return;
      }
      int64_t room = std::max<int64_t>(0, cap - total);
      data.append(buf, std::min<int64_t>(n, room));
      total += n;
    }
  }

  // The outcome's bytes and whether any were cut.
  bool Finish(int64_t cap, std::string* out) {
    *out = std::move(data);
    if (total <= cap) return false;
    TruncateUtf8(out, cap);
    return true;
  }
};

// What the supervisor learns of one run.
struct Supervision {
  bool started = false;
  int64_t start_ns = 0;
  bool have_final = false;
  InitMessage final_report = {};
  bool wall_signalled = false;  // control byte sent
  bool init_killed = false;     // SIGKILL sent to init
  int64_t killed_ns = 0;
};

// Verdict priority: memory > CPU > wall > processes > signal > exit code.
Reason ChooseReason(uint32_t flags, int exit_code, int signal) {
  if (flags & internal::kFlagMemoryLimit) return Reason::kMemoryLimit;
  if (flags & internal::kFlagCpuLimit) return Reason::kCpuTimeout;
  if (flags & internal::kFlagWallKill) return Reason::kWallTimeout;
  bool failed = signal != 0 || exit_code != 0;
  if ((flags & internal::kFlagProcessLimit) && failed) {
    return Reason::kProcessLimit;
  }
  if (signal != 0) return Reason::kSignal;
  if (exit_code != 0) return Reason::kNonzeroExit;
  return Reason::kOk;
}

class SandboxImpl : public Sandbox {
 public:
  SandboxImpl(const SandboxOptions& options,
              std::vector<std::string> spawner_args,
              std::unique_ptr<SpawnerProcess> spawner)
      : options_(options),
        spawner_args_(std::move(spawner_args)),
        spawner_(std::move(spawner)) {}

  Result<RunOutcome> Run(const RunRequest& request) override;
  MemoryMode memory_mode() const override { return MemoryMode::kSampled; }
  size_t warm_available() const override { return warm_available_.load(); }
  bool warm() const override { return warm_.load(); }

 private:
  Status CheckRequest(const RunRequest& request) const;
  SpawnRequest MakeSpawnRequest(const RunRequest& request);
  Result<UniqueFd> Spawn(const SpawnRequest& spawn, RunFds* fds);
  // Replaces a spawner that died. REQUIRES: spawn_mu_ held.
  Status RestartSpawnerLocked();
  void Supervise(const RunRequest& request, int pidfd, RunFds* fds, Stream* out,
                 Stream* err, Supervision* sup);
  static void AwaitExit(int pidfd);

  const SandboxOptions options_;
  const std::vector<std::string> spawner_args_;
  std::mutex spawn_mu_;  // guards one request/reply exchange on the socket
  std::unique_ptr<SpawnerProcess> spawner_;  // guarded by spawn_mu_
  // The last exchange found the spawner gone; the next run starts a new
  // one (the run that found it fails and is refunded). Guarded by
  // spawn_mu_.
  bool spawner_broken_ = false;
  std::atomic<size_t> warm_available_{0};
  std::atomic<bool> warm_{false};
};

Status SandboxImpl::CheckRequest(const RunRequest& request) const {
  const RunLimits& l = request.limits;
  if (l.wall_ms <= 0 || l.cpu_ms <= 0 || l.memory_mb <= 0 ||
      l.output_bytes <= 0 || l.processes <= 0) {
    return Status::Error(Category::kInvalidArgument,
                         "sandbox: every limit must be positive");
  }
  if (options_.python_path.size() >= sizeof(SpawnRequest::python_path) ||
      options_.python_path.empty() || options_.python_path[0] != '/') {
    return Status::Error(Category::kInvalidArgument,
                         "sandbox: python_path must be absolute and short");
  }
  return Status::Ok();
}

SpawnRequest SandboxImpl::MakeSpawnRequest(const RunRequest& request) {
  SpawnRequest spawn = {};
  spawn.magic = internal::kSpawnMagic;  // host ids: the spawner assigns them
  const RunLimits& limits = request.limits;
  spawn.cpu_ms = limits.cpu_ms;
  spawn.memory_kb = limits.memory_mb * 1024;
  spawn.processes = limits.processes;
  // Half the memory limit by default: tmpfs pages count as memory, and a
  // full disk must fail with ENOSPC inside, not end as memory_limit.
  int64_t tmpfs_mb =
      options_.tmpfs_mb > 0 ? options_.tmpfs_mb : limits.memory_mb / 2;
  spawn.tmpfs_kb = std::max<int64_t>(1024, tmpfs_mb * 1024);
  spawn.script_bytes = static_cast<int64_t>(request.script.size());
  std::memcpy(spawn.python_path, options_.python_path.data(),
              options_.python_path.size());
  return spawn;
}

Result<UniqueFd> SandboxImpl::Spawn(const SpawnRequest& spawn, RunFds* fds) {
  int sent[internal::kSpawnFdCount] = {fds->script.get(),
                                       fds->stdin_pipe.read.get(),
                                       fds->stdout_pipe.write.get(),
                                       fds->stderr_pipe.write.get(),
                                       fds->status_pipe.write.get(),
                                       fds->control_pipe.read.get()};
  SpawnReply reply = {};
  int passed = -1;
  size_t passed_count = 0;
  ssize_t n;
  {
    std::lock_guard<std::mutex> lock(spawn_mu_);
    if (spawner_broken_) DEX_RETURN_IF_ERROR(RestartSpawnerLocked());
    n = internal::SendWithFds(spawner_->socket(), &spawn, sizeof(spawn), sent,
                              internal::kSpawnFdCount);
    if (n < 0) {
      spawner_broken_ = true;
      return Status::FromErrno("sandbox: send to spawner", errno,
                               Category::kUnavailable);
    }
    n = internal::ReceiveWithFds(spawner_->socket(), &reply, sizeof(reply),
                                 &passed, 1, &passed_count);
    if (n != sizeof(reply)) spawner_broken_ = true;
  }
  UniqueFd pidfd(passed_count == 1 ? passed : -1);
  if (n != sizeof(reply)) {
    return Status::Error(Category::kUnavailable,
                         "sandbox: spawner gone (no reply)");
  }
  warm_.store(reply.warm == 1);
  warm_available_.store(static_cast<size_t>(std::max(0, reply.warm_ready)));
  if (reply.ok != 1 || !pidfd.valid()) {
    reply.error[sizeof(reply.error) - 1] = '\0';
    return Status::Error(Category::kUnavailable,
                         std::string("sandbox: ") + reply.error);
  }
  return pidfd;
}

Status SandboxImpl::RestartSpawnerLocked() {
  spawner_.reset();  // closes our end and reaps the old process
  auto fresh = StartSpawner(spawner_args_);
  if (!fresh.ok()) {
    return fresh.status().WithContext("sandbox: restarting the spawner");
  }
  spawner_ = std::move(*fresh);
  spawner_broken_ = false;
  options_.logger->Log(LogLevel::kWarn,
                       "sandbox: the spawner had died; started a new one");
  return Status::Ok();
}

// Waits for init to be gone; kills it if it lingers.
void SandboxImpl::AwaitExit(int pidfd) {
  pollfd p = {pidfd, POLLIN, 0};
  if (poll(&p, 1, 1000) == 1) return;
  KillByPidfd(pidfd);
  while (poll(&p, 1, -1) < 0 && errno == EINTR) {
  }
}

void SandboxImpl::Supervise(const RunRequest& request, int pidfd, RunFds* fds,
                            Stream* out, Stream* err, Supervision* sup) {
  const int64_t cap = request.limits.output_bytes;
  const std::string& input =
      request.stdin_data ? *request.stdin_data : std::string();
  size_t input_done = 0;
  UniqueFd input_fd = std::move(fds->stdin_pipe.write);
  if (input.empty()) input_fd.Reset();  // the script sees EOF at once
  UniqueFd status_fd = std::move(fds->status_pipe.read);
  UniqueFd control_fd = std::move(fds->control_pipe.write);
  const int64_t setup_deadline = MonotonicNs() + kSetupTimeoutNs;
  const int64_t grace_ns = options_.kill_grace_ms * 1'000'000;
  const int64_t wall_ns = request.limits.wall_ms * 1'000'000;

  // Until init's status pipe ends: init has then reported (or died) and
  // every process of the run is gone.
  while (status_fd.valid()) {
    int64_t now = MonotonicNs();
    int64_t next = sup->started ? sup->start_ns + wall_ns : setup_deadline;
    if (sup->wall_signalled) next = sup->killed_ns + grace_ns;
    if (now >= next && !sup->init_killed) {
      if (sup->started && !sup->wall_signalled) {
        char byte = 'w';
        ssize_t ignored = WriteNoSigpipe(control_fd.get(), &byte, 1);
        (void)ignored;
        sup->wall_signalled = true;
        sup->killed_ns = now;
      } else {
        // init stalled: SIGKILL takes the whole pid namespace down.
        KillByPidfd(pidfd);
        sup->init_killed = true;
        sup->killed_ns = now;
      }
      continue;
    }
    int timeout_ms = sup->init_killed
                         ? -1
                         : static_cast<int>((next - now + 999'999) / 1'000'000);
    pollfd p[4] = {{status_fd.get(), POLLIN, 0},
                   {out->fd.get(), POLLIN, 0},
                   {err->fd.get(), POLLIN, 0},
                   {input_fd.get(), POLLOUT, 0}};
    if (poll(p, 4, timeout_ms) < 0 && errno != EINTR) break;
    if (p[1].revents != 0) out->ReadAvailable(cap);
    if (p[2].revents != 0) err->ReadAvailable(cap);
    if (p[3].revents & (POLLERR | POLLHUP)) {
      input_fd.Reset();  // the script closed its stdin
    } else if (p[3].revents & POLLOUT) {
      ssize_t n = WriteNoSigpipe(input_fd.get(), input.data() + input_done,
                                 input.size() - input_done);
      if (n > 0) input_done += n;
      if (input_done == input.size() || (n < 0 && errno != EAGAIN)) {
        input_fd.Reset();
      }
    }
    if (p[0].revents == 0) continue;
    InitMessage message;
    ssize_t n = read(status_fd.get(), &message, sizeof(message));
    if (n < 0 && errno == EINTR) continue;
    if (n != sizeof(message)) {
      status_fd.Reset();
    } else if (message.kind == internal::kStarted) {
      sup->started = true;
      sup->start_ns = message.mono_ns;
    } else if (message.kind == internal::kFinal) {
      sup->have_final = true;
      sup->final_report = message;
    }
  }
  AwaitExit(pidfd);
  // Every writer is dead now: read to end of file, bounded all the same.
  const int64_t drain_deadline = MonotonicNs() + kDrainTimeoutNs;
  while ((out->fd.valid() || err->fd.valid()) &&
         MonotonicNs() < drain_deadline) {
    pollfd p[2] = {{out->fd.get(), POLLIN, 0}, {err->fd.get(), POLLIN, 0}};
    poll(p, 2, 100);
    out->ReadAvailable(cap);
    err->ReadAvailable(cap);
  }
}

Result<RunOutcome> SandboxImpl::Run(const RunRequest& request) {
  DEX_RETURN_IF_ERROR(CheckRequest(request));
  const int64_t request_ns = MonotonicNs();
  RunFds fds;
  DEX_RETURN_IF_ERROR(MakeRunFds(request.script, &fds));
  SpawnRequest spawn = MakeSpawnRequest(request);
  Result<UniqueFd> pidfd = Spawn(spawn, &fds);
  if (!pidfd.ok()) return pidfd.status();
  // The run holds its ends now; ours must go so end of file can happen.
  fds.script.Reset();
  fds.stdin_pipe.read.Reset();
  fds.stdout_pipe.write.Reset();
  fds.stderr_pipe.write.Reset();
  fds.status_pipe.write.Reset();
  fds.control_pipe.read.Reset();

  Stream out, err;
  out.fd = std::move(fds.stdout_pipe.read);
  err.fd = std::move(fds.stderr_pipe.read);
  Supervision sup;
  Supervise(request, pidfd->get(), &fds, &out, &err, &sup);

  RunOutcome outcome;
  const int64_t cap = request.limits.output_bytes;
  outcome.stdout_truncated = out.Finish(cap, &outcome.stdout_data);
  outcome.stderr_truncated = err.Finish(cap, &outcome.stderr_data);
  if (sup.started) outcome.startup_ms = (sup.start_ns - request_ns) / 1'000'000;
  if (!sup.have_final) {
    if (sup.started && sup.init_killed) {
      // init ignored the wall kill and was taken down with its namespace.
      outcome.reason = Reason::kWallTimeout;
      outcome.signal = SIGKILL;
      outcome.exit_code = 128 + SIGKILL;
      outcome.wall_ms = (MonotonicNs() - sup.start_ns) / 1'000'000;
      return outcome;
    }
    return Status::Error(Category::kInternal,
                         "sandbox: init ended without a report");
  }
  const InitMessage& report = sup.final_report;
  if (report.flags & internal::kFlagSetupFailed) {
    std::string why(report.error, strnlen(report.error, sizeof(report.error)));
    return Status::Error(Category::kUnavailable, "sandbox setup: " + why);
  }
  int status = report.wait_status;
  if (WIFSIGNALED(status)) {
    outcome.signal = WTERMSIG(status);
    outcome.exit_code = 128 + outcome.signal;
  } else {
    outcome.exit_code = WEXITSTATUS(status);
  }
  outcome.reason =
      ChooseReason(report.flags, outcome.exit_code, outcome.signal);
  outcome.wall_ms =
      std::max<int64_t>(0, report.mono_ns - sup.start_ns) / 1'000'000;
  outcome.cpu_ms = report.cpu_us / 1000;
  outcome.peak_memory_kb = report.peak_memory_kb;
  return outcome;
}

Status SelfCheck(Sandbox* sandbox) {
  RunRequest request;
  request.script = "print(1)\n";
  Result<RunOutcome> outcome = sandbox->Run(request);
  if (!outcome.ok()) {
    return Status::Error(Category::kUnavailable,
                         "sandbox self-check: " + outcome.status().message());
  }
  if (outcome->reason != Reason::kOk || outcome->stdout_data != "1\n") {
    return Status::Error(
        Category::kUnavailable,
        std::string("sandbox self-check: print(1) ended with ") +
            ReasonName(outcome->reason) + ", exit code " +
            std::to_string(outcome->exit_code));
  }
  return Status::Ok();
}

}  // namespace

const char* ReasonName(Reason reason) {
  switch (reason) {
    case Reason::kOk:
      return "ok";
    case Reason::kNonzeroExit:
      return "nonzero_exit";
    case Reason::kSignal:
      return "signal";
    case Reason::kWallTimeout:
      return "wall_timeout";
    case Reason::kCpuTimeout:
      return "cpu_timeout";
    case Reason::kMemoryLimit:
      return "memory_limit";
    case Reason::kProcessLimit:
      return "process_limit";
    case Reason::kSandboxError:
      return "sandbox_error";
  }
  return "sandbox_error";
}

const char* MemoryModeName(MemoryMode mode) {
  return mode == MemoryMode::kCgroup2 ? "cgroup2" : "sampled";
}

Result<std::unique_ptr<Sandbox>> Sandbox::Open(const SandboxOptions& options) {
  std::string path = ResolveSpawnerPath(options);
  if (!IsExecutable(path)) {
    return Status::Error(Category::kUnavailable,
                         "sandbox: no dex-spawner at " + path +
                             " (looked at SandboxOptions::spawner_path, "
                             "$DEX_SPAWNER, beside the executable, "
                             "../libexec/dex/ from it, the build tree and "
                             "the install prefix)");
  }
  std::vector<std::string> arguments = SpawnerArguments(path, options);
  Result<std::unique_ptr<SpawnerProcess>> spawner = StartSpawner(arguments);
  if (!spawner.ok()) return spawner.status();
  // TODO(cgroup2): use a delegated cgroup v2 subtree when one exists; these
  // machines have none, so memory is sampled by each run's init.
  auto sandbox = std::make_unique<SandboxImpl>(options, std::move(arguments),
                                               std::move(spawner.value()));
  DEX_RETURN_IF_ERROR(SelfCheck(sandbox.get()));
  options.logger->Log(LogLevel::kInfo,
                      std::string("sandbox: memory mode ") +
                          MemoryModeName(sandbox->memory_mode()));
  if (options.warm_pool_max > 0 && !sandbox->warm()) {
    options.logger->Log(LogLevel::kWarn,
                        "sandbox: warm runs unavailable, runs are cold");
  }
  return std::unique_ptr<Sandbox>(std::move(sandbox));
}

}  // namespace dex
