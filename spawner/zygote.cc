#include "spawner/zygote.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "libdex/fd_passing.h"
#include "spawner/init.h"

namespace dex::spawner {
namespace {

using internal::kZygoteFdCount;
using internal::ZygoteRequest;

// How long the interpreter may take to start before warm runs are given up.
constexpr int kStartTimeoutMs = 10'000;

// The loader, run as `python3 -I -u -c SOURCE` (so `-I` and `-u` hold as in
// a cold run). Two roles, one after the other:
// - the zygote: waits for requests, each for a pool entry made before any
//   run; for each, enters the entry's pid namespace just long enough to
//   fork the entry's script process. It reaps every child it has and
//   tells the entry's init, over the link, how its script process ended
//   (wait status, CPU time, peak memory): the script process is its child,
//   not init's, which saves a second fork per run. Should the zygote die,
//   its children pass to their init, which then reaps them itself;
// - the script process: keeps only the entry's fds, waits until the
//   entry's init has finished the new root, joins the other namespaces as
//   root of the entry's user namespace, tells init its pid and waits for
//   its run on its go socket (exits if that ends unused). Then the steps
//   of a cold run between fork and exec, in the same order (rlimits,
//   setsid, ids, stdio, fds, no_new_privs, seccomp last); it enters /work
//   once init has put main.py there, and runs it as `python3 -I -u
//   main.py` would: same argv, `__main__`, tracebacks and exit codes; at
//   the end it does the observable part of interpreter shutdown and then
//   _exit().
// Any failure before the script runs ends that process with 126.
constexpr const char kLoader[] = R"PY(
import os, sys, _signal, resource, ctypes, array, struct, _socket, atexit, gc, select

def zygote():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.prctl.argtypes = (ctypes.c_int,) + (ctypes.c_ulong,) * 4
    sock = _socket.socket(fileno=3)
    bpf = sock.recv(1 << 20)
    code = ctypes.create_string_buffer(bpf, len(bpf))
    class Prog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))
    prog = Prog(len(bpf) // 8, ctypes.addressof(code))
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    warm_up(libc)
    # Every child is reaped here, its end reported to its init: a byte on
    # the wakeup pipe per SIGCHLD wakes the loop.
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _signal.set_wakeup_fd(wake_write)
    _signal.signal(_signal.SIGCHLD, lambda number, frame: None)
    links = {}
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    sock.send(b"R")
    space = _socket.CMSG_SPACE(FD_COUNT * 4)
    while True:
        ready = [fd for fd, _ in poller.poll()]
        if wake_read in ready:
            try:
                os.read(wake_read, 4096)
            except OSError:
                pass
            reap(links)
        if sock.fileno() not in ready:
            continue
        msg, ancillary, _, _ = sock.recvmsg(64, space)
        if not msg:
            os._exit(0)
        fds = array.array("i")
        for level, kind, data in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds.frombytes(data[:len(data) - len(data) % 4])
        fds = fds.tolist()
        if (len(msg) == 40 and len(fds) == FD_COUNT and
                struct.unpack_from("<I", msg)[0] == MAGIC and
                libc.setns(fds[PIDFD], CLONE_NEWPID) == 0):
            try:
                pid = os.fork()
            except OSError:
                pid = -1
            if pid == 0:
                _signal.set_wakeup_fd(-1)
                _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
                sock.detach()
                close_except(fds)
                return libc, code, prog, fds
            libc.setns(own_pid_ns, CLONE_NEWPID)
            if pid > 0:
                links[pid] = os.dup(fds[LINK])
        for fd in fds:
            os.close(fd)

def reap(links):
    # The script process is this loader's child, not init's: its exit
    # status, CPU time and peak memory go to init over the link.
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        link = links.pop(pid, None)
        if link is None:
            continue
        cpu_us = round((usage.ru_utime + usage.ru_stime) * 1e6)
        try:
            os.write(link, struct.pack("<Iiqq", EXIT_MAGIC, status, cpu_us,
                                       usage.ru_maxrss))
        except OSError:
            pass
        os.close(link)

def warm_up(libc):
    # What every run would otherwise build again after its fork: the
    # compiler's AST types (made on first compile, about 1 ms) and the
    # formats below. Then the collector is stopped and every object so far
    # frozen, so that no collection in a run walks (and copies) the
    # zygote's heap; run_main starts it again for the script.
    global NAMES
    compile(b"pass\n", "/work/main.py", "exec", dont_inherit=True)
    for format in ("<I", "<IIqqqq", "=i", "<Iiqq"):
        struct.calcsize(format)
    NAMES = {name: ctypes.create_string_buffer(name)
             for name in (b"dex-idle", b"python3")}
    libc.prctl(PR_GET_NAME, ctypes.addressof(ctypes.create_string_buffer(16)),
               0, 0, 0)
    gc.disable()
    gc.freeze()

def close_except(keep):
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)

