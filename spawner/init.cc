#include "spawner/init.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "libdex/fd_passing.h"
#include "spawner/script_process.h"
#include "spawner/unique_fd.h"

namespace dex::spawner {
namespace {

using internal::InitMessage;
using internal::SpawnRequest;

// The new root is assembled on a tmpfs mounted here in the run's own mount
// namespace; the host's /tmp is untouched.
constexpr const char* kStage = "/tmp";
constexpr long kSampleNs = 10'000'000;  // DESIGN: at least every 10 ms
// Samples to wait, after a kill, for the zygote's word on a warm script.
constexpr int kLinkGraceTicks = 100;
// A pre-built sandbox's scratch tmpfs until its run sizes it.
constexpr int64_t kPlaceholderScratchKb = 1024;

// Written at build time of the environment; fixed and documented.
char kEnvPath[] = "PATH=/usr/local/bin:/usr/bin:/bin";
char kEnvHome[] = "HOME=/work";
char kEnvLang[] = "LANG=C.UTF-8";
char kEnvArena[] = "MALLOC_ARENA_MAX=2";
char kEnvTmp[] = "TMPDIR=/tmp";
char* const kEnvironment[] = {kEnvPath,  kEnvHome, kEnvLang,
                              kEnvArena, kEnvTmp,  nullptr};

}  // namespace

char* const* const kScriptEnvironment = kEnvironment;

namespace {

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

void WriteMessage(int fd, const InitMessage& message) {
  while (write(fd, &message, sizeof(message)) < 0 && errno == EINTR) {
  }
}

// A failed set-up step: "what: why".
struct SetupError {
  std::string text;
};

bool Fail(SetupError* error, const std::string& what) {
  error->text = what + ": " + strerror(errno);
  return false;
}

bool MountAt(const char* source, const std::string& target, const char* type,
             unsigned long flags, const char* data, SetupError* error) {
  if (mount(source, target.c_str(), type, flags, data) == 0) return true;
  return Fail(error, "mount " + target);
}

// Read-only (and nosuid, and nodev unless a device) for the whole subtree;
// mount_setattr keeps the flags the host locked on these binds.
bool Seal(const std::string& target, bool device, SetupError* error) {
  mount_attr attr = {};
  attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID;
  if (!device) attr.attr_set |= MOUNT_ATTR_NODEV;
  if (device) attr.attr_set |= MOUNT_ATTR_NOEXEC;
  if (syscall(SYS_mount_setattr, AT_FDCWD, target.c_str(), AT_RECURSIVE, &attr,
              sizeof(attr)) == 0) {
    return true;
  }
  return Fail(error, "seal " + target);
}

bool BindReadOnly(const std::string& source, const std::string& target,
                  bool device, SetupError* error) {
  return MountAt(source.c_str(), target, nullptr, MS_BIND | MS_REC, nullptr,
                 error) &&
         Seal(target, device, error);
}

bool MakeFile(const std::string& path, const std::string& text,
              SetupError* error) {
  UniqueFd fd(
      open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd.valid()) return Fail(error, "create " + path);
  if (write(fd.get(), text.data(), text.size()) !=
      static_cast<ssize_t>(text.size())) {
    return Fail(error, "write " + path);
  }
  return true;
}

bool MakeDir(const std::string& path, mode_t mode, SetupError* error) {
  if (mkdir(path.c_str(), mode) == 0 && chmod(path.c_str(), mode) == 0) {
    return true;
  }
  return Fail(error, "mkdir " + path);
}

// Mirrors host entry `name` (absolute) into the stage: a symlink is
// recreated, a directory or file is bound read-only, a missing one skipped.
bool MirrorHostEntry(const std::string& name, SetupError* error) {
  struct stat st;
  if (lstat(name.c_str(), &st) < 0) return true;
  std::string target = std::string(kStage) + name;
  if (S_ISLNK(st.st_mode)) {
    char link[4096];
    ssize_t n = readlink(name.c_str(), link, sizeof(link) - 1);
    if (n < 0) return Fail(error, "readlink " + name);
    link[n] = '\0';
    if (symlink(link, target.c_str()) == 0) return true;
    return Fail(error, "symlink " + target);
  }
  if (S_ISDIR(st.st_mode)) {
    if (!MakeDir(target, 0755, error)) return false;
  } else if (!MakeFile(target, "", error)) {
    return false;
  }
  return BindReadOnly(name, target, false, error);
}

// ---- The steps building the new root, in order. ----

bool BecomeNamespaceRoot(SetupError* error) {
  if (setresgid(0, 0, 0) == 0 && setresuid(0, 0, 0) == 0) return true;
  return Fail(error, "become root of the user namespace");
}

bool MakeMountsPrivate(SetupError* error) {
  return MountAt(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr, error);
}

bool MountStageRoot(SetupError* error) {
  return MountAt("dex-root", kStage, "tmpfs", MS_NOSUID | MS_NODEV,
                 "size=1m,mode=0755", error);
}

bool BindSystemDirs(SetupError* error) {
  for (const char* name :
       {"/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"}) {
    if (!MirrorHostEntry(name, error)) return false;
  }
  return true;
}

// /etc with what the dynamic loader and Debian's python3 read at start-up,
// bound from the host. Needs no ids, so a pre-built sandbox does it early.
bool MirrorEtc(SetupError* error) {
  std::string etc = std::string(kStage) + "/etc";
  if (!MakeDir(etc, 0755, error)) return false;
  for (const char* name :
       {"/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives",
        "/etc/python3", "/etc/python3.11", "/etc/python3.12", "/etc/python3.13",
        "/etc/mime.types"}) {
    if (!MirrorHostEntry(name, error)) return false;
  }
  return true;
}

// dex's own small /etc files.
bool WriteEtcFiles(SetupError* error) {
  std::string etc = std::string(kStage) + "/etc";
  return MakeFile(etc + "/passwd",
                  "root:x:0:0:root:/root:/usr/sbin/nologin\n"
                  "sandbox:x:1000:1000:sandbox:/work:/usr/sbin/nologin\n",
                  error) &&
         MakeFile(etc + "/group", "root:x:0:\nsandbox:x:1000:\n", error) &&
         MakeFile(etc + "/hosts", "127.0.0.1 localhost\n::1 localhost\n",
                  error) &&
         MakeFile(etc + "/hostname", "sandbox\n", error) &&
         MakeFile(etc + "/nsswitch.conf",
                  "passwd: files\ngroup: files\nhosts: files\n", error);
}

bool BuildDev(SetupError* error) {
  std::string dev = std::string(kStage) + "/dev";
  if (!MakeDir(dev, 0755, error)) return false;
  for (const char* name : {"null", "zero", "full", "random", "urandom"}) {
    std::string target = dev + "/" + name;
    if (!MakeFile(target, "", error) ||
        !BindReadOnly(std::string("/dev/") + name, target, true, error)) {
      return false;
    }
  }
  const char* const kLinks[][2] = {{"/proc/self/fd", "fd"},
                                   {"/proc/self/fd/0", "stdin"},
                                   {"/proc/self/fd/1", "stdout"},
                                   {"/proc/self/fd/2", "stderr"}};
  for (const auto& link : kLinks) {
    if (symlink(link[0], (dev + "/" + link[1]).c_str()) < 0) {
      return Fail(error, "symlink /dev/" + std::string(link[1]));
    }
  }
  return true;
}

// hidepid=invisible: the script (uid 1000) sees only its own processes, not
// init (its environ and cmdline included); init, root of the user
// namespace, still sees everything it must sample.
bool MountProc(SetupError* error) {
  std::string proc = std::string(kStage) + "/proc";
  return MakeDir(proc, 0555, error) &&
         MountAt("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                 "hidepid=invisible", error);
}

// Mount points of the scratch tmpfs; they need no ids.
bool MakeScratchMountPoints(SetupError* error) {
  return MakeDir(std::string(kStage) + "/tmp", 0755, error) &&
         MakeDir(std::string(kStage) + "/work", 0755, error);
}

// One tmpfs serves /tmp and /work, so its size caps both together. It is
// mounted on the stage's /tmp, its two subdirectories are bound onto /work
// and over /tmp itself; the tmpfs root stays hidden under the latter.
bool MountScratch(int64_t tmpfs_kb, SetupError* error) {
  std::string tmp = std::string(kStage) + "/tmp";
  std::string work = std::string(kStage) + "/work";
  std::string options = "size=" + std::to_string(tmpfs_kb) + "k,mode=0755";
  std::string scratch_tmp = tmp + "/tmp";
  std::string scratch_work = tmp + "/work";
  if (!MountAt("dex-scratch", tmp, "tmpfs", MS_NOSUID | MS_NODEV,
               options.c_str(), error) ||
      !MakeDir(scratch_tmp, 01777, error) ||
      !MakeDir(scratch_work, 0755, error)) {
    return false;
  }
  if (chown(scratch_work.c_str(), kScriptId, kScriptId) < 0) {
    return Fail(error, "chown /work");
  }
  return MountAt(scratch_work.c_str(), work, nullptr, MS_BIND, nullptr,
                 error) &&
         MountAt(scratch_tmp.c_str(), tmp, nullptr, MS_BIND, nullptr, error);
}

// A pre-built sandbox's scratch tmpfs gets this run's size. /work and
// /tmp are binds of one tmpfs, so remounting either resizes both.
bool ResizeScratch(int64_t tmpfs_kb, SetupError* error) {
  std::string options = "size=" + std::to_string(tmpfs_kb) + "k";
  return MountAt(nullptr, "/work", nullptr, MS_REMOUNT | MS_NOSUID | MS_NODEV,
                 options.c_str(), error);
}

// `path` is the script's place in the run's /work: under the stage before
// the pivot, /work/main.py after it.
bool CopyScript(int script_fd, int64_t size, const std::string& path,
                SetupError* error) {
  UniqueFd out(
      open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!out.valid()) return Fail(error, "create main.py");
  off_t offset = 0;
  while (offset < size) {
    ssize_t n = sendfile(out.get(), script_fd, &offset, size - offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Fail(error, "copy main.py");
  }
  if (fchown(out.get(), kScriptId, kScriptId) < 0) {
    return Fail(error, "chown main.py");
  }
  return true;
}

// The old root is detached at once: nothing of the host stays reachable.
bool PivotRoot(SetupError* error) {
  if (chdir(kStage) < 0) return Fail(error, "chdir new root");
  if (syscall(SYS_pivot_root, ".", ".") < 0) return Fail(error, "pivot_root");
  if (umount2(".", MNT_DETACH) < 0) return Fail(error, "detach old root");
  if (chdir("/") < 0) return Fail(error, "chdir /");
  return true;
}

bool SealRoot(SetupError* error) {
  if (sethostname("sandbox", 7) < 0) return Fail(error, "sethostname");
  return MountAt(nullptr, "/", nullptr,
                 MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr, error);
}

// ---- The script process: between fork and exec, no allocation. ----

struct ScriptPlan {
  char* argv[6];
  int stdin_fd, stdout_fd, stderr_fd, status_fd;
  rlim_t processes, cpu_seconds;
  const sock_fprog* seccomp;
};

[[noreturn]] void ExecScript(const ScriptPlan& plan) {
  ScriptLimits limits = {plan.processes, plan.cpu_seconds,
                         internal::kScriptOpenFiles,
                         internal::kScriptFileSizeBytes};
  if (!DropToScriptUser(limits) ||
      !TakeStdio(plan.stdin_fd, plan.stdout_fd, plan.stderr_fd)) {
    _exit(126);
  }
  InitMessage started = {};
  started.kind = internal::kStarted;
  started.mono_ns = MonotonicNs();
  WriteMessage(plan.status_fd, started);
  if (!SealScriptProcess(plan.seccomp)) _exit(126);
  execve(plan.argv[0], plan.argv, kEnvironment);
  static const char kExecFailed[] = "dex: cannot start the interpreter\n";
  ssize_t ignored = write(2, kExecFailed, sizeof(kExecFailed) - 1);
  (void)ignored;
  _exit(127);
}

// ---- Init's watch over the run. ----

struct Usage {
  int64_t memory_kb = 0;  // anonymous + shmem resident, tmpfs included
  int64_t cpu_us = 0;     // live processes and reaped ones
  int64_t tasks = 0;      // threads of every live process
};

// Reads a small /proc file into buf (NUL-terminated). False if gone.
bool ReadProcFile(const char* path, char* buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buf, size - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  return true;
}

int64_t StatusField(const char* status, const char* name) {
  const char* at = strstr(status, name);
  return at == nullptr ? 0 : strtoll(at + strlen(name), nullptr, 10);
}

int64_t RusageChildrenUs() {
  rusage usage;
  getrusage(RUSAGE_CHILDREN, &usage);
  return (int64_t{usage.ru_utime.tv_sec} + usage.ru_stime.tv_sec) * 1'000'000 +
         usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
}

class Watch {
 public:
  // `link_fd`: a warm run's link, on which the zygote reports how the
  // script process (its child, not ours) ended; -1 for a cold run, whose
  // script is our child.
  Watch(const SpawnRequest& request, int status_fd, int control_fd,
        int link_fd = -1)
      : request_(request),
        status_fd_(status_fd),
        control_fd_(control_fd),
        link_fd_(link_fd),
        tick_us_(1'000'000 / sysconf(_SC_CLK_TCK)) {}

  // Runs until the script exits, then clears the namespace and reports.
  [[noreturn]] void Run(pid_t script, int signal_fd) {
    script_ = script;
    UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));
    itimerspec every = {{0, kSampleNs}, {0, kSampleNs}};
    timerfd_settime(timer.get(), 0, &every, nullptr);
    while (!script_done_ && !Abandoned()) {
      pollfd fds[4] = {{signal_fd, POLLIN, 0},
                       {timer.get(), POLLIN, 0},
                       {control_fd_.get(), POLLIN, 0},
                       {link_fd_.get(), POLLIN, 0}};
      if (poll(fds, 4, -1) < 0) continue;  // negative fds are skipped
      if (fds[0].revents != 0) DrainSignals(signal_fd);
      if (fds[3].revents != 0) OnLink();
      Reap(WNOHANG);
      if (script_done_) break;
      if (fds[2].revents != 0) OnControl();
      if (fds[1].revents != 0) OnTick(timer.get());
    }
    KillAndReapAll();
    Report();
  }

 private:
  void DrainSignals(int signal_fd) {
    signalfd_siginfo info;
    while (read(signal_fd, &info, sizeof(info)) == sizeof(info)) {
    }
  }

  void KillAll() { kill(-1, SIGKILL); }

  // Told to stop (wall limit, or the supervisor is gone) and nothing is
  // left to wait for: no child, and no word to come from a warm run's
  // zygote (its link closed, or a second has passed since the kill). A
  // warm run's script may never have reached this namespace (its zygote
  // died first): without this, init would wait for it forever.
  bool Abandoned() const {
    return no_children_ &&
           (flags_ &
            (internal::kFlagWallKill | internal::kFlagSupervisorGone)) != 0 &&
           (!link_fd_.valid() || ticks_since_kill_ >= kLinkGraceTicks);
  }

  // The script process's word that its script starts, then the zygote's
  // on how the script process ended. An end before the start is a set-up
  // failure. Anything else (end of file above all) means the zygote is
  // gone: the script process, if still alive, has passed to the spawner,
  // and how it ends can no longer be known. Either fails the run as a
  // sandbox error.
  void OnLink() {
    internal::ScriptExit exit = {};
    ssize_t n = recv(link_fd_.get(), &exit, sizeof(exit), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n == 1 && !script_started_ &&
        reinterpret_cast<const char*>(&exit)[0] == internal::kScriptStarted) {
      script_started_ = true;
      return;
    }
    link_fd_.Reset();
    script_done_ = true;
    end_ns_ = MonotonicNs();
    if (n != sizeof(exit) || exit.magic != internal::kScriptExitMagic) {
      flags_ |= internal::kFlagSetupFailed;
      error_ = "the zygote ended before the script process";
      return;
    }
    if (!script_started_) {
      flags_ |= internal::kFlagSetupFailed;
      error_ = "the script process ended before its script started";
      return;
    }
    script_status_ = exit.wait_status;
    script_cpu_us_ = exit.cpu_us;
    peak_kb_ = std::max(peak_kb_, exit.max_rss_kb);
  }

  // Reaps children; records the script's status and end time.
  void Reap(int options) {
    for (;;) {
      int status;
      rusage usage;
      pid_t pid = wait4(-1, &status, options | __WALL, &usage);
      no_children_ = pid < 0 && errno == ECHILD;
      if (pid <= 0) return;
      peak_kb_ = std::max<int64_t>(peak_kb_, usage.ru_maxrss);
      if (pid == script_) {
        script_done_ = true;
        script_status_ = status;
        end_ns_ = MonotonicNs();
      }
    }
  }

  // Kill again each round: a fork racing the first kill may have escaped.
  void KillAndReapAll() {
    for (;;) {
      KillAll();
      int status;
      rusage usage;
      pid_t pid = wait4(-1, &status, __WALL, &usage);
      if (pid < 0 && errno == ECHILD) return;
      if (pid > 0) peak_kb_ = std::max<int64_t>(peak_kb_, usage.ru_maxrss);
    }
  }

  void OnControl() {
    char byte;
    ssize_t n = read(control_fd_.get(), &byte, 1);
    if (n < 0 && errno == EINTR) return;
    flags_ |= n > 0 ? internal::kFlagWallKill : internal::kFlagSupervisorGone;
    ticks_since_kill_ = 0;
    control_fd_.Reset();
    KillAll();
    Reap(WNOHANG);
  }

  void OnTick(int timer_fd) {
    uint64_t expirations;
    if (read(timer_fd, &expirations, sizeof(expirations)) < 0) return;
    if (flags_ & (internal::kFlagWallKill | internal::kFlagSupervisorGone)) {
      ticks_since_kill_ += static_cast<int>(expirations);
    }
    if (killed_) return;
    Usage usage = Sample();
    peak_kb_ = std::max(peak_kb_, usage.memory_kb);
    if (usage.tasks >= request_.processes) {
      flags_ |= internal::kFlagProcessLimit;
    }
    if (usage.memory_kb > request_.memory_kb) {
      flags_ |= internal::kFlagMemoryLimit;
    } else if (usage.cpu_us > request_.cpu_ms * 1000) {
      flags_ |= internal::kFlagCpuLimit;
    } else {
      return;
    }
    killed_ = true;
    KillAll();
  }

  Usage Sample() {
    Usage usage;
    usage.cpu_us = RusageChildrenUs() + script_cpu_us_;
    DIR* proc = opendir("/proc");
    if (proc == nullptr) return usage;
    while (dirent* entry = readdir(proc)) {
      if (entry->d_name[0] < '1' || entry->d_name[0] > '9') continue;
      if (strcmp(entry->d_name, "1") == 0) continue;
      SampleProcess(entry->d_name, &usage);
    }
    closedir(proc);
    usage.memory_kb += ScratchUsedKb();
    return usage;
  }

  void SampleProcess(const char* pid, Usage* usage) {
    char path[64];
    char buf[4096];
    snprintf(path, sizeof(path), "/proc/%s/stat", pid);
    if (!ReadProcFile(path, buf, sizeof(buf))) return;
    // Fields after the command name, which may itself hold spaces: state
    // is field 3; utime..cstime are 14..17; num_threads is 20.
    const char* at = strrchr(buf, ')');
    if (at == nullptr) return;
    const char* cursor = strchr(at + 2, ' ');  // past the state letter
    if (cursor == nullptr) return;
    int64_t field[21] = {};
    for (int i = 4; i <= 20; ++i) {
      char* end;
      field[i] = strtoll(cursor, &end, 10);
      if (end == cursor) return;
      cursor = end;
    }
    usage->cpu_us += (field[14] + field[15] + field[16] + field[17]) * tick_us_;
    usage->tasks += field[20];
    // Proportional, not resident, set size: pages a forked child still
    // shares with its parent count once in all, not once per process.
    snprintf(path, sizeof(path), "/proc/%s/smaps_rollup", pid);
    if (!ReadProcFile(path, buf, sizeof(buf))) return;
    usage->memory_kb +=
        StatusField(buf, "Pss_Anon:") + StatusField(buf, "Pss_Shmem:");
  }

  static int64_t ScratchUsedKb() {
    struct statfs fs;
    if (statfs("/work", &fs) < 0) return 0;
    return static_cast<int64_t>((fs.f_blocks - fs.f_bfree) * fs.f_bsize / 1024);
  }

  [[noreturn]] void Report() {
    InitMessage final_report = {};
    final_report.kind = internal::kFinal;
    final_report.flags = flags_;
    final_report.wait_status = script_status_;
    final_report.mono_ns = end_ns_;
    final_report.cpu_us = RusageChildrenUs() + script_cpu_us_;
    final_report.peak_memory_kb = peak_kb_;
    snprintf(final_report.error, sizeof(final_report.error), "%s",
             error_.c_str());
    WriteMessage(status_fd_, final_report);
    _exit(0);
  }

  const SpawnRequest& request_;
  int status_fd_;
  UniqueFd control_fd_;
  UniqueFd link_fd_;
  int64_t tick_us_;
  int64_t script_cpu_us_ = 0;  // a warm script's, from the zygote
  int ticks_since_kill_ = 0;
  bool script_started_ = false;  // a warm run's, from its script process
  std::string error_;            // with kFlagSetupFailed
  pid_t script_ = -1;
  bool script_done_ = false;
  bool no_children_ = false;
  bool killed_ = false;
  int script_status_ = 0;
  int64_t end_ns_ = 0;
  int64_t peak_kb_ = 0;
  uint32_t flags_ = 0;
};

[[noreturn]] void ReportSetupFailure(int status_fd, const std::string& what) {
  InitMessage message = {};
  message.kind = internal::kFinal;
  message.flags = internal::kFlagSetupFailed;
  snprintf(message.error, sizeof(message.error), "%s", what.c_str());
  WriteMessage(status_fd, message);
  _exit(1);
}

// The new root, still a stage under kStage. Everything here creates files,
// so it needs the run's ids mapped (the kernel refuses inodes whose owner
// has no mapping): a pre-built sandbox gets its ids when it is made.
bool BuildStage(SetupError* error) {
  return MakeMountsPrivate(error) && MountStageRoot(error) &&
         BindSystemDirs(error) && MirrorEtc(error) && WriteEtcFiles(error) &&
         BuildDev(error) && MountProc(error) && MakeScratchMountPoints(error);
}

// Root is pivoted and sealed last: nothing of the host stays reachable.
bool BuildSandbox(const SpawnRequest& request, int script_fd,
                  SetupError* error) {
  return BecomeNamespaceRoot(error) && BuildStage(error) &&
         MountScratch(request.tmpfs_kb, error) &&
         CopyScript(script_fd, request.script_bytes,
                    std::string(kStage) + "/work/main.py", error) &&
         PivotRoot(error) && SealRoot(error);
}

// A pre-built sandbox: the same root, final but for the run's own parts
// (the scratch tmpfs's size and /work/main.py), which go-time adds.
bool BuildWarmSandbox(SetupError* error) {
  return BecomeNamespaceRoot(error) && BuildStage(error) &&
         MountScratch(kPlaceholderScratchKb, error) && PivotRoot(error) &&
         SealRoot(error);
}

// SIGCHLD only through a signalfd; the script is reaped by Watch. -1 on
// failure, errno set.
int BlockChildSignal() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  return signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
}

// What `ps` shows for an init. A pre-built sandbox's processes are named
// "dex-idle" until their run arrives, so that a host-side scan can tell
// them from processes a run started (only a process with the sandbox's
// root id can name them: the script's user cannot rename init).
void SetProcessName(const char* name) {
  prctl(PR_SET_NAME, reinterpret_cast<unsigned long>(name), 0, 0, 0);
}

// The go message of a pre-built init. False when the spawner closed the
// socket (the pool shrank) or sent something malformed.
bool ReceiveGo(int go_fd, SpawnRequest* request,
               int fds[internal::kWarmInitFdCount]) {
  size_t count = 0;
  ssize_t n = internal::ReceiveWithFds(go_fd, request, sizeof(*request), fds,
                                       internal::kWarmInitFdCount, &count);
  if (n != sizeof(*request) || count != internal::kWarmInitFdCount) {
    return false;
  }
  return true;
}

// The script's pid in our pid namespace, sent by the zygote's script
// process over the link. -1 if the zygote gave up on this run.
pid_t ReceiveScriptPid(int link_fd) {
  int32_t pid = -1;
  ssize_t n;
  do {
    n = read(link_fd, &pid, sizeof(pid));
  } while (n < 0 && errno == EINTR);
  return n == sizeof(pid) && pid > 1 ? pid : -1;
}

}  // namespace

