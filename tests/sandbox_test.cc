// The real sandbox, end to end: each case runs Python in a fresh sandbox
// through dex-spawner and checks the verdict and the measured figures.
#include "dex/sandbox.h"

#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_util.h"

namespace dex {
namespace {

// Each test process gets its own slice of host ids, so that leftovers can
// be told apart from the runs of another test binary running at once.
constexpr uint32_t kHostIdCount = 50'000;
const uint32_t kHostIdBase =
    1'000'000'000 + static_cast<uint32_t>(getpid() % 1000) * 2 * kHostIdCount;

// One spawner for the whole binary, as a server would hold it.
Sandbox* SharedSandbox() {
  static std::unique_ptr<Sandbox> sandbox = [] {
    SandboxOptions options;
    options.host_id_base = kHostIdBase;
    options.host_id_count = kHostIdCount;
    auto opened = Sandbox::Open(options);
    REQUIRE_MESSAGE(opened.ok(), opened.status().ToString());
    return std::move(opened.value());
  }();
  return sandbox.get();
}

RunOutcome MustRun(const std::string& script, RunLimits limits = {},
                   std::optional<std::string> stdin_data = std::nullopt) {
  RunRequest request;
  request.script = script;
  request.limits = limits;
  request.stdin_data = std::move(stdin_data);
  Result<RunOutcome> outcome = SharedSandbox()->Run(request);
  REQUIRE_MESSAGE(outcome.ok(), outcome.status().ToString());
  return std::move(outcome.value());
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct HostProcess {
  int pid = 0;
  int ppid = 0;
  std::string name;
  std::vector<uint64_t> uids;  // real, effective, saved, filesystem
};

// Every process on the host, from /proc/<pid>/status.
std::vector<HostProcess> HostProcesses() {
  std::vector<HostProcess> found;
  DIR* proc = opendir("/proc");
  while (dirent* entry = readdir(proc)) {
    int pid = std::atoi(entry->d_name);
    if (pid <= 0) continue;
    std::istringstream status(
        ReadFile("/proc/" + std::to_string(pid) + "/status"));
    HostProcess p;
    p.pid = pid;
    std::string line;
    while (std::getline(status, line)) {
      std::istringstream fields(line);
      std::string key;
      fields >> key;
      if (key == "Name:") fields >> p.name;
      if (key == "PPid:") fields >> p.ppid;
      if (key != "Uid:") continue;
      uint64_t uid;
      while (fields >> uid) p.uids.push_back(uid);
    }
    if (!p.uids.empty()) found.push_back(p);  // empty: gone while reading
  }
  closedir(proc);
  return found;
}

// Host processes with any uid in [base, base + 2 * count).
std::vector<HostProcess> SandboxProcessesOnHost(uint32_t base, uint32_t count) {
  std::vector<HostProcess> found;
  for (const HostProcess& p : HostProcesses()) {
    for (uint64_t uid : p.uids) {
      if (uid >= base && uid < base + 2 * count) {
        found.push_back(p);
        break;
      }
    }
  }
  return found;
}

// Host pids of the children of `parent` named `name`.
std::vector<int> ChildrenNamed(int parent, const std::string& name) {
  std::vector<int> found;
  for (const HostProcess& p : HostProcesses()) {
    if (p.ppid == parent && p.name == name) found.push_back(p.pid);
  }
  return found;
}

// A pre-built sandbox waiting in the pool (its init and its script
// process): named dex-idle, every uid its own root id (even offsets; a
// run's user has the odd one and cannot rename init). These belong to no
// run; they end with the Sandbox.
bool IsIdlePoolMember(const HostProcess& p, uint32_t base) {
  if (p.name != "dex-idle" || p.uids.empty()) return false;
  for (uint64_t uid : p.uids) {
    if (uid < base || (uid - base) % 2 != 0 || uid != p.uids[0]) return false;
  }
  return true;
}

// Host pids of processes that runs of this binary started (idle pool
// members excluded).
std::vector<int> SandboxPidsOnHost() {
  std::vector<int> pids;
  for (const HostProcess& p :
       SandboxProcessesOnHost(kHostIdBase, kHostIdCount)) {
    if (!IsIdlePoolMember(p, kHostIdBase)) pids.push_back(p.pid);
  }
  return pids;
}

// The spawner reaps each init right after it exits; allow it that moment.
bool NoSandboxProcessLeft() {
  for (int i = 0; i < 100; ++i) {
    if (SandboxPidsOnHost().empty()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST_CASE("hello prints and exits ok") {
  RunOutcome outcome = MustRun("print('hello')\n");
  CHECK(outcome.reason == Reason::kOk);
  CHECK(outcome.exit_code == 0);
  CHECK(outcome.signal == 0);
  CHECK(outcome.stdout_data == "hello\n");
  CHECK(outcome.stderr_data == "");
  CHECK_FALSE(outcome.stdout_truncated);
}

TEST_CASE("memory mode is sampled on machines without a delegated cgroup") {
  CHECK(SharedSandbox()->memory_mode() == MemoryMode::kSampled);
  CHECK(std::string(MemoryModeName(MemoryMode::kSampled)) == "sampled");
}

TEST_CASE("explicit exit code is kept") {
  RunOutcome outcome = MustRun("import sys\nprint('bye')\nsys.exit(3)\n");
  CHECK(outcome.reason == Reason::kNonzeroExit);
  CHECK(outcome.exit_code == 3);
  CHECK(outcome.stdout_data == "bye\n");
}

TEST_CASE("uncaught exception gives exit 1 and a traceback") {
  RunOutcome outcome = MustRun("def f():\n    raise ValueError('boom')\nf()\n");
  CHECK(outcome.reason == Reason::kNonzeroExit);
  CHECK(outcome.exit_code == 1);
  CHECK(outcome.stderr_data.find("Traceback") != std::string::npos);
  CHECK(outcome.stderr_data.find("ValueError: boom") != std::string::npos);
}

TEST_CASE("sleeping script ends at the wall limit") {
  RunLimits limits;
  limits.wall_ms = 1000;
  RunOutcome outcome = MustRun("import time\ntime.sleep(60)\n", limits);
  CHECK(outcome.reason == Reason::kWallTimeout);
  CHECK(outcome.wall_ms >= 1000);
  CHECK(outcome.wall_ms <= 2500);
  CHECK(outcome.cpu_ms < 500);
}

TEST_CASE("start-up is not charged to a tight wall limit") {
  RunLimits limits;
  limits.wall_ms = 300;
  for (int i = 0; i < 5; ++i) {
    RunOutcome outcome = MustRun("print(42)\n", limits);
    CHECK(outcome.reason == Reason::kOk);
    CHECK(outcome.stdout_data == "42\n");
  }
}

TEST_CASE("busy loop ends at the CPU limit") {
  RunLimits limits;
  limits.cpu_ms = 1000;
  limits.wall_ms = 5000;
  RunOutcome outcome = MustRun("while True:\n    pass\n", limits);
  CHECK(outcome.reason == Reason::kCpuTimeout);
  CHECK(outcome.cpu_ms >= 1000);
  CHECK(outcome.cpu_ms < 1500);
}

TEST_CASE("allocating without end ends at the memory limit") {
  RunLimits limits;
  limits.memory_mb = 128;
  RunOutcome outcome = MustRun(
      "chunks = []\nwhile True:\n    chunks.append(b'\\x01' * (16 << 20))\n",
      limits);
  CHECK(outcome.reason == Reason::kMemoryLimit);
  CHECK(outcome.peak_memory_kb >= 65536);
  CHECK(outcome.signal == 9);
}

TEST_CASE("one allocation above the limit ends at the memory limit") {
  RunOutcome outcome =
      MustRun("b = b'x' * (400 << 20)\nprint(len(b))\n");  // 256 MiB limit
  CHECK(outcome.reason == Reason::kMemoryLimit);
  CHECK(outcome.stdout_data == "");
}

TEST_CASE("reserving address space is not resident memory") {
  RunLimits limits;
  limits.memory_mb = 128;
  RunOutcome outcome = MustRun(
      "import mmap\nm = mmap.mmap(-1, 1 << 30)\nm[0] = 1\nprint('ok')\n",
      limits);
  CHECK(outcome.reason == Reason::kOk);
  CHECK(outcome.stdout_data == "ok\n");
}

TEST_CASE("fifty threads start under default limits") {
  RunOutcome outcome = MustRun(
      "import threading, time\n"
      "ts = [threading.Thread(target=time.sleep, args=(0.2,))"
      " for _ in range(50)]\n"
      "[t.start() for t in ts]\n[t.join() for t in ts]\n"
      "print('joined', len(ts))\n");
  CHECK(outcome.reason == Reason::kOk);
  CHECK(outcome.stdout_data == "joined 50\n");
}

TEST_CASE("no route to an outside address") {
  RunOutcome outcome = MustRun(
      "import socket\ntry:\n"
      "    socket.create_connection(('192.0.2.1', 80), timeout=2)\n"
      "    print('NET-OPEN')\n"
      "except OSError:\n    print('blocked')\n");
  CHECK(outcome.stdout_data == "blocked\n");
  CHECK(outcome.wall_ms < 3000);
}

TEST_CASE("no route to the host's loopback") {
  RunOutcome outcome = MustRun(
      "import socket\nok = []\nfor port in (80, 8080, 8000, 5432, 6379):\n"
      "    try:\n"
      "        socket.create_connection(('127.0.0.1', port), 1).close()\n"
      "        ok.append(port)\n"
      "    except OSError:\n        pass\nprint('open', ok)\n");
  CHECK(outcome.stdout_data == "open []\n");
}

TEST_CASE("vsock sockets are refused") {
  RunOutcome outcome = MustRun(
      "import socket\ntry:\n    socket.socket(40, socket.SOCK_STREAM)\n"
      "    print('open')\nexcept OSError as e:\n    print(e.errno)\n");
  CHECK(outcome.stdout_data == "1\n");
}

TEST_CASE("host processes are invisible") {
  RunOutcome outcome = MustRun(
      "import os\nprint([p for p in os.listdir('/proc') if p.isdigit()]"
      " == [str(os.getpid())])\n");
  CHECK(outcome.stdout_data == "True\n");
}

TEST_CASE("init's environment and command line are unreadable") {
  RunOutcome outcome = MustRun(
      "for p in ('/proc/1/environ', '/proc/1/cmdline'):\n"
      "    try:\n        open(p).read()\n        print('READ')\n"
      "    except OSError:\n        print('no')\n");
  CHECK(outcome.stdout_data == "no\nno\n");
}

TEST_CASE("no fd of the server reaches the run") {
  test::TempDir dir;
  // Deliberately inheritable: only the sandbox may stop it.
  int leaked = open((dir.path() + "/secret").c_str(), O_CREAT | O_RDWR, 0600);
  REQUIRE(leaked >= 0);
  RunOutcome outcome =
      MustRun("import os\nprint(sorted(os.listdir('/proc/self/fd')))\n");
  close(leaked);
  // 3 is the descriptor listdir itself holds open.
  CHECK(outcome.stdout_data == "['0', '1', '2', '3']\n");
}

TEST_CASE("environment holds only the documented variables") {
  RunOutcome outcome = MustRun("import os\nprint(sorted(os.environ))\n");
  CHECK(outcome.stdout_data ==
        "['HOME', 'LANG', 'MALLOC_ARENA_MAX', 'PATH', 'TMPDIR']\n");
}

TEST_CASE("stdin is byte-exact") {
  RunOutcome outcome =
      MustRun("import sys\nprint(repr(sys.stdin.buffer.read()))\n", {},
              std::string("abc\0\xff", 5));
  CHECK(outcome.stdout_data == "b'abc\\x00\\xff'\n");
}

TEST_CASE("stdin larger than a pipe buffer arrives whole") {
  RunOutcome outcome =
      MustRun("import sys\nprint(len(sys.stdin.buffer.read()))\n", {},
              std::string(3 << 20, 'x'));
  CHECK(outcome.reason == Reason::kOk);
  CHECK(outcome.stdout_data == "3145728\n");
}

// Regression: writing stdin to an exited script raised SIGPIPE in the host.
TEST_CASE("stdin the script never reads does not hurt the caller") {
  RunOutcome outcome =
      MustRun("print('no read')\n", {}, std::string(4 << 20, 'x'));
  CHECK(outcome.reason == Reason::kOk);
  CHECK(outcome.stdout_data == "no read\n");
}

TEST_CASE("non-ASCII stdin round-trips in a UTF-8 locale") {
  RunOutcome outcome =
      MustRun("s = input()\nprint(s.replace('\xe1\xba\xa7', 'a'), len(s))\n",
              {}, "th\xe1\xba\xa7u ao\n");
  CHECK(outcome.stdout_data == "thau ao 7\n");
}

TEST_CASE("without stdin input() sees end of file at once") {
  RunOutcome outcome = MustRun("input()\n");
  CHECK(outcome.reason == Reason::kNonzeroExit);
  CHECK(outcome.exit_code == 1);
  CHECK(outcome.stderr_data.find("EOFError") != std::string::npos);
  CHECK(outcome.wall_ms < 3000);
}

TEST_CASE("output over the cap is cut on a UTF-8 boundary") {
  RunLimits limits;
  limits.output_bytes = 4096;
  // 3-byte characters: 4096 is not a multiple of 3.
  RunOutcome outcome = MustRun("print('\xe2\x82\xac' * 100000)\n", limits);
  CHECK(outcome.reason == Reason::kOk);
  CHECK(outcome.exit_code == 0);
  CHECK(outcome.stdout_truncated);
  CHECK(outcome.stdout_data.size() == 4095);
  CHECK(outcome.stdout_data == SanitizeUtf8(outcome.stdout_data));
}

TEST_CASE("many small writes over the cap are kept to the cap") {
  RunLimits limits;
  limits.output_bytes = 4096;
  RunOutcome outcome =
      MustRun("for i in range(20000):\n    print('Hello world')\n", limits);
  CHECK(outcome.reason == Reason::kOk);
  CHECK(outcome.stdout_truncated);
  CHECK(outcome.stdout_data.size() == 4096);
  CHECK(outcome.stdout_data.rfind("Hello world\nHello world\n", 0) == 0);
}

TEST_CASE("a background child holding stdout does not keep the run alive") {
  auto start = std::chrono::steady_clock::now();
  RunOutcome outcome = MustRun(
      "import subprocess\nsubprocess.Popen(['sleep', '30'])\n"
      "print('main done')\n");
  auto took = std::chrono::steady_clock::now() - start;
  CHECK(outcome.reason == Reason::kOk);
  CHECK(outcome.stdout_data == "main done\n");
  CHECK(took < std::chrono::seconds(3));
  CHECK(NoSandboxProcessLeft());
}

TEST_CASE("a fork bomb ends and leaves nothing behind") {
  RunLimits limits;
  limits.wall_ms = 2000;
  limits.processes = 16;
  RunOutcome outcome = MustRun(
      "import os\nwhile True:\n    try:\n        os.fork()\n"
      "    except OSError:\n        pass\n",
      limits);
  bool expected = outcome.reason == Reason::kProcessLimit ||
                  outcome.reason == Reason::kWallTimeout ||
                  outcome.reason == Reason::kCpuTimeout ||
                  outcome.reason == Reason::kMemoryLimit;
  CHECK_MESSAGE(expected, ReasonName(outcome.reason));
  CHECK(outcome.wall_ms <= 4000);
  CHECK(NoSandboxProcessLeft());
}

TEST_CASE("privileged calls are refused") {
  RunOutcome outcome = MustRun(
      "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
      "r1 = libc.ptrace(0, 0, 0, 0)\n"
      "r2 = libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)\n"
      "r3 = libc.unshare(0x10000000)\n"
      "r4 = libc.personality(0x0040000)\n"
      "r5 = libc.memfd_create(b'x', 0)\n"
      "print(r1, r2, r3, r4, r5)\n");
  CHECK(outcome.stdout_data == "-1 -1 -1 -1 -1\n");
}

// A warm script process is the zygote's child: CLONE_PARENT would give the
// zygote a child it never asked for.
TEST_CASE("clone with CLONE_PARENT is refused") {
  RunOutcome outcome = MustRun(
      "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
      "r = libc.syscall(56, 0x8000 | 17, 0, 0, 0, 0)\n"
      "if r == 0: os._exit(0)\n"
      "print(r, ctypes.get_errno())\n");
  CHECK(outcome.stdout_data == "-1 1\n");
}

TEST_CASE("subprocess, threads and the personality query still work") {
  RunOutcome outcome = MustRun(
      "import ctypes, subprocess, threading\n"
      "libc = ctypes.CDLL(None)\n"
      "print(libc.personality(0xffffffff))\n"
      "t = threading.Thread(target=print, args=('thread',))\n"
      "t.start(); t.join()\n"
      "print(subprocess.run(['echo', 'child'], capture_output=True)"
      ".stdout.decode(), end='')\n");
  CHECK(outcome.reason == Reason::kOk);
  CHECK(outcome.stdout_data == "0\nthread\nchild\n");
}

TEST_CASE("links planted in the sandbox never reach host files") {
  std::string before = ReadFile("/etc/passwd");
  RunOutcome outcome = MustRun(
      "import os\nfor n in ('main.py.out', 'stdout.txt', 'result.json'):\n"
      "    os.symlink('/etc/passwd', n)\n"
      "try:\n    open('stdout.txt', 'w').write('pwned')\n"
      "except OSError as e:\n    print(e.errno)\n"
      "print('planted')\n");
  // The sandbox's own /etc is read-only: EROFS.
  CHECK(outcome.stdout_data == "30\nplanted\n");
  CHECK(ReadFile("/etc/passwd") == before);
}

TEST_CASE("process limits are per run") {
  RunLimits limits;
  limits.processes = 64;
  const std::string script =
      "import subprocess\n"
      "ps = [subprocess.Popen(['sleep', '1']) for _ in range(40)]\n"
      "[p.wait() for p in ps]\nprint('done')\n";
  RunOutcome outcomes[2];
  std::thread other([&] { outcomes[1] = MustRun(script, limits); });
  outcomes[0] = MustRun(script, limits);
  other.join();
  for (const RunOutcome& outcome : outcomes) {
    CHECK(outcome.reason == Reason::kOk);
    CHECK(outcome.stdout_data == "done\n");
  }
}

TEST_CASE("a script killing itself reports the signal") {
  RunOutcome outcome =
      MustRun("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n");
  CHECK(outcome.reason == Reason::kSignal);
  CHECK(outcome.signal == 15);
  CHECK(outcome.exit_code == 143);
}

TEST_CASE("filling the disk fails with ENOSPC inside the sandbox") {
  RunOutcome outcome = MustRun(
      "try:\n    with open('big', 'wb') as f:\n"
      "        for _ in range(512):\n"
      "            f.write(b'\\0' * (1 << 20))\n"
      "    print('wrote all')\n"
      "except OSError as e:\n    print('stopped', e.errno)\n");
  CHECK(outcome.reason == Reason::kOk);
  CHECK(outcome.stdout_data == "stopped 28\n");
}

TEST_CASE("host secrets are not visible") {
  RunOutcome outcome = MustRun(
      "import os\nfor p in ('/etc/shadow', '/root', '/home', '/var/lib'):\n"
      "    try:\n"
      "        os.listdir(p) if os.path.isdir(p) else open(p).read()\n"
      "        print('READ', p)\n"
      "    except OSError:\n        print('no')\n");
  CHECK(outcome.stdout_data == "no\nno\nno\nno\n");
}

int OpenFdCount() {
  int count = 0;
  DIR* dir = opendir("/proc/self/fd");
  while (readdir(dir) != nullptr) ++count;
  closedir(dir);
  return count;
}

TEST_CASE("runs leave no fd open in the caller") {
  SharedSandbox();
  int before = OpenFdCount();
  RunLimits limits;
  limits.wall_ms = 200;
  MustRun("print('x')\n");
  MustRun("import time\ntime.sleep(5)\n", limits);
  MustRun("input()\n", {}, "line\n");
  CHECK(OpenFdCount() == before);
}

TEST_CASE("invalid limits are refused before anything starts") {
  RunRequest request;
  request.script = "pass\n";
  request.limits.wall_ms = 0;
  Result<RunOutcome> outcome = SharedSandbox()->Run(request);
  REQUIRE_FALSE(outcome.ok());
  CHECK(outcome.status().category() == Category::kInvalidArgument);
}

TEST_CASE("a missing spawner makes Open unavailable") {
  SandboxOptions options;
  options.spawner_path = "/nonexistent/dex-spawner";
  auto opened = Sandbox::Open(options);
  REQUIRE_FALSE(opened.ok());
  CHECK(opened.status().category() == Category::kUnavailable);
  CHECK(opened.status().message().rfind(
            "sandbox: no dex-spawner at /nonexistent/dex-spawner (looked at",
            0) == 0);
}

TEST_CASE("idle pre-built sandboxes run under their own root id") {
  MustRun("print(1)\n");  // the pool refills after a run
  std::vector<HostProcess> idle;
  for (int i = 0; i < 200 && idle.size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    idle.clear();
    for (const HostProcess& p :
         SandboxProcessesOnHost(kHostIdBase, kHostIdCount)) {
      if (IsIdlePoolMember(p, kHostIdBase)) idle.push_back(p);
    }
  }
  // At least one entry: its init and its script process, both under the
  // entry's root id, never its user id, never the host's root.
  REQUIRE(idle.size() >= 2);
  for (const HostProcess& p : idle) {
    CHECK(p.uids[0] >= kHostIdBase);
    CHECK((p.uids[0] - kHostIdBase) % 2 == 0);
  }
}

TEST_CASE("no sandbox process outlives its Sandbox, idle ones included") {
  // An id range of its own, apart from the shared sandbox's.
  const uint32_t base = kHostIdBase + 2 * kHostIdCount - 2 * 1000;
  SandboxOptions options;
  options.host_id_base = base;
  options.host_id_count = 1000;
  options.warm_pool_min = 3;
  auto opened = Sandbox::Open(options);
  REQUIRE_MESSAGE(opened.ok(), opened.status().ToString());
  RunRequest request;
  request.script = "print(1)\n";
  REQUIRE((*opened)->Run(request).ok());
  bool seen = false;
  for (int i = 0; i < 300 && !seen; ++i) {
    seen = !SandboxProcessesOnHost(base, 1000).empty();
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(seen);  // else the check below would pass vacuously
  opened.value().reset();
  std::vector<HostProcess> left = SandboxProcessesOnHost(base, 1000);
  for (int i = 0; i < 500 && !left.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    left = SandboxProcessesOnHost(base, 1000);
  }
  CHECK(left.empty());
}

TEST_CASE("runs are warm by default") {
  MustRun("pass\n");
  CHECK(SharedSandbox()->warm());
}

// But for os.getppid(): 0, where a cold run's is 1. The script process is
// the zygote's child, and the zygote is outside its pid namespace
// (README, "Warm sandboxes").
TEST_CASE("a warm run sees what python3 -I -u main.py sees") {
  RunOutcome outcome = MustRun(
      "import sys, os, gc\n"
      "print(__name__, sys.argv, __file__, os.getcwd(), os.getppid())\n"
      "print(sys.orig_argv[1:], sys.flags.isolated, sys.flags.safe_path)\n"
      "print(gc.isenabled(), gc.get_threshold())\n");
  CHECK(outcome.stdout_data ==
        "__main__ ['main.py'] /work/main.py /work 0\n"
        "['-I', '-u', 'main.py'] 1 True\n"
        "True (700, 10, 10)\n");
}

// The zygote's stdio objects were made for /dev/null; a run's must answer
// for its pipes, as in a cold run.
TEST_CASE("a warm run's stdio is not seekable, as in a cold run") {
  RunOutcome outcome = MustRun(
      "import sys\n"
      "print(sys.stdin.seekable(), sys.stdout.seekable(),"
      " sys.stderr.seekable(), sys.stdin.buffer.raw.seekable())\n"
      "try: sys.stdin.tell()\n"
      "except Exception as e: print(type(e).__name__)\n"
      "print(sys.stdin.name, sys.stdout.errors, sys.stdout.write_through)\n",
      {}, std::string("x\n"));
  CHECK(outcome.stdout_data ==
        "False False False False\nUnsupportedOperation\n"
        "<stdin> surrogateescape True\n");
}

TEST_CASE("a warm run's traceback shows only the script's frames") {
  RunOutcome outcome = MustRun("def f():\n    raise ValueError('boom')\nf()\n");
  CHECK(outcome.exit_code == 1);
  CHECK(outcome.stderr_data ==
        "Traceback (most recent call last):\n"
        "  File \"/work/main.py\", line 3, in <module>\n"
        "    f()\n"
        "  File \"/work/main.py\", line 2, in f\n"
        "    raise ValueError('boom')\n"
        "ValueError: boom\n");
}

TEST_CASE("a syntax error reads as in a cold run") {
  RunOutcome outcome = MustRun("print(\n");
  CHECK(outcome.exit_code == 1);
  CHECK(outcome.stderr_data.find("  File \"/work/main.py\", line 1\n") == 0);
  CHECK(outcome.stderr_data.find("SyntaxError: '(' was never closed\n") !=
        std::string::npos);
}

TEST_CASE("SystemExit with a message exits 1 and prints it") {
  RunOutcome outcome = MustRun("raise SystemExit('bye')\n");
  CHECK(outcome.exit_code == 1);
  CHECK(outcome.stderr_data == "bye\n");
}

TEST_CASE("a warm script holds no capability and no privilege") {
  RunOutcome outcome = MustRun(
      "for line in open('/proc/self/status'):\n"
      "    if line.split(':')[0] in ('CapPrm', 'CapEff', 'CapBnd', 'CapAmb',"
      " 'NoNewPrivs', 'Seccomp', 'Uid'):\n"
      "        print(line.split()[1])\n");
  CHECK(outcome.stdout_data ==
        "1000\n0000000000000000\n0000000000000000\n"
        "000001ffffffffff\n0000000000000000\n1\n2\n");
}

TEST_CASE("atexit handlers run and unclosed files are flushed at exit") {
  RunOutcome outcome = MustRun(
      "import atexit\natexit.register(print, 'bye')\n"
      "import os\nf = os.fdopen(os.dup(1), 'w')\nf.write('x')\nraise "
      "SystemExit(4)\n");
  CHECK(outcome.exit_code == 4);
  CHECK(outcome.stdout_data == "bye\nx");
}

// As python3 -I -u main.py: the traceback, then death by SIGINT.
TEST_CASE("an uncaught KeyboardInterrupt ends the run by SIGINT") {
  RunOutcome outcome = MustRun("raise KeyboardInterrupt\n");
  CHECK(outcome.reason == Reason::kSignal);
  CHECK(outcome.signal == 2);
  CHECK(outcome.stderr_data.find("KeyboardInterrupt") != std::string::npos);
}

TEST_CASE("random state is not shared between runs") {
  std::string script = "import random\nprint(random.getrandbits(64))\n";
  CHECK(MustRun(script).stdout_data != MustRun(script).stdout_data);
}

// A Sandbox of a test's own (its own spawner, found as the new
// dex-spawner child of this process, and that spawner's zygote), for
// tests that kill parts of it.
struct OwnSandbox {
  std::unique_ptr<Sandbox> sandbox;
  int spawner = -1;
  int zygote = -1;

  explicit OwnSandbox(const SandboxOptions& options) {
    std::vector<int> before = ChildrenNamed(getpid(), "dex-spawner");
    auto opened = Sandbox::Open(options);
    REQUIRE_MESSAGE(opened.ok(), opened.status().ToString());
    sandbox = std::move(opened.value());
    for (int pid : ChildrenNamed(getpid(), "dex-spawner")) {
      if (std::find(before.begin(), before.end(), pid) == before.end()) {
        spawner = pid;
      }
    }
    REQUIRE(spawner > 0);
    std::vector<int> zygotes = ChildrenNamed(spawner, "python3");
    REQUIRE(zygotes.size() == 1);
    zygote = zygotes[0];
  }
};

// The zygote reaps warm script processes and reports their end to their
// init. Killed mid-run, it can no longer say how its running script ends:
// that run fails at once as a sandbox error (the server refunds those),
// nothing of it is left, and later runs are cold.
TEST_CASE("a zygote that dies fails its run in flight, and runs go cold") {
  SandboxOptions options;
  options.host_id_base = kHostIdBase + 2 * (kHostIdCount - 200);
  options.host_id_count = 100;
  OwnSandbox own(options);
  Sandbox* sandbox = own.sandbox.get();

  RunRequest request;
  request.script = "import time\nprint('started', flush=True)\ntime.sleep(3)\n";
  request.limits.wall_ms = 10'000;
  std::optional<Result<RunOutcome>> outcome;
  auto start = std::chrono::steady_clock::now();
  std::thread run([&] { outcome.emplace(sandbox->Run(request)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  REQUIRE(kill(own.zygote, SIGKILL) == 0);
  run.join();
  REQUIRE(outcome.has_value());
  CHECK_FALSE(outcome->ok());
  CHECK(outcome->status().message().find("zygote") != std::string::npos);
  // Failed when the zygote went, not at the script's end or the wall limit.
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));

  RunRequest after;
  after.script = "print('after')\n";
  Result<RunOutcome> later = sandbox->Run(after);
  REQUIRE(later.ok());
  CHECK(later->stdout_data == "after\n");
  CHECK_FALSE(sandbox->warm());

  std::vector<HostProcess> left =
      SandboxProcessesOnHost(options.host_id_base, options.host_id_count);
  for (int i = 0; i < 500 && !left.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    left = SandboxProcessesOnHost(options.host_id_base, options.host_id_count);
  }
  CHECK(left.empty());
}

// A pre-built sandbox whose script process died before its run: the run
// that takes it fails as a sandbox error (refunded upstream), never as the
// dead process's exit.
TEST_CASE("a run on a sandbox whose script process died fails at set-up") {
  SandboxOptions options;
  options.host_id_base = kHostIdBase + 2 * (kHostIdCount - 300);
  options.host_id_count = 100;
  options.warm_pool_min = 1;
  options.warm_pool_max = 1;
  OwnSandbox own(options);
  std::vector<int> idle;
  for (int i = 0; i < 500 && idle.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    idle = ChildrenNamed(own.zygote, "dex-idle");
  }
  REQUIRE(idle.size() == 1);
  REQUIRE(kill(idle[0], SIGKILL) == 0);

  RunRequest request;
  request.script = "print('ran')\n";
  Result<RunOutcome> outcome = own.sandbox->Run(request);
  CHECK_FALSE(outcome.ok());
  CHECK(outcome.status().message().find("sandbox setup") != std::string::npos);
  Result<RunOutcome> next = own.sandbox->Run(request);
  REQUIRE(next.ok());
  CHECK(next->stdout_data == "ran\n");
}

TEST_CASE("a cold-only sandbox runs without the zygote") {
  SandboxOptions options;
  options.host_id_base = kHostIdBase + 2 * (kHostIdCount - 100);
  options.host_id_count = 100;
  options.warm_pool_max = 0;
  auto opened = Sandbox::Open(options);
  REQUIRE_MESSAGE(opened.ok(), opened.status().ToString());
  RunRequest request;
  request.script = "import sys\nprint(sys.argv)\n";
  Result<RunOutcome> outcome = (*opened)->Run(request);
  REQUIRE(outcome.ok());
  CHECK(outcome->stdout_data == "['main.py']\n");
  CHECK_FALSE((*opened)->warm());
}

}  // namespace
}  // namespace dex
