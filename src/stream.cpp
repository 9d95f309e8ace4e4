#include "holdfast/stream.hpp"

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>

#include "holdfast/loop_clock.hpp"
#include "holdfast/parking.hpp"
#include "holdfast/spare_stack.hpp"
#include "holdfast/sys_io.hpp"

namespace holdfast {

static_assert(sizeof(evbuffer_iovec) == sizeof(iovec) && offsetof(evbuffer_iovec, iov_len) == offsetof(iovec, iov_len),
              "libevent's evbuffer_iovec is laid out as struct iovec on Unix");

namespace {
constexpr std::size_t kReadSize = 64 * 1024;
// A read at least this large marks a bulk transfer: the next read goes to
// the evbuffer, whose chains then move to the other side without a copy.
// Below it, a read goes to the read area (detail::FlatArea) when the input
// is empty, and is parsed where it landed.
constexpr std::size_t kBulkRead = 16 * 1024;
// The write area holds a head and a small body; more goes to the evbuffer.
constexpr std::size_t kWriteArea = 16 * 1024;
// The areas' storage, one of each per thread, made on first use.
thread_local std::unique_ptr<char[]> t_read_area_storage;
thread_local std::unique_ptr<char[]> t_write_area_storage;
// Chains of at most this many bytes in all are copied into one send.
constexpr std::size_t kGatherBytes = 4096;
// Chains handed to one sendmsg (as libevent's own writev).
constexpr int kMaxIovecs = 64;

// A keep-alive connection gives its buffers up between requests (an idle
// one holds none); the next request on this thread takes them back from
// here instead of allocating. Bounded: a cached buffer may still hold the
// chain a read reserved (up to kReadSize).
void free_buffer(evbuffer* b) { evbuffer_free(b); }
thread_local SpareStack<evbuffer, 16, free_buffer> t_buffers;
}  // namespace

Stream::Stream(event_base* base, int fd, bool connecting)
    : fd_(fd), connecting_(connecting) {
  // Readiness that exists when the socket is added is reported by the first
  // edge, so nothing is assumed here.
  read_ready_ = false;
  write_ready_ = !connecting;
  // EV_CLOSED (EPOLLRDHUP) tells a FIN apart from data, so that a short read
  // may be taken as "drained" without missing an EOF that came with the data.
  register_io(base);
}

void Stream::register_io(event_base* base) {
  io_ = take_event();
  event_assign(io_, base, fd_, EV_READ | EV_WRITE | EV_CLOSED | EV_PERSIST | EV_ET, &Stream::on_io, this);
  event_add(io_, nullptr);
}

Stream::~Stream() {
  if (input_flat()) detail::t_read_area.owner = nullptr;
  if (output_flat()) detail::t_write_area.owner = nullptr;  // unsent bytes go with the stream
  close();
  if (io_) give_event(io_);
  free_timer();
  if (input_) drop_buffer(input_);
  if (output_) drop_buffer(output_);
}

evbuffer* Stream::make_buffer() {
  evbuffer* b = t_buffers.take();
  return b ? b : evbuffer_new();
}

void Stream::drop_buffer(evbuffer* b) noexcept {
  if (evbuffer_get_length(b) == 0) t_buffers.give(b);
  else evbuffer_free(b);
}

void Stream::release_idle_resources() {
  if (timer_ && !(reading_ && timer_->read_deadline) && !timer_->write_deadline) free_timer();
  if (input_ && input_length() == 0) {
    drop_buffer(input_);
    input_ = nullptr;
  }
  if (output_ && output_length() == 0) {
    drop_buffer(output_);
    output_ = nullptr;
  }
}

void Stream::close() {
  if (fd_ < 0) return;
  // Unsent bytes stay counted as output (an exchange counts what the
  // backend accepted by what is left), and the area is free for others.
  if (output_flat()) spill_write_area();
  if (io_) event_del(io_);  // an open stream's event is always added
  else ParkingLot::forget(*this);
  if (timer_) event_del(&timer_->ev);
  timer_armed_ = false;
  ::close(fd_);
  fd_ = -1;
  reading_ = false;
}

void Stream::shutdown_write() noexcept {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

void Stream::enable_read() {
  if (reading_ || fd_ < 0) return;
  reading_ = true;
  if (read_timeout_ && set_read_deadline(LoopClock::now() + *read_timeout_)) arm_timer();
  if (read_ready_) event_active(io(), EV_READ, 1);
}

void Stream::disable_read() {
  reading_ = false;
  clear_read_deadline();
}

void Stream::kick() {
  if (reading_ && read_ready_ && fd_ >= 0 && !eof_) event_active(io(), EV_READ, 1);
}

void Stream::set_read_timeout(std::optional<Millis> t) {
  read_timeout_ = t;
  if (t && reading_) {
    if (set_read_deadline(LoopClock::now() + *t)) arm_timer();
  } else {
    clear_read_deadline();
  }
}

void Stream::set_write_timeout(std::optional<Millis> t) {
  write_timeout_ = t;
  if (t && (connecting_ || !write_ready_)) {
    if (set_write_deadline(LoopClock::now() + *t)) arm_timer();
  } else if (!t) {
    clear_write_deadline();
  }
}

bool Stream::ensure_timer() {
  if (timer_) return true;
  if (fd_ < 0) return false;  // closed: nothing to watch
  if (!(timer_ = new (std::nothrow) Timer)) {
    // No memory for the timer: a deadline that cannot be watched ends the stream.
    fail_from_loop(ENOMEM);
    return false;
  }
  evtimer_assign(&timer_->ev, event_get_base(io()), &Stream::on_timer, this);
  return true;
}

void Stream::arm_timer() {
  if (!timer_ || fd_ < 0) return;  // no deadline; or a stale timer finds nothing to do and stops
  std::optional<Clock::time_point> earliest;
  if (reading_ && timer_->read_deadline) earliest = *timer_->read_deadline;
  if (timer_->write_deadline && (!earliest || *timer_->write_deadline < *earliest)) earliest = *timer_->write_deadline;
  if (!earliest) return;
  if (timer_armed_ && timer_->at <= *earliest) return;  // it fires first and re-arms for the rest
  timeval tv = to_timeval(*earliest - LoopClock::now());
  event_add(&timer_->ev, &tv);
  timer_armed_ = true;
  timer_->at = *earliest;
}

void Stream::on_timer(evutil_socket_t, short, void* arg) {
  LoopClock::Turn turn;
  auto* self = static_cast<Stream*>(arg);
  self->timer_armed_ = false;
  if (self->fd_ < 0) return;
  auto now = LoopClock::now();
  // The timer exists while it runs: nothing frees it before report().
  Timer& t = *self->timer_;
  if (self->reading_ && t.read_deadline && now >= *t.read_deadline) {
    t.read_deadline.reset();
    self->reading_ = false;
    self->report(timeout | reading);
    // A write deadline still pending must keep its timer: the owner may
    // go on writing (an error answer) after a read timeout.
    if (self->fd_ >= 0) self->arm_timer();
    return;
  }
  bool waiting_to_write = self->connecting_ || self->output_length() > 0 || self->raw_write_waiting_;
  if (t.write_deadline && waiting_to_write && now >= *t.write_deadline) {
    t.write_deadline.reset();
    self->report(timeout | writing);
    if (self->fd_ >= 0) self->arm_timer();
    return;
  }
  if (!waiting_to_write) t.write_deadline.reset();
  self->arm_timer();
}

void Stream::on_io(evutil_socket_t, short what, void* arg) {
  LoopClock::Turn turn;
  static_cast<Stream*>(arg)->handle_io(what);
}

void Stream::handle_io(short what) {
  if (fd_ < 0) return;
  if (connecting_) {
    if (pending_error_) {  // a deadline could not be armed (see arm_timer)
      pending_error_ = false;
      raise_error(writing, last_error_);
      return;
    }
    if (what & (EV_WRITE | EV_READ)) finish_connect();
    return;
  }
  if (what & EV_WRITE) {
    write_ready_ = true;
    if (pending_error_) {
      pending_error_ = false;
      // A peer that answered and closed (an early 401 while a spliced body
      // was going up) makes the write fail; its answer is read first, as on
      // the buffered path, where it arrives before the write error does.
      if (reading_ && !raw_input_ && !eof_) {
        const int err = last_error_;
        read_ready_ = true;
        do_read();
        if (fd_ < 0) return;
        last_error_ = static_cast<std::int16_t>(err);
      }
      raise_error(writing, last_error_);
      return;
    }
    if (!write_and_notify()) return;
    if (raw_write_waiting_ && output_length() == 0) {
      raw_write_waiting_ = false;
      clear_write_deadline();
      if (handler_) handler_->on_stream_drained(*this);
      if (fd_ < 0) return;
    }
  }
  if (what & EV_CLOSED) peer_closed_ = true;
  if (what & (EV_READ | EV_CLOSED)) {
    read_ready_ = true;
    if (reading_) do_read();
  }
}

void Stream::finish_connect() {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
  if (err != 0) {
    raise_error(writing, err);
    return;
  }
  connecting_ = false;
  write_ready_ = true;
  clear_write_deadline();
  report(connected);
  if (fd_ < 0) return;
  // A producer may have paused while the connect was in progress; if this
  // first write drains the output, it is told here (no write edge follows).
  if (!write_and_notify()) return;
  // Bytes may have come with the handshake's completion (a server that talks first).
  read_ready_ = true;
  if (reading_) do_read();
}

char* Stream::take_read_area() noexcept {
  if (detail::t_read_area.owner) return nullptr;
  if (!detail::t_read_area.data) {
    t_read_area_storage.reset(new (std::nothrow) char[kReadSize]);
    detail::t_read_area.data = t_read_area_storage.get();
  }
  return detail::t_read_area.data;
}

bool Stream::spill_area(detail::FlatArea& area, evbuffer*& to) {
  area.owner = nullptr;
  const std::size_t left = area.end - area.begin;
  if (left == 0) return true;
  if (!to) to = make_buffer();
  return to && evbuffer_add(to, area.data + area.begin, left) == 0;
}

bool Stream::spill_read_area() { return spill_area(detail::t_read_area, input_); }

void Stream::spill_read_area_or_fail() {
  if (!spill_read_area()) fail_from_loop(ENOMEM);
}

void Stream::fail_from_loop(int err) {
  last_error_ = static_cast<std::int16_t>(err);
  pending_error_ = true;
  if (fd_ >= 0) event_active(io(), EV_WRITE, 1);
}

std::string_view Stream::input_front() const noexcept {
  if (input_flat()) {
    const auto& area = detail::t_read_area;
    return {area.data + area.begin, static_cast<std::size_t>(area.end - area.begin)};
  }
  evbuffer_iovec v;
  if (!input_ || evbuffer_peek(input_, -1, nullptr, &v, 1) < 1) return {};
  return {static_cast<const char*>(v.iov_base), v.iov_len};
}

void Stream::drain_input(std::size_t n) noexcept {
  if (input_flat()) {
    auto& area = detail::t_read_area;
    area.begin += static_cast<std::uint32_t>(std::min<std::size_t>(n, area.end - area.begin));
    return;
  }
  if (input_) evbuffer_drain(input_, n);
}

const char* Stream::take_flat_input(std::size_t n) noexcept {
  if (!input_flat()) return nullptr;
  const char* at = detail::t_read_area.data + detail::t_read_area.begin;
  drain_input(n);
  return at;
}

void Stream::do_read() {
  while (reading_ && read_ready_ && fd_ >= 0 && !eof_) {
    if (raw_input_) {
      // A splice pump reads the socket (it may have taken over in the last
      // callback); one call per edge, it yields by kick().
      if (handler_) handler_->on_stream_readable(*this);
      return;
    }
    std::size_t have = input_length();
    if (have >= input_limit_) return;  // stays ready: kick() resumes once the owner consumed
    std::size_t want = std::min<std::size_t>(kReadSize, input_limit_ - have);
    // An empty input takes the read in the read area, unless the last read
    // was bulk; bytes already buffered keep their order in the evbuffer.
    char* area = (have == 0 && !bulk_reads_) ? take_read_area() : nullptr;
    evbuffer_iovec vec;
    std::size_t room = want;
    if (area) {
      vec.iov_base = area;
    } else {
      if (evbuffer_reserve_space(input(), static_cast<ev_ssize_t>(want), &vec, 1) < 1) {
        raise_error(reading, ENOMEM);
        return;
      }
      room = std::min(want, static_cast<std::size_t>(vec.iov_len));
    }
    ssize_t n = sys::recv(fd_, vec.iov_base, room, 0);
    if (n > 0) {
      if (area) {
        detail::t_read_area = {this, area, 0, static_cast<std::uint32_t>(n)};
      } else {
        vec.iov_len = static_cast<std::size_t>(n);
        evbuffer_commit_space(input(), &vec, 1);
      }
      bulk_reads_ = static_cast<std::size_t>(n) >= kBulkRead;
      // A short read drained the socket; with edge triggering the next bytes
      // bring a new edge, so no recv is spent just to see EAGAIN.
      if (static_cast<std::size_t>(n) < room && !peer_closed_) read_ready_ = false;
      if (read_timeout_) set_read_deadline(LoopClock::now() + *read_timeout_);
      if (handler_) handler_->on_stream_readable(*this);
      // What the handler left of the read area is this stream's input from now on.
      if (input_flat() && !spill_read_area()) {
        raise_error(reading, ENOMEM);
        return;
      }
      continue;
    }
    if (n == 0) {
      eof_ = true;
      read_ready_ = false;
      report(eof | reading);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      read_ready_ = false;
      return;
    }
    raise_error(reading, errno);
    return;
  }
}

char* Stream::write_area_room(std::size_t n) {
  auto& area = detail::t_write_area;
  if (area.owner == this) {
    if (kWriteArea - area.end >= n) return area.data + area.end;
    spill_write_area_or_fail();  // no room: this and what follows go to the evbuffer
    return nullptr;
  }
  if (n > kWriteArea || (output_ && evbuffer_get_length(output_) > 0)) return nullptr;
  if (area.owner) static_cast<Stream*>(area.owner)->spill_write_area_or_fail();
  if (!area.data) {
    t_write_area_storage.reset(new (std::nothrow) char[kWriteArea]);
    area.data = t_write_area_storage.get();
    if (!area.data) return nullptr;
  }
  area.owner = this;
  area.begin = area.end = 0;
  return area.data;
}

bool Stream::spill_write_area() { return spill_area(detail::t_write_area, output_); }

void Stream::spill_write_area_or_fail() {
  if (!spill_write_area()) fail_from_loop(ENOMEM);
}

char* Stream::reserve_output(std::size_t n) {
  if (char* room = write_area_room(n)) return room;
  evbuffer_iovec vec;
  if (evbuffer_reserve_space(output(), static_cast<ev_ssize_t>(n), &vec, 1) != 1 || vec.iov_len < n) return nullptr;
  return static_cast<char*>(vec.iov_base);
}

void Stream::commit_output(char* at, std::size_t used) {
  if (output_flat()) {
    auto& area = detail::t_write_area;
    area.end += static_cast<std::uint32_t>(used);
    if (area.end == area.begin) area.owner = nullptr;  // nothing written: the area is free again
    return;
  }
  // The space reserved is the evbuffer's last chain, `at` its start.
  evbuffer_iovec vec;
  vec.iov_base = at;
  vec.iov_len = used;
  evbuffer_commit_space(output_, &vec, 1);
}

void Stream::add_output(const char* data, std::size_t n) {
  if (n == 0) return;
  if (char* room = write_area_room(n)) {
    std::memcpy(room, data, n);
    detail::t_write_area.end += static_cast<std::uint32_t>(n);
    return;
  }
  evbuffer_add(output(), data, n);
}

int Stream::send_write_area(bool& wrote) {
  auto& area = detail::t_write_area;
  for (;;) {
    const std::size_t len = area.end - area.begin;
    ssize_t n = sys::send(fd_, area.data + area.begin, len, MSG_NOSIGNAL);
    if (n >= 0 && static_cast<std::size_t>(n) == len) {
      area.owner = nullptr;
      wrote = true;
      return 0;
    }
    if (n > 0) {
      // A short write filled the socket buffer: the rest waits for a write edge.
      area.begin += static_cast<std::uint32_t>(n);
      wrote = true;
      write_ready_ = false;
      break;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      write_ready_ = false;
      break;
    }
    const int err = n < 0 ? errno : EPIPE;
    return spill_write_area() ? err : ENOMEM;
  }
  return spill_write_area() ? 0 : ENOMEM;
}

int Stream::write_out() {
  bool wrote = false;
  if (output_flat()) {
    if (int err = send_write_area(wrote)) return err;
  }
  // The bytes left are counted here, not asked of the buffer after each send.
  std::size_t left = output_length();
  while (left > 0 && write_ready_) {
    std::size_t offered = 0;
    ssize_t n = send_some(left, offered);
    if (n > 0) {
      wrote = true;
      left -= static_cast<std::size_t>(n);
      // A short write filled the socket buffer (the kernel then owes a
      // write edge, as nginx relies on): no send is spent just to see EAGAIN.
      if (static_cast<std::size_t>(n) < offered) {
        write_ready_ = false;
        break;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      write_ready_ = false;
      break;
    }
    return n < 0 ? errno : EPIPE;
  }
  if (left == 0) {
    clear_write_deadline();
    return 0;
  }
  // The send timeout counts from the last progress: restart it only when
  // this call moved bytes (one clock read per block, not per write).
  if (write_timeout_ && (wrote || !write_deadline()) && set_write_deadline(LoopClock::now() + *write_timeout_))
    arm_timer();
  return 0;
}

ssize_t Stream::send_some(std::size_t total, std::size_t& offered) {
  // One buffer goes out with send(); a head and a small body held in separate
  // chains are gathered on the stack first, so that they leave in one write
  // and one TCP segment; anything larger goes as one sendmsg of the chains.
  // MSG_NOSIGNAL: a peer gone away is an error value, never a signal.
  evbuffer_iovec vec[kMaxIovecs];
  int chains = evbuffer_peek(output_, -1, nullptr, vec, kMaxIovecs);
  if (chains <= 0) return 0;
  ssize_t n;
  if (chains == 1) {
    offered = vec[0].iov_len;
    n = sys::send(fd_, vec[0].iov_base, vec[0].iov_len, MSG_NOSIGNAL);
  } else if (total <= kGatherBytes) {
    char gathered[kGatherBytes];
    evbuffer_copyout(output_, gathered, total);
    offered = total;
    n = sys::send(fd_, gathered, total, MSG_NOSIGNAL);
  } else {
    msghdr msg{};
    msg.msg_iov = reinterpret_cast<iovec*>(vec);
    msg.msg_iovlen = static_cast<std::size_t>(std::min(chains, kMaxIovecs));
    offered = 0;
    for (std::size_t i = 0; i < msg.msg_iovlen; ++i) offered += vec[i].iov_len;
    // More chains than one call takes follow at once: let them share segments.
    n = sys::sendmsg(fd_, &msg, MSG_NOSIGNAL | (chains > kMaxIovecs ? MSG_MORE : 0));
  }
  if (n > 0) evbuffer_drain(output_, static_cast<std::size_t>(n));
  return n;
}

bool Stream::write_and_notify() {
  std::size_t before = output_length();
  if (before == 0) return true;
  if (int err = write_out()) {
    raise_error(writing, err);
    return false;
  }
  if (fd_ < 0) return false;
  std::size_t after = output_length();
  if (after < before && after <= drain_mark_ && handler_) {
    handler_->on_stream_drained(*this);
    if (fd_ < 0) return false;
  }
  return true;
}

void Stream::flush() {
  if (fd_ < 0 || connecting_ || !write_ready_ || output_length() == 0) {
    // Bytes that cannot go now wait in the evbuffer, and the area is free.
    if (output_flat()) spill_write_area_or_fail();
    return;
  }
  io();  // what a write leaves behind waits for a write edge, which only the event gets
  if (int err = write_out()) fail_from_loop(err);
}

void Stream::note_raw_read(bool drained) {
  if (drained) read_ready_ = false;
  else if (read_timeout_ && reading_) set_read_deadline(LoopClock::now() + *read_timeout_);
}

void Stream::report_raw_end(int err) {
  if (fd_ < 0) return;
  read_ready_ = false;
  if (err != 0) {
    raise_error(reading, err);
    return;
  }
  eof_ = true;
  report(eof | reading);
}

void Stream::note_raw_write(bool progress, bool blocked) {
  if (!blocked) {
    if (progress) clear_write_deadline();
    return;
  }
  write_ready_ = false;
  raw_write_waiting_ = true;
  if (write_timeout_ && (progress || !write_deadline()) && set_write_deadline(LoopClock::now() + *write_timeout_))
    arm_timer();
}

void Stream::fail_raw_write(int err) {
  if (fd_ < 0) return;
  fail_from_loop(err);
}

void Stream::raise_error(short direction, int err) {
  last_error_ = static_cast<std::int16_t>(err);
  report(static_cast<short>(error | direction));
}

void Stream::report(short what) {
  if (handler_) handler_->on_stream_event(*this, what);
}

}  // namespace holdfast