void RunInit(const InitArgs& args) {
  int status_fd = args.fds[internal::kStatusFd];
  char go = 0;
  // The spawner writes one byte once our id maps exist; end of file means
  // it gave up on us.
  if (read(args.sync_fd, &go, 1) != 1) _exit(1);
  close(args.sync_fd);

  SetupError error;
  if (!BuildSandbox(*args.request, args.fds[internal::kScriptFd], &error)) {
    ReportSetupFailure(status_fd, error.text);
  }
  close(args.fds[internal::kScriptFd]);

  int signal_fd = BlockChildSignal();
  if (signal_fd < 0) {
    ReportSetupFailure(status_fd, std::string("signalfd: ") + strerror(errno));
  }

  const SpawnRequest& request = *args.request;
  ScriptPlan plan = {};
  static char kIsolated[] = "-I";
  static char kUnbuffered[] = "-u";
  static char kMain[] = "main.py";
  plan.argv[0] = const_cast<char*>(request.python_path);
  plan.argv[1] = kIsolated;
  plan.argv[2] = kUnbuffered;
  plan.argv[3] = kMain;
  plan.argv[4] = nullptr;
  plan.stdin_fd = args.fds[internal::kStdinFd];
  plan.stdout_fd = args.fds[internal::kStdoutFd];
  plan.stderr_fd = args.fds[internal::kStderrFd];
  plan.status_fd = status_fd;
  plan.processes = request.processes;
  plan.cpu_seconds = request.cpu_ms / 1000 + 2;
  plan.seccomp = args.seccomp;

  pid_t script = fork();
  if (script < 0) {
    ReportSetupFailure(status_fd, std::string("fork: ") + strerror(errno));
  }
  if (script == 0) ExecScript(plan);

  // Only the script may hold its pipes: their end of file ends the reads.
  close(plan.stdin_fd);
  close(plan.stdout_fd);
  close(plan.stderr_fd);
  Watch watch(request, status_fd, args.fds[internal::kControlFd]);
  watch.Run(script, signal_fd);
}

