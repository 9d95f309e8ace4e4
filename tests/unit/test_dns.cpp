// resolve_names and DnsWatcher against a real resolver: dnsmasq on an
// ephemeral loopback port, answering from a hosts file the test rewrites
// (SIGHUP makes dnsmasq read it again). Every wait is bounded.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include "holdfast/dns.hpp"

using namespace holdfast;
using namespace std::chrono_literals;
using TestClock = std::chrono::steady_clock;

namespace {

std::string find_dnsmasq() {
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"}) {
    std::string path = std::string(dir) + "/dnsmasq";
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

std::string encode_name(const std::string& name) {
  std::string out;
  std::size_t start = 0;
  while (start <= name.size()) {
    auto dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    out += static_cast<char>(dot - start);
    out += name.substr(start, dot - start);
    start = dot + 1;
  }
  return out + '\0';
}

// One A query to 127.0.0.1:port; the A records of the answer, or nullopt
// when nothing answered within 300 ms.
std::optional<std::vector<std::string>> query_a(std::uint16_t port, const std::string& name) {
  std::string q("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 12);
  q += encode_name(name) + std::string("\x00\x01\x00\x01", 4);
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::sendto(fd, q.data(), q.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  pollfd p{fd, POLLIN, 0};
  unsigned char buf[512];
  ssize_t n = ::poll(&p, 1, 300) == 1 ? ::recv(fd, buf, sizeof buf, 0) : -1;
  ::close(fd);
  if (n < 12) return std::nullopt;
  std::vector<std::string> out;
  std::size_t at = 12 + encode_name(name).size() + 4;
  unsigned answers = buf[6] << 8 | buf[7];
  for (unsigned i = 0; i < answers && at < static_cast<std::size_t>(n); ++i) {
    if ((buf[at] & 0xc0) == 0xc0) at += 2;                 // compressed name
    else while (at < static_cast<std::size_t>(n) && buf[at]) at += buf[at] + 1;
    if (at + 10 > static_cast<std::size_t>(n)) break;
    unsigned type = buf[at] << 8 | buf[at + 1], len = buf[at + 8] << 8 | buf[at + 9];
    at += 10;
    if (type == 1 && len == 4 && at + 4 <= static_cast<std::size_t>(n)) {
      char text[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, buf + at, text, sizeof text);
      out.emplace_back(text);
    }
    at += len;
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::uint16_t free_udp_port() {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// dnsmasq serving only `hosts` (names of it answer, every other name is
// NXDOMAIN), on 127.0.0.1:port; stopped by the destructor.
class Dnsmasq {
 public:
  Dnsmasq() {
    binary_ = find_dnsmasq();
    if (binary_.empty()) throw std::runtime_error("dnsmasq not found: install dnsmasq-base (scripts/setup does)");
    char dir[] = "/tmp/holdfast-dns-XXXXXX";
    if (!::mkdtemp(dir)) throw std::runtime_error("mkdtemp failed");
    dir_ = dir;
    hosts_ = dir_ + "/hosts";
    write_hosts("");
    for (int attempt = 0; attempt < 5 && pid_ < 0; ++attempt) launch();
    if (pid_ < 0) throw std::runtime_error("dnsmasq did not start; see " + dir_ + "/dnsmasq.log");
  }
  ~Dnsmasq() {
    kill_now(SIGTERM);
    std::remove(hosts_.c_str());
    std::remove((dir_ + "/dnsmasq.log").c_str());
    ::rmdir(dir_.c_str());
  }
  std::uint16_t port() const { return port_; }

  // Rewrites the hosts file, has dnsmasq read it again, and waits until it
  // answers `probe` with `expect` (sorted IPv4 addresses).
  void set(const std::string& hosts, const std::string& probe, const std::vector<std::string>& expect) {
    write_hosts(hosts);
    ::kill(pid_, SIGHUP);
    const auto deadline = TestClock::now() + 5s;
    while (query_a(port_, probe) != expect)
      if (TestClock::now() > deadline) throw std::runtime_error("dnsmasq did not pick up the new hosts file");
  }

  void kill_now(int sig = SIGKILL) {
    if (pid_ >= 0) {
      ::kill(pid_, sig);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    if (guard_fd_ >= 0) {
      ::close(guard_fd_);  // the guard's read ends: it exits
      ::waitpid(guard_pid_, nullptr, 0);
      guard_fd_ = -1;
    }
  }

 private:
  void write_hosts(const std::string& text) {
    std::string tmp = hosts_ + ".new";
    std::ofstream(tmp) << text;
    std::rename(tmp.c_str(), hosts_.c_str());
  }

  void launch() {
    port_ = free_udp_port();
    std::string log = dir_ + "/dnsmasq.log";
    const passwd* pw = ::getpwuid(::geteuid());
    std::vector<std::string> args{binary_, "--keep-in-foreground", "--conf-file=/dev/null",
                                  "--port=" + std::to_string(port_), "--listen-address=127.0.0.1",
                                  "--bind-interfaces", "--no-resolv", "--no-hosts", "--addn-hosts=" + hosts_,
                                  "--local=/#/", "--pid-file=", "--log-queries", "--log-facility=-"};
    if (pw) args.push_back(std::string("--user=") + pw->pw_name);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t child = ::fork();
    if (child == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // until dnsmasq changes its credentials; see start_guard()
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    const auto deadline = TestClock::now() + 5s;
    while (TestClock::now() < deadline) {
      if (::waitpid(child, nullptr, WNOHANG) == child) return;  // port taken meanwhile: try another
      if (query_a(port_, "ready.invalid")) {
        pid_ = child;
        start_guard();
        return;
      }
    }
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
  }

  // dnsmasq drops privileges, which clears PR_SET_PDEATHSIG: a guard shell
  // kills it once the pipe from this process closes, even if the test dies.
  void start_guard() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    std::string script = "read _; kill -9 " + std::to_string(pid_) + " 2>/dev/null";
    guard_pid_ = ::fork();
    if (guard_pid_ == 0) {
      ::dup2(fds[0], 0);
      ::execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[0]);
    guard_fd_ = fds[1];
  }

  std::string binary_, dir_, hosts_;
  int guard_fd_ = -1;
  pid_t guard_pid_ = -1;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

Config config_for(std::uint16_t dns_port, const std::vector<std::string>& servers, const char* interval = "30s") {
  std::string text = "listen: [\"127.0.0.1:0\"]\nresolver: 127.0.0.1:" + std::to_string(dns_port) +
                     "\nupstreams:\n  app:\n    resolve_interval: " + interval + "\n    servers:\n";
  for (const auto& s : servers) text += "      - address: \"" + s + "\"\n";
  return load_config_text(text, "t.yaml");
}

const std::vector<std::string> kTwo{"127.0.0.2", "127.0.0.3"};
const char* kHosts = "127.0.0.2 backend.holdfast.test\n127.0.0.3 backend.holdfast.test\n"
                     "127.0.0.4 mixed.holdfast.test\n::1 mixed.holdfast.test\n";

// Changes reported by a watcher, for the test thread to wait on.
struct Changes {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::pair<std::string, std::vector<std::string>>> seen;
  DnsWatcher::OnChange callback() {
    return [this](const std::string& name, const std::vector<std::string>& addresses) {
      std::lock_guard lock(mutex);
      seen.emplace_back(name, addresses);
      cv.notify_all();
    };
  }
  std::size_t count() {
    std::lock_guard lock(mutex);
    return seen.size();
  }
};

template <typename Pred>
bool wait_for(Pred pred, std::chrono::milliseconds budget) {
  const auto deadline = TestClock::now() + budget;
  while (!pred()) {
    if (TestClock::now() > deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

}  // namespace

TEST_CASE("dns: resolve_names returns every address of a name, IPv4 then IPv6") {
  Dnsmasq dns;
  dns.set(kHosts, "backend.holdfast.test", kTwo);
  auto config = config_for(dns.port(), {"backend.holdfast.test:8080", "mixed.holdfast.test:8080", "127.0.0.9:80"});
  NameTable names;
  std::string error;
  REQUIRE_MESSAGE(resolve_names(config, names, error), error);
  CHECK(error.empty());
  CHECK(names.size() == 2);  // the literal is not looked up
  CHECK(names["backend.holdfast.test"] == kTwo);
  CHECK(names["mixed.holdfast.test"] == std::vector<std::string>{"127.0.0.4", "::1"});
}

TEST_CASE("dns: IP literals need no lookup") {
  CHECK(is_ip_literal("127.0.0.1"));
  CHECK(is_ip_literal("::1"));
  CHECK(!is_ip_literal("backend.holdfast.test"));
  // A resolver nobody answers on: a lookup would fail, so none may happen.
  auto config = config_for(free_udp_port(), {"127.0.0.2:80", "[::1]:80"});
  CHECK(host_names(config).empty());
  NameTable names{{"stale", {"1.2.3.4"}}};
  std::string error;
  const auto started = TestClock::now();
  CHECK(resolve_names(config, names, error));
  CHECK(names.empty());
  CHECK(error.empty());
  CHECK(TestClock::now() - started < 500ms);
}

TEST_CASE("dns: an unknown name fails with the name in the error") {
  Dnsmasq dns;
  dns.set(kHosts, "backend.holdfast.test", kTwo);
  auto config = config_for(dns.port(), {"backend.holdfast.test:8080", "nope.holdfast.test:8080"});
  NameTable names;
  std::string error;
  CHECK(!resolve_names(config, names, error));
  CHECK(error.rfind("nope.holdfast.test: ", 0) == 0);
  CHECK(error.find("NXDOMAIN") != std::string::npos);
  CHECK(names["backend.holdfast.test"] == kTwo);
}

TEST_CASE("dns: a resolver that does not answer fails within the bound") {
  auto config = config_for(free_udp_port(), {"backend.holdfast.test:8080"});
  NameTable names;
  std::string error;
  const auto started = TestClock::now();
  CHECK(!resolve_names(config, names, error, Millis(5000)));
  CHECK(error.rfind("backend.holdfast.test: ", 0) == 0);
  CHECK(TestClock::now() - started < 4500ms);  // evdns gives up first (about 2 s)
  MESSAGE(error);
}

TEST_CASE("dns: the watcher reports a changed address set and keeps it when the resolver goes away") {
  Dnsmasq dns;
  dns.set(kHosts, "backend.holdfast.test", kTwo);
  auto config = config_for(dns.port(), {"backend.holdfast.test:8080", "127.0.0.9:80"}, "200ms");
  NameTable current;
  std::string error;
  REQUIRE_MESSAGE(resolve_names(config, current, error), error);

  Changes changes;
  DnsWatcher watcher(changes.callback());
  watcher.watch(config, current);
  watcher.start();
  const auto& stats = watcher.stats();
  // Same answers as at startup: lookups happen, nothing is reported.
  REQUIRE(wait_for([&] { return stats.get(Counter::dns_resolutions) >= 3; }, 5000ms));
  CHECK(changes.count() == 0);
  CHECK(stats.get(Counter::dns_failures) == 0);
  CHECK(watcher.answers() == current);

  const std::vector<std::string> moved{"127.0.0.2", "127.0.0.4"};
  dns.set("127.0.0.4 backend.holdfast.test\n127.0.0.2 backend.holdfast.test\n", "backend.holdfast.test", moved);
  REQUIRE(wait_for([&] { return changes.count() >= 1; }, 5000ms));
  {
    std::lock_guard lock(changes.mutex);
    CHECK(changes.seen[0].first == "backend.holdfast.test");
    CHECK(changes.seen[0].second == moved);
  }
  CHECK(stats.get(Counter::dns_changes) == 1);
  CHECK(watcher.answers().at("backend.holdfast.test") == moved);

  // No resolver at all: lookups fail, are counted, and the last answer stays.
  dns.kill_now();
  const auto failures = stats.get(Counter::dns_failures);
  REQUIRE(wait_for([&] { return stats.get(Counter::dns_failures) >= failures + 2; }, 10000ms));
  CHECK(changes.count() == 1);
  CHECK(stats.get(Counter::dns_changes) == 1);
  CHECK(watcher.answers().at("backend.holdfast.test") == moved);
  watcher.stop();
}

TEST_CASE("dns: watch() replaces the watched names while running") {
  Dnsmasq dns;
  dns.set(kHosts, "backend.holdfast.test", kTwo);
  Changes changes;
  DnsWatcher watcher(changes.callback());
  auto first = config_for(dns.port(), {"backend.holdfast.test:8080"}, "200ms");
  watcher.watch(first, {{"backend.holdfast.test", kTwo}});
  watcher.start();
  // The second version names mixed.holdfast.test without an answer for it:
  // it is looked up at once and reported.
  auto second = config_for(dns.port(), {"mixed.holdfast.test:8080"}, "200ms");
  watcher.watch(second, {});
  REQUIRE(wait_for([&] { return changes.count() >= 1; }, 5000ms));
  std::lock_guard lock(changes.mutex);
  CHECK(changes.seen[0].first == "mixed.holdfast.test");
  CHECK(changes.seen[0].second == std::vector<std::string>{"127.0.0.4", "::1"});
  CHECK(watcher.answers().count("backend.holdfast.test") == 0);
}

TEST_CASE("dns: a watcher stops at once with lookups in flight") {
  // Nobody answers on this port: each lookup would take about 2 s.
  auto config = config_for(free_udp_port(), {"backend.holdfast.test:8080", "mixed.holdfast.test:8080"}, "200ms");
  Changes changes;
  const auto started = TestClock::now();
  {
    DnsWatcher watcher(changes.callback());
    watcher.watch(config, {});  // no answers yet: both are looked up at once
    watcher.start();
    std::this_thread::sleep_for(100ms);
    watcher.watch(config, {});  // abandons those lookups and starts new ones
    std::this_thread::sleep_for(100ms);
    CHECK(watcher.stats().get(Counter::dns_resolutions) == 0);
  }
  CHECK(TestClock::now() - started < 1500ms);
  CHECK(changes.count() == 0);
}