def set_name(libc, name):
    libc.prctl(PR_SET_NAME, ctypes.addressof(NAMES[name]), 0, 0, 0)

def enter(libc, fds):
    try:
        ready = os.read(fds[LINK], 1)
    except OSError:
        ready = b""
    if ready != b"r" or libc.setns(fds[PIDFD], JOIN_NAMESPACES) != 0:
        os._exit(1)
    # Root of the entry's user namespace: while it waits, the host sees
    # the entry's own root id, never the zygote's.
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    os.close(fds[PIDFD])
    set_name(libc, b"dex-idle")
    os.write(fds[LINK], struct.pack("=i", os.getpid()))

def await_run(fds):
    go = _socket.socket(fileno=fds[GO])
    try:
        msg, ancillary, _, _ = go.recvmsg(64, _socket.CMSG_SPACE(GO_FD_COUNT * 4))
    except OSError:
        os._exit(0)
    stdio = array.array("i")
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            stdio.frombytes(data[:len(data) - len(data) % 4])
    stdio = stdio.tolist()
    if (len(msg) != 40 or len(stdio) != GO_FD_COUNT or
            struct.unpack_from("<I", msg)[0] != MAGIC):
        os._exit(0)
    go.close()
    return stdio, struct.unpack("<IIqqqq", msg)

def become_script(libc, prog, link, stdio, limits):
    _, _, processes, cpu_seconds, open_files, file_size = limits
    os.setsid()
    for which, soft, hard in ((resource.RLIMIT_NPROC, processes, processes),
                              (resource.RLIMIT_NOFILE, open_files, open_files),
                              (resource.RLIMIT_FSIZE, file_size, file_size),
                              (resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1),
                              (resource.RLIMIT_CORE, 0, 0)):
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError):
            pass
    # Root of the run's user namespace first: leaving it for uid 1000 then
    # clears every capability, as in a cold run.
    os.setresgid(SCRIPT_ID, SCRIPT_ID, SCRIPT_ID)
    os.setresuid(SCRIPT_ID, SCRIPT_ID, SCRIPT_ID)
    if libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0:
        raise OSError("dumpable")
    status = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        text = os.read(status, 1 << 16)
    finally:
        os.close(status)
    for field in (b"\nCapPrm:", b"\nCapEff:", b"\nCapAmb:"):
        at = text.find(field)
        if at < 0 or int(text[at + len(field):text.find(b"\n", at + 1)], 16):
            raise OSError("capabilities left")
    os.dup2(stdio[STDIN], 0)
    os.dup2(stdio[STDOUT], 1)
    os.dup2(stdio[STDERR], 2)
    set_name(libc, b"python3")
    # /work is this run's once init has sized it and written main.py.
    if os.read(link, 1) != b"g":
        raise OSError("init gave up")
    os.chdir("/work")
    os.closerange(3, 1 << 20)
    if (libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER,
                       ctypes.addressof(prog), 0, 0) != 0):
        raise OSError("seccomp")

def run_main():
    gc.enable()
    if "random" in sys.modules:
        sys.modules["random"].seed()
    main = type(sys)("__main__")
    main.__file__ = "/work/main.py"
    main.__cached__ = None
    main.__builtins__ = sys.modules["builtins"]
    main.__loader__ = sys.modules["_frozen_importlib_external"].SourceFileLoader(
        "__main__", "/work/main.py")
    sys.modules["__main__"] = main
    sys.argv = ["main.py"]
    sys.orig_argv = [sys.executable, "-I", "-u", "main.py"]
    script = os.open("/work/main.py", os.O_RDONLY | os.O_CLOEXEC)
    try:
        source = b"".join(iter(lambda: os.read(script, 1 << 20), b""))
    finally:
        os.close(script)
    interrupted = False
    try:
        exec(compile(source, "/work/main.py", "exec", dont_inherit=True),
             main.__dict__)
        code = 0
    except SystemExit as done:
        code = exit_code(done)
    except BaseException as error:
        error.with_traceback(error.__traceback__.tb_next)
        sys.excepthook(type(error), error, error.__traceback__)
        interrupted = isinstance(error, KeyboardInterrupt)
        code = 1
        del error
    finish(main, code, interrupted)

def exit_code(done):
    # As the interpreter's own handling of an uncaught SystemExit.
    if done.code is None:
        return 0
    if isinstance(done.code, int):
        return done.code & 0xff
    try:
        print(done.code, file=sys.stderr)
    except BaseException:
        pass
    return 1

