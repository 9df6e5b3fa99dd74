// dex_bench: is a sandboxed hello faster than an unsandboxed one?
//
//   dex_bench [--cases a,b,...] [--iterations N] [--seconds S] [--chart F]
//
// Latency cases are interleaved (one sample of each in turn) and the
// throughput cases alternate round by round, so machine noise hits every
// contender alike. The cases:
//   bare      posix_spawn + wait of `/usr/bin/python3 -I -c 'print("hello")'`
//   bwrap     the same under `bwrap --unshare-all` with /usr bound read-only
//   cold      dex::Sandbox::Run of print("hello") with warm_pool_max = 0
//   warm      the same with warm sandboxes (the default options)
//   http      POST /run?wait=true over loopback to a `dex-shim serve` this
//             program starts on 127.0.0.1:0 with a temporary data dir
//   rate      hello runs per second over HTTP, 8 clients at once, against
//             bare spawns two at a time (`rate-bare`)
//   me        GET /me per second, 8 keep-alive clients, against a trivial
//             httplib::Server answering a small JSON (`me-bare`), with p99
// Targets (printed PASS/FAIL): http p50 <= 0.5 x bare p50; rate >= 2 x
// rate-bare; cold p50 <= 1.2 x bare p50; me >= 0.7 x me-bare with p99 < 2 ms.
//
// The shim's user is on a plan of its own, made with
//   dex-shim plan set bench --quota 1000000 --max-concurrent 16
// so that neither the monthly quota nor the per-user cap on runs at once
// (starter's is 4) throttles the 8 rate clients. Every server and client
// sets TCP_NODELAY, so no case waits on a delayed ACK. Failed requests are
// counted by HTTP status and problem code and printed under the table.
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dex/sandbox.h"

namespace {

using Clock = std::chrono::steady_clock;

const char* const kPython = "/usr/bin/python3";
const char* const kBwrap = "/usr/bin/bwrap";
const char* const kHello = "print(\"hello\")";
constexpr int kHttpClients = 8;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start)
      .count();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// posix_spawn + wait, stdout and stderr to /dev/null. False on failure.
