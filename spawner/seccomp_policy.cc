#include "spawner/seccomp_policy.h"

#include <errno.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "spawner/unique_fd.h"

namespace dex::spawner {
namespace {

// The policy is a reviewed deny list on top of default ALLOW: Python and its
// C extensions use a wide and shifting set of syscalls, and everything
// dangerous below is either privileged (and already refused by the user
// namespace) or a known kernel attack surface.
const char* const kDenied[] = {
    // Inspecting or steering other processes.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    // Kernel attack surface a script never needs.
    "perf_event_open",
    "bpf",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // The kernel keyring is not namespaced.
    "keyctl",
    "add_key",
    "request_key",
    // Mount tables, old and new API, and root changes.
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // New namespaces would give the script a fresh all-capable root.
    "unshare",
    "setns",
    // Whole-machine operations.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
    "quotactl",
    "quotactl_fd",
    "iopl",
    "ioperm",
    "uselib",
    "lookup_dcookie",
    // In memory mode "sampled" these pages escape the RSS the init sums.
    "memfd_create",
    "memfd_secret",
    "shmget",
    "shmat",
    // SysV and POSIX message queues hold kernel memory that no process's
    // RSS shows: up to ~500 MiB per run through msgget at the default
    // msgmni/msgmnb.
    "msgget",
    "mq_open",
    // The clock is shared with the host.
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    // File handles bypass path-based checks.
    "name_to_handle_at",
    "open_by_handle_at",
};

// Flags refused on clone(); threads and fork pass. The namespace flags,
// and CLONE_PARENT: a warm script process is the zygote's child, and a
// sibling made with CLONE_PARENT would be the zygote's too.
const uint64_t kCloneDeniedFlags[] = {
    CLONE_NEWNS,   CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
    CLONE_NEWUSER, CLONE_NEWPID,    CLONE_NEWNET, 0x80 /* CLONE_NEWTIME */,
    CLONE_PARENT,
};

class FilterContext {
 public:
  FilterContext() : ctx_(seccomp_init(SCMP_ACT_ALLOW)) {}
  ~FilterContext() {
    if (ctx_ != nullptr) seccomp_release(ctx_);
  }
  FilterContext(const FilterContext&) = delete;
  FilterContext& operator=(const FilterContext&) = delete;
  scmp_filter_ctx get() const { return ctx_; }

 private:
  scmp_filter_ctx ctx_;
};

bool Fail(std::string* error, const char* what, int rc) {
  *error = std::string("seccomp: ") + what + ": " + std::strerror(-rc);
  return false;
}

// Unknown names (older libseccomp) are skipped: the kernel then lacks them
// too or they are refused by the user namespace anyway.
int DenyAll(scmp_filter_ctx ctx) {
  for (const char* name : kDenied) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    if (rc < 0) return rc;
  }
  return 0;
}

int DenyCloneFlags(scmp_filter_ctx ctx) {
  for (uint64_t flag : kCloneDeniedFlags) {
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
    if (rc < 0) return rc;
  }
  // clone3 passes its flags in memory, where seccomp cannot look; ENOSYS
  // makes glibc fall back to clone().
  return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
}

// Only AF_UNIX (1), AF_INET (2) and AF_INET6 (10); AF_VSOCK matters most:
// the host's agent listens there. Values above 10 include any high bits a
// caller sets, which the kernel would truncate away.
int DenySocketFamilies(scmp_filter_ctx ctx) {
  for (int call : {SCMP_SYS(socket), SCMP_SYS(socketpair)}) {
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), call, 1,
                              SCMP_A0(SCMP_CMP_GT, AF_INET6));
    if (rc < 0) return rc;
    for (uint64_t family = 0; family < AF_INET6; ++family) {
      if (family == AF_UNIX || family == AF_INET) continue;
      rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), call, 1,
                            SCMP_A0(SCMP_CMP_EQ, family));
      if (rc < 0) return rc;
    }
  }
  return 0;
}

// TIOCSTI pushes input into a terminal, TIOCLINUX reaches the console. The
// request is an unsigned int: compare its low 32 bits only.
int DenyTerminalIoctls(scmp_filter_ctx ctx) {
  for (uint64_t request :
       {0x5412ull /* TIOCSTI */, 0x541Cull /* TIOCLINUX */}) {
    int rc =
        seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                         SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, request));
    if (rc < 0) return rc;
  }
  return 0;
}