void RunWarmInit(int go_fd, int link_fd) {
  // The spawner writes one byte once our id maps exist; end of file means
  // it gave up on us (or the pool shrank).
  SetProcessName("dex-idle");
  char mapped = 0;
  if (read(go_fd, &mapped, 1) != 1) _exit(0);
  SetupError error;
  if (!BuildWarmSandbox(&error)) {
    fprintf(stderr, "dex-spawner: pre-built sandbox: %s\n", error.text.c_str());
    _exit(1);
  }
  int signal_fd = BlockChildSignal();
  if (signal_fd < 0) _exit(1);

  // The root is final: the zygote's fork, the script process, may join our
  // namespaces now. It stays the zygote's child and waits for its run as
  // we do.
  char ready = 'r';
  if (send(link_fd, &ready, 1, MSG_NOSIGNAL) != 1) _exit(1);
  pid_t script = ReceiveScriptPid(link_fd);
  if (script < 0) _exit(1);

  SpawnRequest request;
  int fds[internal::kWarmInitFdCount];
  if (!ReceiveGo(go_fd, &request, fds)) _exit(0);
  close(go_fd);
  SetProcessName("dex-init");
  int status_fd = fds[internal::kWarmStatusFd];
  if (!ResizeScratch(request.tmpfs_kb, &error) ||
      !CopyScript(fds[internal::kWarmScriptFd], request.script_bytes,
                  "/work/main.py", &error)) {
    ReportSetupFailure(status_fd, error.text);
  }
  close(fds[internal::kWarmScriptFd]);
  char go = 'g';
  if (send(link_fd, &go, 1, MSG_NOSIGNAL) != 1) {
    ReportSetupFailure(status_fd, "link to the script process: closed");
  }
  InitMessage started = {};
  started.kind = internal::kStarted;
  started.mono_ns = MonotonicNs();
  WriteMessage(status_fd, started);
  // Watch learns from the zygote, over the link, how the script ended.
  Watch watch(request, status_fd, fds[internal::kWarmControlFd], link_fd);
  watch.Run(script, signal_fd);
}

}  // namespace dex::spawner
