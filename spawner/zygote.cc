#include "spawner/zygote.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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

// The loader, run as `python3 -I -u -c SOURCE HELPER` (so `-I` and `-u`
// hold as in a cold run; HELPER is dex-zygote-helper.so's path). It
// builds what every run would otherwise build again after its fork (the
// compiler's AST types), stops the collector and freezes the heap, then
// calls the helper's loop (zygote_helper.cc), which returns only in a
// script process whose run may start: ids, rlimits, stdio, fds,
// no_new_privs and seccomp all set, /work the working directory. There
// the loader reinitialises the interpreter after the fork, as os.fork()
// would, makes stdio objects for the run's pipes, and runs /work/main.py
// as `python3 -I -u main.py` would: same
// argv, `__main__`, tracebacks and exit codes; at the end it does the
// observable part of interpreter shutdown and then _exit().
constexpr const char kLoader[] = R"PY(
import os, sys, _signal, ctypes, atexit, gc, io

def zygote():
    serve = ctypes.PyDLL(sys.argv[1]).dex_zygote_serve
    serve.argtypes = (ctypes.c_int,)
    serve.restype = ctypes.c_int
    after_fork = ctypes.pythonapi.PyOS_AfterFork_Child
    after_fork.argtypes = ()
    after_fork.restype = None
    warm_up()
    if serve(3) != 0:
        os._exit(126)
    after_fork()

def warm_up():
    # The compiler's AST types are made on first compile, about 1 ms of
    # work that each run would repeat. Then the collector is stopped and
    # every object so far frozen, so that no collection in a run walks
    # (and copies) the zygote's heap; run_main starts it again for the
    # script.
    compile(b"pass\n", "/work/main.py", "exec", dont_inherit=True)
    gc.disable()
    gc.freeze()

def reopen_stdio():
    # The zygote's stdio objects were made for /dev/null and cached what
    # they learned of it (seekable, among others): new ones for the run's
    # pipes, configured as the zygote's were (so as -I -u sets them up).
    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"),
                           ("stderr", 2, "w")):
        old = getattr(sys, name)
        raw = io.FileIO(fd, mode, closefd=False)
        raw.name = "<%s>" % name
        if isinstance(old.buffer, io.FileIO):
            buffer = raw
        elif mode == "r":
            buffer = io.BufferedReader(raw)
        else:
            buffer = io.BufferedWriter(raw)
        stream = io.TextIOWrapper(buffer, encoding=old.encoding,
                                  errors=old.errors, newline="\n",
                                  line_buffering=old.line_buffering,
                                  write_through=old.write_through)
        stream.mode = mode
        setattr(sys, name, stream)
        setattr(sys, "__%s__" % name, stream)

def run_main():
    gc.enable()
    reopen_stdio()
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

zygote()
del zygote, warm_up
run_main()
)PY";

}  // namespace

std::unique_ptr<Zygote> Zygote::Start(const std::string& python_path,
                                      const std::string& helper_path,
                                      const std::vector<sock_filter>& filter,
                                      std::string* error) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
    *error = std::string("zygote: socketpair: ") + strerror(errno);
    return nullptr;
  }
  UniqueFd ours(pair[0]), theirs(pair[1]);
  std::string source = kLoader;
  char* argv[] = {const_cast<char*>(python_path.c_str()),
                  const_cast<char*>("-I"),
                  const_cast<char*>("-u"),
                  const_cast<char*>("-c"),
                  source.data(),
                  const_cast<char*>(helper_path.c_str()),
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