// personality() may only be queried (0xffffffff) or set to PER_LINUX (0):
// other personalities change address-space layout and exec semantics. The
// kernel reads the low 32 bits. A rule may test an argument once, so "not 0
// and not all ones" is spelled per bit: with bit 31 clear any other bit set
// is refused; with bit 31 set any other bit clear is refused.
int DenyPersonalityChanges(scmp_filter_ctx ctx) {
  constexpr uint64_t kTop = 1ull << 31;
  for (int bit = 0; bit < 31; ++bit) {
    uint64_t b = 1ull << bit;
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality),
                              1, SCMP_A0(SCMP_CMP_MASKED_EQ, kTop | b, b));
    if (rc < 0) return rc;
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality), 1,
                          SCMP_A0(SCMP_CMP_MASKED_EQ, kTop | b, kTop));
    if (rc < 0) return rc;
  }
  return 0;
}

// A warm run's script is a fork of the zygote, so its memory belongs to the
// host's user namespace: once it made itself non-dumpable, the run's init
// (root only inside the run) could no longer read its /proc entries, and
// its memory and CPU would escape the sampler. Refuse PR_SET_DUMPABLE (4);
// the loader sets it before the filter is loaded. The option is an int:
// compare its low 32 bits only, as the kernel reads it.
int DenyDumpableChanges(scmp_filter_ctx ctx) {
  return seccomp_rule_add(
      ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(prctl), 1,
      SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, 4 /* PR_SET_DUMPABLE */));
}

// 32-bit calls (int 0x80) would bypass a filter written for x86_64 numbers:
// only the native arch is in the filter, and a foreign one kills the
// process. libseccomp also sends x32 numbers (>= 0x40000000) there.
// Also asks libseccomp for a binary tree of syscall numbers instead of a
// linear list: the same decisions, in fewer instructions per syscall. That
// matters once per run too: attaching the filter, the kernel runs it for
// every syscall number to build its cache of always-allowed ones (about
// 140 us a run with the list, 80 us with the tree, on these machines).
int SetFilterAttributes(scmp_filter_ctx ctx) {
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
  if (rc < 0) return rc;
  return seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
}

bool Export(scmp_filter_ctx ctx, std::vector<sock_filter>* program,
            std::string* error) {
  // libseccomp 2.5 exports to an fd only; a private memfd of the spawner.
  UniqueFd fd(memfd_create("dex-seccomp", MFD_CLOEXEC));
  if (!fd.valid()) return Fail(error, "memfd_create", -errno);
  int rc = seccomp_export_bpf(ctx, fd.get());
  if (rc < 0) return Fail(error, "export", rc);
  off_t size = lseek(fd.get(), 0, SEEK_END);
  if (size <= 0 || size % sizeof(sock_filter) != 0) {
    return Fail(error, "export size", -EINVAL);
  }
  program->resize(size / sizeof(sock_filter));
  if (pread(fd.get(), program->data(), size, 0) != size) {
    return Fail(error, "read back", -EIO);
  }
  return true;
}

}  // namespace

bool CompileSeccompPolicy(std::vector<sock_filter>* program,
                          std::string* error) {
  FilterContext ctx;
  if (ctx.get() == nullptr) return Fail(error, "init", -ENOMEM);
  int rc = SetFilterAttributes(ctx.get());
  if (rc < 0) return Fail(error, "arch policy", rc);
  if ((rc = DenyAll(ctx.get())) < 0) return Fail(error, "deny list", rc);
  if ((rc = DenyCloneFlags(ctx.get())) < 0) {
    return Fail(error, "clone rules", rc);
  }
  if ((rc = DenySocketFamilies(ctx.get())) < 0) {
    return Fail(error, "socket rules", rc);
  }
  if ((rc = DenyTerminalIoctls(ctx.get())) < 0) {
    return Fail(error, "ioctl rules", rc);
  }
  if ((rc = DenyPersonalityChanges(ctx.get())) < 0) {
    return Fail(error, "personality rule", rc);
  }
  if ((rc = DenyDumpableChanges(ctx.get())) < 0) {
    return Fail(error, "prctl rule", rc);
  }
  return Export(ctx.get(), program, error);
}

}  // namespace dex::spawner
