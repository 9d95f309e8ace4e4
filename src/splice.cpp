#include "holdfast/splice.hpp"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "holdfast/sys_io.hpp"

namespace holdfast {

namespace {
// 256 KiB: the kernel's default pipe (64 KiB) would cost four times the
// syscalls per byte; an unprivileged process may grow a pipe to
// fs.pipe-max-size (1 MiB by default), so this normally succeeds. A 1 MiB
// pipe halves the splice calls of a 1 MiB body but measured no less CPU per
// body, and a slow client would hold four times the kernel memory.
constexpr int kPipeSize = 256 * 1024;
// Bytes one run() moves before it yields to the loop, so that one fast body
// does not starve the worker's other connections.
constexpr std::uint64_t kRunBudget = 4 * 1024 * 1024;
// Empty pipes kept per worker for the next large body.
constexpr std::size_t kMaxIdlePipes = 16;

// Per worker: each worker is one thread with its own event loop, so a
// thread_local pool is a per-worker pool that no other thread touches.
struct PipePool {
  std::vector<std::pair<int, int>> idle;
  bool refused = false;  // the kernel said EINVAL/ENOSYS to a splice
  ~PipePool() {
    for (auto [r, w] : idle) {
      ::close(r);
      ::close(w);
    }
  }
};
thread_local PipePool t_pipes;

bool unsupported_errno(int e) { return e == EINVAL || e == ENOSYS || e == EOPNOTSUPP; }
}  // namespace

bool splice_available() noexcept { return !t_pipes.refused; }

SplicePump::Pipe SplicePump::acquire_pipe() {
  if (!t_pipes.idle.empty()) {
    auto [r, w] = t_pipes.idle.back();
    t_pipes.idle.pop_back();
    return {r, w};
  }
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return {};
  // Best effort: a pipe left at the default size still works, only slower.
  ::fcntl(fds[1], F_SETPIPE_SZ, kPipeSize);
  return {fds[0], fds[1]};
}

void SplicePump::release_pipe(Pipe pipe, bool empty) {
  if (pipe.read_end < 0) return;
  // A pipe holding bytes of another body must never carry the next one.
  if (empty && t_pipes.idle.size() < kMaxIdlePipes) {
    t_pipes.idle.emplace_back(pipe.read_end, pipe.write_end);
    return;
  }
  ::close(pipe.read_end);
  ::close(pipe.write_end);
}

std::unique_ptr<SplicePump> SplicePump::start(Stream& source, Stream& sink, std::optional<std::uint64_t> length) {
  if (t_pipes.refused || source.is_closed() || sink.is_closed()) return nullptr;
  Pipe pipe = acquire_pipe();
  if (pipe.read_end < 0) return nullptr;
  return std::unique_ptr<SplicePump>(new SplicePump(source, sink, length, pipe));
}

SplicePump::SplicePump(Stream& source, Stream& sink, std::optional<std::uint64_t> length, Pipe pipe)
    : source_(source), sink_(sink), length_(length), pipe_(pipe) {
  source_.set_raw_input(true);
}

SplicePump::~SplicePump() {
  source_.set_raw_input(false);
  sink_.end_raw_write();
  release_pipe(pipe_, in_pipe_ == 0);
}

bool SplicePump::drain_pipe(Status& status) {
  while (in_pipe_ > 0) {
    if (sink_.is_closed()) {
      status = Status::sink_error;
      return false;
    }
    // Bytes queued in the sink's buffer before the pump began go first.
    if (sink_.output_length() > 0) {
      sink_.flush();
      if (sink_.output_length() > 0) {
        status = Status::sink_blocked;  // the buffered write path reports the drain
        return false;
      }
    }
    if (!sink_.write_ready()) {
      sink_.note_raw_write(false, true);
      status = Status::sink_blocked;
      return false;
    }
    ssize_t n = sys::splice(pipe_.read_end, sink_.fd(), in_pipe_, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      in_pipe_ -= static_cast<std::size_t>(n);
      delivered_ += static_cast<std::uint64_t>(n);
      sink_.note_raw_write(true, false);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      sink_.note_raw_write(false, true);
      status = Status::sink_blocked;
      return false;
    }
    int err = n < 0 ? errno : EPIPE;
    if (unsupported_errno(err)) t_pipes.refused = true;
    error_ = err;
    sink_.fail_raw_write(err);
    status = Status::sink_error;
    return false;
  }
  return true;
}

SplicePump::Status SplicePump::run() {
  std::uint64_t moved = 0;
  for (;;) {
    Status stopped;
    if (!drain_pipe(stopped)) return stopped;
    if (source_done()) return Status::done;
    if (source_eof_) return Status::source_eof;
    if (moved >= kRunBudget) {
      source_.kick();
      return Status::waiting;
    }
    // The owner's pause (backpressure, no upstream yet) is honoured here.
    if (!source_.reading_enabled() || !source_.read_ready()) return Status::waiting;
    // Never past the end of the body: what follows stays in the socket.
    std::size_t want = kPipeSize;
    if (length_) want = static_cast<std::size_t>(std::min<std::uint64_t>(want, *length_ - taken_));
    ssize_t n = sys::splice(source_.fd(), pipe_.write_end, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      taken_ += static_cast<std::uint64_t>(n);
      in_pipe_ += static_cast<std::size_t>(n);
      moved += static_cast<std::uint64_t>(n);
      source_.note_raw_read(false);
      // The body is read: the source's next bytes belong to the buffered path.
      if (source_done()) source_.set_raw_input(false);
      continue;
    }
    if (n == 0) {
      source_eof_ = true;
      source_.note_raw_read(true);
      continue;
    }
    if (errno == EINTR) continue;
    // The pipe is empty here, so EAGAIN means the socket has nothing more.
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      source_.note_raw_read(true);
      return Status::waiting;
    }
    error_ = errno;
    if (unsupported_errno(error_)) {
      t_pipes.refused = true;
      if (taken_ == 0) return Status::unsupported;
    }
    return Status::source_error;
  }
}

}  // namespace holdfast