def finish(main, code, interrupted):
    # The observable half of interpreter shutdown, in its order: threads
    # joined, atexit handlers, the script's globals released (their
    # finalizers run, its files are flushed), stdio flushed. The rest of
    # the teardown would only write to every page shared with the zygote.
    if "threading" in sys.modules:
        try:
            sys.modules["threading"]._shutdown()
        except BaseException:
            pass
    sys.modules["atexit"]._run_exitfuncs()
    main.__dict__.clear()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:
            code = 120
    if interrupted:
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGINT)
    os._exit(code)

_libc, _code, _prog, _fds = zygote()
enter(_libc, _fds)
_stdio, _limits = await_run(_fds)
try:
    become_script(_libc, _prog, _fds[LINK], _stdio, _limits)
except BaseException:
    os._exit(126)
del zygote, reap, warm_up, close_except, set_name, enter, await_run
del become_script, NAMES
del _libc, _code, _prog, _fds, _stdio, _limits
run_main()
)PY";

std::string Constants() {
  constexpr long kJoin = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET |
                         CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;
  std::string text;
  auto add = [&text](const char* name, long value) {
    text += std::string(name) + " = " + std::to_string(value) + "\n";
  };
  add("MAGIC", internal::kZygoteMagic);
  add("EXIT_MAGIC", internal::kScriptExitMagic);
  add("FD_COUNT", kZygoteFdCount);
  add("PIDFD", internal::kZygotePidfd);
  add("LINK", internal::kZygoteLinkFd);
  add("GO", internal::kZygoteGoFd);
  add("GO_FD_COUNT", internal::kScriptGoFdCount);
  add("STDIN", internal::kScriptStdinFd);
  add("STDOUT", internal::kScriptStdoutFd);
  add("STDERR", internal::kScriptStderrFd);
  add("CLONE_NEWPID", CLONE_NEWPID);
  add("JOIN_NAMESPACES", kJoin);
  add("SCRIPT_ID", 1000);
  add("PR_SET_DUMPABLE", 4);
  add("PR_SET_NAME", 15);
  add("PR_GET_NAME", 16);
  add("PR_SET_NO_NEW_PRIVS", 38);
  add("PR_SET_SECCOMP", 22);
  add("SECCOMP_MODE_FILTER", 2);
  return text;
}

}  // namespace

std::string ZygoteLoaderSource() { return Constants() + kLoader; }

std::unique_ptr<Zygote> Zygote::Start(const std::string& python_path,
                                      const std::vector<sock_filter>& filter,
                                      std::string* error) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
    *error = std::string("zygote: socketpair: ") + strerror(errno);
    return nullptr;
  }
  UniqueFd ours(pair[0]), theirs(pair[1]);
  std::string source = ZygoteLoaderSource();
  char* argv[] = {const_cast<char*>(python_path.c_str()),
                  const_cast<char*>("-I"),
                  const_cast<char*>("-u"),
                  const_cast<char*>("-c"),
                  source.data(),
                  nullptr};
  // The spawner is single-threaded: fork is safe, and the child only
  // rearranges fds before exec.
  pid_t pid = fork();
  if (pid < 0) {
    *error = std::string("zygote: fork: ") + strerror(errno);
    return nullptr;
  }
  if (pid == 0) {
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(null_fd, 1) < 0 ||
        dup2(theirs.get(), 3) < 0) {
      _exit(127);
    }
    syscall(SYS_close_range, 4u, ~0u, 0u);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(argv[0], argv, kScriptEnvironment);
    _exit(127);
  }
  theirs.Reset();
  auto zygote = std::unique_ptr<Zygote>(new Zygote(pid, std::move(ours)));
  size_t bytes = filter.size() * sizeof(sock_filter);
  char ready = 0;
  pollfd p = {zygote->socket_.get(), POLLIN, 0};
  if (send(zygote->socket_.get(), filter.data(), bytes, MSG_NOSIGNAL) !=
          static_cast<ssize_t>(bytes) ||
      poll(&p, 1, kStartTimeoutMs) != 1 ||
      recv(zygote->socket_.get(), &ready, 1, 0) != 1 || ready != 'R') {
    *error = "zygote: did not start";
    kill(pid, SIGKILL);
    return nullptr;
  }
  return zygote;
}

bool Zygote::Send(const ZygoteRequest& request, const int fds[kZygoteFdCount]) {
  return internal::SendWithFds(socket_.get(), &request, sizeof(request), fds,
                               kZygoteFdCount) == sizeof(request);
}

}  // namespace dex::spawner