bool SpawnAndWait(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  char* envp[] = {const_cast<char*>("LANG=C.UTF-8"), nullptr};
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return false;
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

const std::vector<std::string> kBareArgs = {kPython, "-I", "-c", kHello};
const std::vector<std::string> kBwrapArgs = {kBwrap,
                                             "--unshare-all",
                                             "--die-with-parent",
                                             "--ro-bind",
                                             "/usr",
                                             "/usr",
                                             "--symlink",
                                             "usr/lib",
                                             "/lib",
                                             "--symlink",
                                             "usr/lib64",
                                             "/lib64",
                                             "--symlink",
                                             "usr/bin",
                                             "/bin",
                                             "--proc",
                                             "/proc",
                                             "--dev",
                                             "/dev",
                                             "--tmpfs",
                                             "/tmp",
                                             kPython,
                                             "-I",
                                             "-c",
                                             kHello};

// Runs `command`, returns its stdout.
std::string Capture(const std::string& command) {
  std::string out;
  FILE* f = popen(command.c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  pclose(f);
  return out;
}

// A `dex-shim serve` on 127.0.0.1:0 with a temporary data dir and a user
// on the `bench` plan (see the top of this file). Stopped with SIGTERM by
// the destructor.
class Shim {
 public:
  bool Start() {
    char dir[] = "/tmp/dex-bench-XXXXXX";
    if (mkdtemp(dir) == nullptr) return false;
    dir_ = dir;
    std::string plan =
        Capture(std::string(DEX_SHIM_PATH) + " plan set --data " + dir_ +
                " bench --quota 1000000 --max-concurrent 16");
    if (plan.find("\"bench\"") == std::string::npos) return false;
    std::string created =
        Capture(std::string(DEX_SHIM_PATH) + " user create --data " + dir_ +
                " --plan bench");
    size_t at = created.find("dex_live_");
    if (at == std::string::npos) return false;
    key_ = created.substr(at, created.find('"', at) - at);
    int out[2];
    if (pipe(out) < 0) return false;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      int null_fd = open("/dev/null", O_WRONLY);
      dup2(null_fd, 2);  // the access log
      close(out[0]);
      execl(DEX_SHIM_PATH, DEX_SHIM_PATH, "serve", "--data", dir_.c_str(),
            "--listen", "127.0.0.1:0", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    std::string line;
    char c;
    while (read(out[0], &c, 1) == 1 && c != '\n') line += c;
    close(out[0]);
    size_t colon = line.rfind(':');
    if (line.rfind("listening on http://127.0.0.1:", 0) != 0) return false;
    port_ = std::atoi(line.c_str() + colon + 1);
    return port_ > 0;
  }
  ~Shim() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  int port() const { return port_; }
  httplib::Headers Auth() const {
    return {{"Authorization", "Bearer " + key_}};
  }

 private:
  pid_t pid_ = -1;
  std::string dir_, key_;
  int port_ = 0;
};

// A trivial cpp-httplib server answering GET /me with a small JSON, in a
// process of its own as dex-shim is. Its transport is set up as
// dex-shim's (128 threads, TCP_NODELAY, 100 requests per keep-alive
// connection, a listen backlog of 1024), so that only the work behind the
// handler differs. With cpp-httplib's defaults (5 requests per
// connection, a backlog of 5) its clients would reconnect every fifth
// request and some connections wait a second for a SYN retry: it looked
// about 30% slower than it is, and the ratio flattered dex.
//
// The process is this program again, run as `dex_bench --serve-bare-me`:
// it prints its port and serves until killed.
int ServeBareMe() {
  httplib::Server server;
  int listen_fd = -1;
  server.set_tcp_nodelay(true);
  server.set_keep_alive_max_count(100);
  server.new_task_queue = [] { return new httplib::ThreadPool(128); };
  server.set_socket_options([&listen_fd](int sock) {
    int one = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    listen_fd = sock;  // only the listening socket passes through here
  });
  server.Get("/me", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(
        "{\"user_id\":\"user_x\",\"effective_plan\":\"pro\","
        "\"usage_this_period\":0}",
        "application/json");
  });
  int port = server.bind_to_any_port("127.0.0.1");
  // Listening again on a listening socket only changes its backlog.
  if (port <= 0 || listen_fd < 0 || listen(listen_fd, 1024) != 0) return 1;
  printf("%d\n", port);
  fflush(stdout);
  return server.listen_after_bind() ? 0 : 1;
}

class BareServer {
 public:
  bool Start() {
    int out[2];
    if (pipe2(out, O_CLOEXEC) < 0) return false;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    char self[] = "/proc/self/exe";
    char flag[] = "--serve-bare-me";
    char* argv[] = {self, flag, nullptr};
    int rc = posix_spawn(&pid_, self, &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    std::string line;
    char c;
    while (rc == 0 && read(out[0], &c, 1) == 1 && c != '\n') line += c;
    close(out[0]);
    port_ = std::atoi(line.c_str());
    return rc == 0 && port_ > 0;
  }
  ~BareServer() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

// Why requests failed: "HTTP status problem-code" (or the transport
// error) -> count, over every case.
std::mutex g_failures_mu;
std::map<std::string, int> g_failures;  // guarded by g_failures_mu

void CountFailure(const httplib::Result& res) {
  std::string why;
  if (!res) {
    why = "no answer: " + httplib::to_string(res.error());
  } else {
    why = "HTTP " + std::to_string(res->status);
    size_t at = res->body.find("\"code\":\"");
    if (at != std::string::npos) {
      at += 8;
      why += " " + res->body.substr(at, res->body.find('"', at) - at);
    } else if (res->status == 200) {
      why += " (unexpected output)";
    }
  }
  std::lock_guard<std::mutex> lock(g_failures_mu);
  ++g_failures[why];
}

bool HttpHello(httplib::Client* client, const httplib::Headers& auth) {
  auto res = client->Post("/run?wait=true", auth,
                          "{\"script\":\"print(\\\"hello\\\")\\n\"}",
                          "application/json");
  bool ok = res && res->status == 200 &&
            res->body.find("\"stdout\":\"hello\\n\"") != std::string::npos;
  if (!ok) CountFailure(res);
  return ok;
}

struct Rate {
  std::vector<double> per_second;  // one per round
  std::vector<double> latency_ms;  // every request, all rounds
  int failures = 0;
};

// `clients` threads call `op` (returns success) until `seconds` pass.
void MeasureRate(int clients, double seconds,
                 const std::function<bool(int client)>& op, Rate* rate) {
  std::atomic<int64_t> done{0};
  std::atomic<int> failed{0};
  std::vector<std::vector<double>> lat(clients);
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      while (MsSince(start) < seconds * 1000) {
        auto t = Clock::now();
        if (op(c)) {
          lat[c].push_back(MsSince(t));
          ++done;
        } else {
          ++failed;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  rate->per_second.push_back(done.load() / (MsSince(start) / 1000));
  rate->failures += failed.load();
  for (auto& l : lat) {
    rate->latency_ms.insert(rate->latency_ms.end(), l.begin(), l.end());
  }
}

struct Options {
  std::set<std::string> cases = {"bare", "bwrap", "cold", "warm",
                                 "http", "rate",  "me"};
  int iterations = 200;
  double seconds = 2;
  int rounds = 3;
  std::string chart;
};

bool Parse(int argc, char** argv, Options* o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string name = argv[i], value = argv[i + 1];
    if (name == "--cases") {
      o->cases.clear();
      std::stringstream in(value);
      std::string c;
      while (std::getline(in, c, ',')) o->cases.insert(c);
    } else if (name == "--iterations") {
      o->iterations = std::max(1, std::atoi(value.c_str()));
    } else if (name == "--seconds") {
      o->seconds = std::max(0.2, std::atof(value.c_str()));
    } else if (name == "--rounds") {
      o->rounds = std::max(1, std::atoi(value.c_str()));
    } else if (name == "--chart") {
      o->chart = value;
    } else {
      return false;
    }
  }
  return argc % 2 == 1;
}

// Latency distributions as cumulative curves, log-scaled milliseconds.
void WriteSvg(
    const std::string& path,
    const std::vector<std::pair<std::string, std::vector<double>>>& series) {
  const int w = 720, h = 420, left = 60, right = 160, top = 30, bottom = 50;
  double lo = 1e9, hi = 0;
  for (const auto& [name, v] : series) {
    for (double x : v) {
      lo = std::min(lo, std::max(x, 0.05));
      hi = std::max(hi, x);
    }
  }
  if (hi <= lo) return;
  double l0 = std::floor(std::log10(lo)), l1 = std::ceil(std::log10(hi));
  auto X = [&](double ms) {
    return left + (std::log10(std::max(ms, 0.05)) - l0) / (l1 - l0) *
                      (w - left - right);
  };
  auto Y = [&](double q) { return top + (1 - q) * (h - top - bottom); };
  const char* colors[] = {"#444",    "#d62728", "#1f77b4", "#2ca02c",
                          "#9467bd", "#ff7f0e", "#8c564b", "#17becf"};
  std::ofstream out(path);
  out << "<svg xmlns='http://www.w3.org/2000/svg' width='" << w << "' height='"
      << h << "' font-family='sans-serif' font-size='12'>\n"
      << "<rect width='100%' height='100%' fill='white'/>\n"
      << "<text x='" << left << "' y='18'>hello latency, cumulative "
      << "(x: ms, log scale)</text>\n";
  for (double d = l0; d <= l1; d += 1) {
    double x = X(std::pow(10, d));
    out << "<line x1='" << x << "' y1='" << top << "' x2='" << x << "' y2='"
        << h - bottom << "' stroke='#ddd'/><text x='" << x - 10 << "' y='"
        << h - bottom + 16 << "'>" << std::pow(10, d) << "</text>\n";
  }
  for (double q : {0.0, 0.5, 0.9, 1.0}) {
    out << "<line x1='" << left << "' y1='" << Y(q) << "' x2='" << w - right
        << "' y2='" << Y(q) << "' stroke='#ddd'/><text x='10' y='" << Y(q) + 4
        << "'>p" << q * 100 << "</text>\n";
  }
  int i = 0;
  for (const auto& [name, v] : series) {
    std::vector<double> s = v;
    std::sort(s.begin(), s.end());
    const char* color = colors[i % 8];
    out << "<polyline fill='none' stroke='" << color
        << "' stroke-width='2' points='";
    for (size_t k = 0; k < s.size(); ++k) {
      out << X(s[k]) << "," << Y((k + 1.0) / s.size()) << " ";
    }
    out << "'/>\n<text x='" << w - right + 10 << "' y='" << top + 16 * i + 10
        << "' fill='" << color << "'>" << name << "</text>\n";
    ++i;
  }
  out << "</svg>\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--serve-bare-me") == 0) {
    return ServeBareMe();
  }
  Options o;
  if (!Parse(argc, argv, &o)) {
    fprintf(stderr,
            "usage: dex_bench [--cases bare,bwrap,cold,warm,http,rate,me] "
            "[--iterations N] [--seconds S] [--rounds R] [--chart out.svg]\n");
    return 2;
  }
  auto want = [&](const char* c) { return o.cases.count(c) > 0; };
  if (want("bwrap") && access(kBwrap, X_OK) != 0) o.cases.erase("bwrap");
  signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<dex::Sandbox> cold, warm;
  if (want("cold")) {
    dex::SandboxOptions so;
    so.warm_pool_max = 0;
    auto s = dex::Sandbox::Open(so);
    if (!s.ok()) return fprintf(stderr, "%s\n", s.status().ToString().c_str());
    cold = std::move(s.value());
  }
  if (want("warm")) {
    auto s = dex::Sandbox::Open(dex::SandboxOptions());
    if (!s.ok()) return fprintf(stderr, "%s\n", s.status().ToString().c_str());
    warm = std::move(s.value());
  }
  std::unique_ptr<Shim> shim;
  if (want("http") || want("rate") || want("me")) {
    shim = std::make_unique<Shim>();
    if (!shim->Start()) return fprintf(stderr, "dex-shim did not start\n");
  }
  auto sandboxed = [](dex::Sandbox* s) {
    dex::RunRequest r;
    r.script = std::string(kHello) + "\n";
    auto out = s->Run(r);
    return out.ok() && out->stdout_data == "hello\n";
  };
  // Made once, as a real client would: building the header map on every
  // call was the harness's cost, charged to dex's side only.
  const httplib::Headers auth = shim ? shim->Auth() : httplib::Headers();
  std::unique_ptr<httplib::Client> http_client;
  if (shim) {
    http_client = std::make_unique<httplib::Client>("127.0.0.1", shim->port());
    http_client->set_keep_alive(true);
    http_client->set_tcp_nodelay(true);
  }

  // Latency: one sample of each case in turn, after one warm-up each.
  std::vector<std::pair<std::string, std::function<bool()>>> latency;
  if (want("bare"))
    latency.push_back({"bare", [] { return SpawnAndWait(kBareArgs); }});
  if (want("bwrap"))
    latency.push_back({"bwrap", [] { return SpawnAndWait(kBwrapArgs); }});
  if (want("cold"))
    latency.push_back({"cold", [&] { return sandboxed(cold.get()); }});
  if (want("warm"))
    latency.push_back({"warm", [&] { return sandboxed(warm.get()); }});
  if (want("http")) {
    latency.push_back(
        {"http", [&] { return HttpHello(http_client.get(), auth); }});
  }
  std::map<std::string, std::vector<double>> ms;
  std::map<std::string, int> failures;
  for (auto& [name, op] : latency) op();
  for (int i = 0; i < o.iterations; ++i) {
    for (auto& [name, op] : latency) {
      auto t = Clock::now();
      bool ok = op();
      double d = MsSince(t);
      if (ok) {
        ms[name].push_back(d);
      } else {
        ++failures[name];
      }
    }
  }
  cold.reset();
  warm.reset();

  // Throughput: rounds alternate between each contender and its baseline.
  Rate rate, rate_bare, me, me_bare;
  std::unique_ptr<BareServer> bare_server;
  if (want("me")) {
    bare_server = std::make_unique<BareServer>();
    if (!bare_server->Start()) return fprintf(stderr, "no bare server\n");
  }
  std::vector<std::unique_ptr<httplib::Client>> clients, bare_clients;
  for (int c = 0; shim && c < kHttpClients; ++c) {
    clients.push_back(
        std::make_unique<httplib::Client>("127.0.0.1", shim->port()));
    clients.back()->set_keep_alive(true);
    clients.back()->set_tcp_nodelay(true);
    if (bare_server) {
      bare_clients.push_back(
          std::make_unique<httplib::Client>("127.0.0.1", bare_server->port()));
      bare_clients.back()->set_keep_alive(true);
      bare_clients.back()->set_tcp_nodelay(true);
    }
  }
  auto get_me = [](httplib::Client* c, const httplib::Headers& h) {
    auto res = c->Get("/me", h);
    bool ok = res && res->status == 200;
    if (!ok) CountFailure(res);
    return ok;
  };
  // A keep-alive connection idle through the other contender's round
  // (as long as the server's 2 s idle timeout) may be closed by the server
  // just as the next request goes out: each round starts on fresh
  // connections, as a client returning after a pause would.
  auto reconnect = [](std::vector<std::unique_ptr<httplib::Client>>& all) {
    for (auto& c : all) c->stop();
  };
  for (int r = 0; r < o.rounds; ++r) {
    if (want("rate")) {
      MeasureRate(
          2, o.seconds, [](int) { return SpawnAndWait(kBareArgs); },
          &rate_bare);
      reconnect(clients);
      MeasureRate(
          kHttpClients, o.seconds,
          [&](int c) { return HttpHello(clients[c].get(), auth); }, &rate);
    }
    if (want("me")) {
      reconnect(bare_clients);
      MeasureRate(
          kHttpClients, o.seconds,
          [&](int c) { return get_me(bare_clients[c].get(), {}); }, &me_bare);
      reconnect(clients);
      MeasureRate(
          kHttpClients, o.seconds,
          [&](int c) { return get_me(clients[c].get(), auth); }, &me);
    }
  }

  printf("dex_bench: %d iterations, %d rounds of %.1f s, %u cores\n",
         o.iterations, o.rounds, o.seconds,
         std::thread::hardware_concurrency());
  printf("%-10s %8s %10s %10s %10s %10s\n", "case", "n", "p50 ms", "p90 ms",
         "p99 ms", "per s");
  for (auto& [name, op] : latency) {
    auto& v = ms[name];
    printf("%-10s %8zu %10.2f %10.2f %10s %10s%s\n", name.c_str(), v.size(),
           Percentile(v, 50), Percentile(v, 90), "", "",
           failures[name] ? "  (failures!)" : "");
  }
  auto print_rate = [](const char* name, const Rate& r, bool p99) {
    char p99_text[32] = "";
    if (p99)
      snprintf(p99_text, sizeof(p99_text), "%.2f",
               Percentile(r.latency_ms, 99));
    printf("%-10s %8zu %10.2f %10.2f %10s %10.0f%s\n", name,
           r.latency_ms.size(), Percentile(r.latency_ms, 50),
           Percentile(r.latency_ms, 90), p99_text, Percentile(r.per_second, 50),
           r.failures ? "  (failures!)" : "");
  };
  if (want("rate")) {
    print_rate("rate-bare", rate_bare, false);
    print_rate("rate", rate, false);
  }
  if (want("me")) {
    print_rate("me-bare", me_bare, true);
    print_rate("me", me, true);
  }

  for (const auto& [why, count] : g_failures) {
    printf("  failed: %d x %s\n", count, why.c_str());
  }

  printf("\n%-44s %8s %8s %s\n", "target", "ratio", "goal", "verdict");
  bool all = true;
  auto verdict = [&](const char* what, double ratio, const char* goal,
                     bool ok) {
    all = all && ok;
    printf("%-44s %8.2f %8s %s\n", what, ratio, goal, ok ? "PASS" : "FAIL");
  };
  auto p50 = [&](const char* c) { return Percentile(ms[c], 50); };
  if (want("http") && want("bare")) {
    double x = p50("http") / p50("bare");
    verdict("1. http p50 / bare p50", x, "<= 0.5", x <= 0.5);
  }
  if (want("rate")) {
    double x =
        Percentile(rate.per_second, 50) / Percentile(rate_bare.per_second, 50);
    verdict("2. http rate / bare spawn rate", x, ">= 2",
            x >= 2 && !rate.failures);
  }
  if (want("cold") && want("bare")) {
    double x = p50("cold") / p50("bare");
    verdict("3. cold sandbox p50 / bare p50", x, "<= 1.2", x <= 1.2);
  }
  if (want("me")) {
    double x =
        Percentile(me.per_second, 50) / Percentile(me_bare.per_second, 50);
    double p99 = Percentile(me.latency_ms, 99);
    verdict("4. /me rate / bare handler (and p99 < 2 ms)", x, ">= 0.7",
            x >= 0.7 && p99 < 2.0);
  }
  if (want("warm") && want("bare")) {
    printf("%-44s %8.2f %8s %s\n", "   (warm sandbox p50 / bare p50)",
           p50("warm") / p50("bare"), "", "info");
  }
  if (!o.chart.empty()) {
    std::vector<std::pair<std::string, std::vector<double>>> series;
    for (auto& [name, op] : latency) series.push_back({name, ms[name]});
    if (want("rate")) series.push_back({"rate (8 clients)", rate.latency_ms});
    WriteSvg(o.chart, series);
    printf("\nchart: %s\n", o.chart.c_str());
  }
  return all ? 0 : 1;
}
