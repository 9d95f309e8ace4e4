// The Server's control thread: signals, config file changes and DNS answers,
// each turned into a reload (server.cpp applies it).
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include "holdfast/server.hpp"

namespace holdfast {

namespace {

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Events that replace or rewrite a file, or swap a symlink, in a directory.
constexpr std::uint32_t kWatchMask =
    IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;

// A change is acted on once the directory has been quiet this long: an editor
// or kubelet writes in several steps, and one reload should see the last.
constexpr auto kSettle = std::chrono::milliseconds(100);

}  // namespace

std::optional<std::string> Server::read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

bool Server::config_changed(std::optional<std::string>& text) {
  text = read_text(version()->declared.source);
  return text != last_text_;
}

void Server::watch_config(int inotify_fd) {
  // The file's directory, and the directory above it: Kubernetes swaps a
  // `..data` symlink inside the first; a deploy tool may swap the first
  // itself (a symlink to a new directory), which only the second sees.
  // Watches are set again after every change, so that they follow the
  // directories the paths now lead to: adding a watch on an inode already
  // watched returns its descriptor, and only descriptors no longer returned
  // are removed (each removal queues an IN_IGNORED, which is not a change).
  std::vector<int> now;
  const auto dir = parent_of(version()->declared.source);
  for (const auto& d : {dir, parent_of(dir)}) {
    int w = inotify_add_watch(inotify_fd, d.c_str(), kWatchMask);
    if (w >= 0) now.push_back(w);
    else if (config_watches_.empty()) spdlog::warn("reload_on_change: cannot watch {}: {}", d, strerror(errno));
  }
  for (int w : config_watches_)
    if (std::find(now.begin(), now.end(), w) == now.end()) inotify_rm_watch(inotify_fd, w);
  config_watches_ = std::move(now);
}

int Server::run(const sigset_t& signals) {
  int sfd = signalfd(-1, &signals, SFD_CLOEXEC);
  int ifd = -1;
  bool pending = false;
  auto settle_at = std::chrono::steady_clock::now();
  for (;;) {
    const bool want = version()->declared.reload_on_change;
    if (want && ifd < 0) {
      ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
      if (ifd >= 0) {
        watch_config(ifd);
        spdlog::info("reload_on_change: watching {}", version()->declared.source);
        // A change between the load and this watch would go unseen: compare now.
        pending = true;
        settle_at = std::chrono::steady_clock::now();
      }
    } else if (!want && ifd >= 0) {
      ::close(ifd);
      ifd = -1;
      config_watches_.clear();
      pending = false;
    }
    pollfd fds[3] = {{sfd, POLLIN, 0}, {wake_fd_, POLLIN, 0}, {ifd, POLLIN, 0}};
    int timeout = -1;
    if (pending) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(settle_at - std::chrono::steady_clock::now());
      timeout = static_cast<int>(std::max<std::int64_t>(0, left.count()));
    }
    int n = ::poll(fds, ifd >= 0 ? 3 : 2, timeout);
    if (n < 0) {
      // EINTR, and the restart codes a debugger's attach can leak, are not failures; none of
      // poll's errors is a reason to stop taking signals, so the loop waits briefly and goes on.
      int err = errno;
      if (err != EINTR) {
        spdlog::warn("control loop: poll: {}", strerror(err));
        ::poll(nullptr, 0, 100);
      }
      continue;
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info{};
      if (::read(sfd, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
        if (info.ssi_signo == SIGHUP) {
          reload("SIGHUP");
        } else {
          ::close(sfd);
          if (ifd >= 0) ::close(ifd);
          return static_cast<int>(info.ssi_signo);
        }
      }
    }
    if (fds[1].revents & POLLIN) {
      std::uint64_t value;
      [[maybe_unused]] auto r = ::read(wake_fd_, &value, sizeof value);
      apply_dns_answers();
    }
    if (ifd >= 0 && (fds[2].revents & POLLIN)) {
      alignas(inotify_event) char buf[4096];
      bool changed = false;
      for (ssize_t got; (got = ::read(ifd, buf, sizeof buf)) > 0;) {
        for (ssize_t at = 0; at + static_cast<ssize_t>(sizeof(inotify_event)) <= got;) {
          const auto* e = reinterpret_cast<const inotify_event*>(buf + at);
          if (!(e->mask & IN_IGNORED)) changed = true;
          at += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
        }
      }
      if (changed) {
        pending = true;
        settle_at = std::chrono::steady_clock::now() + kSettle;
      }
    }
    if (pending && std::chrono::steady_clock::now() >= settle_at) {
      pending = false;
      if (ifd >= 0) watch_config(ifd);
      if (std::optional<std::string> text; config_changed(text)) reload_from("config file changed", std::move(text));
    }
  }
  ::close(sfd);
  if (ifd >= 0) ::close(ifd);
  return SIGTERM;
}

}  // namespace holdfast
