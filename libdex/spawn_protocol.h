// Wire structs shared by libdex (the supervisor) and dex-spawner. Plain C
// layouts, sent whole: both sides are built from the same tree, so no
// versioning beyond a magic number is needed.
//
// Library -> spawner: one SOCK_SEQPACKET message holding a SpawnRequest and,
// as SCM_RIGHTS, the run's fds in SpawnFd order.
// Spawner -> library: one SpawnReply, with init's pidfd as SCM_RIGHTS when
// ok is 1.
// Run's init -> supervisor (status pipe): InitMessage records, each written
// with one write() (smaller than PIPE_BUF, so never interleaved).
// Supervisor -> init (control pipe): any byte means "wall timeout, kill";
// end of file means the supervisor is gone, kill too.
//
// Warm runs (see README.md, "Warm sandboxes"). The spawner keeps a pool of
// pre-built sandboxes, each made before any request as follows:
// - the spawner clones an init into fresh namespaces, maps the entry's own
//   host id pair and writes one byte on the init's go socket;
// - init builds the whole root (scratch tmpfs at a placeholder size),
//   pivots and seals it, and writes 'r' on the link socket;
// - the spawner sends the zygote (an interpreter started once,
//   `python3 -I -u`) a ZygoteRequest with the fds in ZygoteFd order; its
//   fork, the script process, waits for 'r' and joins the namespaces. It
//   writes its pid in the run's pid namespace on the link (an int32) and
//   waits on its go socket. It stays the zygote's child: when it ends, the
//   zygote reaps it and writes a ScriptExit on the link. Once set up for
//   its run, just before the script, it writes kScriptStarted there.
// For a run the spawner sends:
// - to the init, on its go socket: the SpawnRequest and, as SCM_RIGHTS,
//   the fds in WarmInitFd order; init sizes the scratch tmpfs, writes
//   main.py and writes 'g' on the link;
// - to the script process, on its go socket: a ZygoteRequest with the
//   run's limits and the fds in ScriptGoFd order. It waits for 'g' before
//   it enters /work.
#ifndef DEX_LIBDEX_SPAWN_PROTOCOL_H_
#define DEX_LIBDEX_SPAWN_PROTOCOL_H_

#include <stdint.h>

namespace dex::internal {

inline constexpr uint32_t kSpawnMagic = 0x64657831;  // "dex1"

// Order of the fds attached to a SpawnRequest.
enum SpawnFd {
  kScriptFd = 0,  // memfd holding the script; init reads it from offset 0
  kStdinFd,       // read end of the script's stdin pipe
  kStdoutFd,      // write end of the script's stdout pipe
  kStderrFd,      // write end of the script's stderr pipe
  kStatusFd,      // write end of init's status pipe
  kControlFd,     // read end of the supervisor's control pipe
  kSpawnFdCount,
};

// Order of the fds attached to the go message of a pre-built init.
enum WarmInitFd {
  kWarmScriptFd = 0,  // as kScriptFd
  kWarmStatusFd,      // as kStatusFd
  kWarmControlFd,     // as kControlFd
  kWarmInitFdCount,
};

// Order of the fds attached to a ZygoteRequest sent to the zygote.
enum ZygoteFd {
  kZygotePidfd = 0,  // pidfd of the run's init: the namespaces to join
  kZygoteLinkFd,     // the script's end of the link socket
  kZygoteGoFd,       // the script's end of its go socket
  kZygoteFdCount,
};

// Order of the fds attached to a ZygoteRequest sent to a waiting script
// process on its go socket.
enum ScriptGoFd {
  kScriptStdinFd = 0,
  kScriptStdoutFd,
  kScriptStderrFd,
  kScriptGoFdCount,
};

inline constexpr uint32_t kZygoteMagic = 0x64657a31;      // "dez1"
inline constexpr uint32_t kScriptExitMagic = 0x64657a32;  // "dez2"
// One byte from a warm script process to its init, on the link, once it
// is set up (seccomp loaded) and about to run the script.
inline constexpr char kScriptStarted = 'S';

// How a warm script process ended, from the zygote (its parent) to the
// run's init over the link. Little-endian, no padding; packed by the
// loader as "<Iiqq".
struct ScriptExit {
  uint32_t magic;
  int32_t wait_status;  // as from wait4
  int64_t cpu_us;       // user + system, its reaped children included
  int64_t max_rss_kb;   // ru_maxrss
};
static_assert(sizeof(ScriptExit) == 24, "the loader packs 24 bytes");

// Limits the script process sets on itself before it drops privileges
// (zero in the zygote's copy, which only asks for a fork). Little-endian,
// no padding; read by the zygote's Python loader.
struct ZygoteRequest {
  uint32_t magic;
  uint32_t reserved;
  int64_t processes;        // RLIMIT_NPROC
  int64_t cpu_seconds;      // RLIMIT_CPU soft; hard is one more
  int64_t open_files;       // RLIMIT_NOFILE
  int64_t file_size_bytes;  // RLIMIT_FSIZE
};
static_assert(sizeof(ZygoteRequest) == 40, "the loader unpacks 40 bytes");

// Per-process limits of every script, warm or cold. RLIMIT_CPU is a
// per-process backstop only; init enforces the summed limit.
inline constexpr int64_t kScriptOpenFiles = 256;
inline constexpr int64_t kScriptFileSizeBytes = int64_t{1} << 30;

struct SpawnRequest {
  uint32_t magic;
  uint32_t host_root_id;  // host uid/gid of the sandbox's root (init); set
                          // by the spawner, which owns the id range
  uint32_t host_user_id;  // host uid/gid of the sandbox's user 1000
  uint32_t reserved;
  int64_t cpu_ms;         // summed CPU limit of the run
  int64_t memory_kb;      // summed resident memory limit, tmpfs included
  int64_t processes;      // RLIMIT_NPROC of the script's user
  int64_t tmpfs_kb;       // size of the run's scratch tmpfs (/tmp, /work)
  int64_t script_bytes;   // size of the script in the memfd
  char python_path[256];  // absolute, NUL-terminated
};

struct SpawnReply {
  int32_t ok;  // 1: started, pidfd attached; 0: see error
  int32_t pid;
  int32_t warm;        // 1: served by a pre-built sandbox and the zygote
  int32_t warm_ready;  // pre-built sandboxes left in the pool
  char error[256];
};

enum InitMessageKind : uint32_t {
  kStarted = 1,  // the script is about to exec; mono_ns is its start
  kFinal = 2,    // every process of the run is dead and reaped
};

// Bits of InitMessage::flags.
inline constexpr uint32_t kFlagMemoryLimit = 1u << 0;
inline constexpr uint32_t kFlagCpuLimit = 1u << 1;
inline constexpr uint32_t kFlagWallKill = 1u << 2;      // control byte received
inline constexpr uint32_t kFlagProcessLimit = 1u << 3;  // nproc reached
inline constexpr uint32_t kFlagSupervisorGone = 1u << 4;
inline constexpr uint32_t kFlagSetupFailed = 1u << 5;  // see error

struct InitMessage {
  uint32_t kind;
  uint32_t flags;
  int32_t wait_status;  // of the script process, as from waitpid
  int32_t reserved;
  int64_t mono_ns;  // kStarted: script start; kFinal: script end
  int64_t cpu_us;   // every process of the run, reaped ones included
  int64_t peak_memory_kb;
  char error[200];  // NUL-terminated when kFlagSetupFailed is set
};

static_assert(sizeof(InitMessage) < 512, "must stay below PIPE_BUF");

}  // namespace dex::internal

#endif  // DEX_LIBDEX_SPAWN_PROTOCOL_H_
