// Sandbox: runs one program under limits in a fresh, disposable sandbox and
// measures it. Knows nothing of users, keys or LMDB.
//
// Sandboxes are started by a single-threaded spawner process (dex-spawner)
// that Open() starts with posix_spawn, so this is safe inside host
// applications that already run threads. The calling thread supervises its
// run: it owns the wall clock and reads the output pipes.
#ifndef DEX_SANDBOX_H_
#define DEX_SANDBOX_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "dex/env.h"
#include "dex/export.h"
#include "dex/status.h"

namespace dex {

// Limits of one run. Every field must be positive.
struct RunLimits {
  int64_t wall_ms = 10'000;        // script start to exit
  int64_t cpu_ms = 10'000;         // summed over every process of the run
  int64_t memory_mb = 256;         // resident memory of the run, summed
  int64_t output_bytes = 1 << 20;  // raw bytes kept per stream
  int64_t processes = 64;          // processes and threads at once
};

// Why a run ended, in the order the verdict is chosen.
enum class Reason {
  kOk,            // exit code 0
  kNonzeroExit,   // exit code other than 0
  kSignal,        // ended by a signal it did not get from dex
  kWallTimeout,   // killed at the wall limit
  kCpuTimeout,    // killed at the CPU limit
  kMemoryLimit,   // killed at the memory limit
  kProcessLimit,  // failed or killed at the process limit
  kSandboxError,  // dex could not run it
};
DEX_EXPORT const char* ReasonName(Reason reason);

struct RunRequest {
  std::string script;                     // Python source
  std::optional<std::string> stdin_data;  // byte-exact; none = empty, closed
  RunLimits limits;
};

struct RunOutcome {
  Reason reason = Reason::kSandboxError;
  int exit_code = 0;  // the script's own, or 128 + signal
  int signal = 0;     // the signal that ended the script, 0 if none
  int64_t wall_ms = 0;
  int64_t cpu_ms = 0;
  int64_t peak_memory_kb = 0;
  int64_t startup_ms = 0;   // spawn request to script start
  std::string stdout_data;  // raw bytes, at most limits.output_bytes, cut
  std::string stderr_data;  // on the last whole UTF-8 character
  bool stdout_truncated = false;
  bool stderr_truncated = false;
};

enum class MemoryMode {
  kCgroup2,  // resident memory limited by a delegated cgroup v2 subtree
  kSampled,  // the run's init sums resident memory every few ms
};
DEX_EXPORT const char* MemoryModeName(MemoryMode mode);

struct SandboxOptions {
  // The dex-spawner binary. Empty: $DEX_SPAWNER, else dex-spawner next to
  // the running executable, else the build tree's, else the installed one.
  std::string spawner_path;
  // The interpreter, by absolute path; never looked up on PATH.
  std::string python_path = "/usr/bin/python3";
  // First host uid of the range sandboxes are mapped to; each sandbox gets
  // two ids of its own (its root and its script user). Default 1e9.
  uint32_t host_id_base = 1'000'000'000;
  // Number of id pairs in the range before reuse. Default 1e6.
  uint32_t host_id_count = 1'000'000;
  // Size cap of the run's scratch tmpfs, shared by /tmp and the work dir,
  // in MiB; 0 means half the run's memory limit. Tmpfs usage counts as
  // memory, so a cap below the limit lets a full disk fail with ENOSPC
  // inside the run instead of ending it as memory_limit.
  int64_t tmpfs_mb = 0;
  // Extra time after the wall limit before the supervisor kills the run's
  // init outright, should init not report. Default 2000 ms.
  int64_t kill_grace_ms = 2'000;
  // Warm sandboxes (README.md, "Warm sandboxes"): each run still gets sandboxes
  // of its own, used once, but they are built before the request arrives and
  // its interpreter is forked from one started in advance (a zygote), so
  // a run skips the interpreter's ~10 ms start-up and most of the sandbox's
  // set-up. Runs then share the zygote's str hash secret and address
  // layout with each other (nothing else). At most this many pre-built
  // sandboxes wait at once; 0 turns warm runs off (every run cold, nothing
  // shared). Each waiting sandbox holds an idle process and its namespaces
  // (~0.5 MiB). Default 8.
  int warm_pool_max = 8;
  // Pre-built sandboxes kept even when idle, at most warm_pool_max. The
  // pool grows by one each time a run finds it empty. Default 1.
  int warm_pool_min = 1;
  // After this long without a run, the pool shrinks by one (down to
  // warm_pool_min), and again after each further such period. Shorter
  // frees idle processes sooner; longer keeps bursts fast. Default 2000 ms.
  int64_t warm_idle_ms = 2'000;
  Logger* logger = NullLogger();
};

// Safe to share between threads: Run() may be called from many threads at
// once; each call supervises its own sandbox.
class DEX_EXPORT Sandbox {
 public:
  // Starts the spawner and runs a self-check (a tiny program in a full
  // sandbox). kUnavailable with the cause when sandboxes cannot be built.
  static Result<std::unique_ptr<Sandbox>> Open(const SandboxOptions& options);
  virtual ~Sandbox() = default;

  // Runs the script to its end. A script that fails, times out or is
  // killed is a successful Run with that verdict; an error Status means
  // dex could not run it.
  virtual Result<RunOutcome> Run(const RunRequest& request) = 0;
  virtual MemoryMode memory_mode() const = 0;
  // Pre-built sandboxes waiting, as of the last run started (0 when warm
  // runs are off or unavailable).
  virtual size_t warm_available() const { return 0; }
  // Whether warm runs are on and the zygote answered at the last run.
  virtual bool warm() const { return false; }
};

// Truncates raw bytes to at most `cap` bytes, cutting before an incomplete
// trailing UTF-8 character. True when anything was cut.
DEX_EXPORT bool TruncateUtf8(std::string* bytes, size_t cap);
// Valid UTF-8 with each maximal invalid sequence replaced by one U+FFFD,
// as Python's errors="replace".
DEX_EXPORT std::string SanitizeUtf8(std::string_view bytes);

}  // namespace dex

#endif  // DEX_SANDBOX_H_
