// A non-blocking TCP socket with an input and an output buffer, driven by one
// edge-triggered event registered once for both directions (as nginx does):
// no epoll_ctl per request, one recv per readiness edge, and writes made at
// once when the owner calls flush() rather than on the next loop turn.
//
// Timeouts are deadlines checked by one timer per stream, created only when a
// deadline is first armed; moving a deadline later (every read, every write)
// costs no timer update: the timer fires at the old deadline, finds it moved,
// and re-arms itself for the rest.
//
// Ownership: the Stream owns its socket and buffers. Its Handler (the client
// connection, the exchange or the pool) is a borrowed pointer that the owner
// swaps as ownership of the connection moves. A Stream must not be deleted
// while one of its callbacks runs; owners defer deletion to the next loop turn
// (Worker::defer_delete) and call close() at once instead.
#pragma once

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace holdfast {

namespace detail {
// A worker thread's two flat areas, each lent to one stream at a time.
//
// The read area (Stream::do_read): while one stream's readable callback
// runs, the bytes of the read that woke it may sit here rather than in that
// stream's evbuffer. The callback parses them in place, and what it leaves
// is moved into the evbuffer when it returns.
//
// The write area (Stream::reserve_output, add_output): a stream whose output
// is empty writes its next bytes here, and flush() sends them with one send
// straight from here. Whatever cannot go at once, and the area itself when
// another stream asks for it or the stream writes through output(), moves
// into the stream's evbuffer first, so the bytes keep their order.
//
// So a small message costs no buffer chain to reserve, commit, drain and
// free, on either side. `owner` is the stream, or null; the storage is owned
// in stream.cpp. Trivially destructible, so that reading it needs no
// thread-local guard.
struct FlatArea {
  void* owner = nullptr;
  char* data = nullptr;
  std::uint32_t begin = 0;
  std::uint32_t end = 0;
};
inline thread_local FlatArea t_read_area;
inline thread_local FlatArea t_write_area;

// std::optional<Millis> in 4 bytes (timeouts above 24 days are clamped):
// every byte of a Stream is paid once per idle connection.
class CompactTimeout {
 public:
  CompactTimeout& operator=(std::optional<std::chrono::milliseconds> t) noexcept {
    ms_ = t ? static_cast<std::int32_t>(std::min<long long>(t->count(), INT32_MAX)) : -1;
    return *this;
  }
  explicit operator bool() const noexcept { return ms_ >= 0; }
  std::chrono::milliseconds operator*() const noexcept { return std::chrono::milliseconds(ms_); }

 private:
  std::int32_t ms_ = -1;
};

// std::optional<steady_clock::time_point> in 8 bytes (0 means none).
class CompactDeadline {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  CompactDeadline& operator=(TimePoint t) noexcept {
    ns_ = t.time_since_epoch().count();
    if (ns_ == 0) ns_ = 1;
    return *this;
  }
  void reset() noexcept { ns_ = 0; }
  explicit operator bool() const noexcept { return ns_ != 0; }
  TimePoint operator*() const noexcept { return TimePoint(TimePoint::duration(ns_)); }

 private:
  std::int64_t ns_ = 0;
};
}  // namespace detail

class Stream {
 public:
  using Millis = std::chrono::milliseconds;
  using Clock = std::chrono::steady_clock;

  // What on_stream_event reports (same meaning as libevent's BEV_EVENT_*).
  enum : short { reading = 0x01, writing = 0x02, eof = 0x10, error = 0x20, timeout = 0x40, connected = 0x80 };

  class Handler {
   public:
    virtual ~Handler() = default;
    // New bytes are in input() (or EOF is about to be reported).
    virtual void on_stream_readable(Stream& s) = 0;
    // A write brought the output down to the drain mark.
    virtual void on_stream_drained(Stream& s) = 0;
    // eof, error, timeout (with reading or writing), or connected.
    virtual void on_stream_event(Stream& s, short what) = 0;
  };

  // Takes ownership of `fd` (non-blocking). `connecting`: a connect() is in
  // progress; completion is reported as `connected` (or an error).
  Stream(event_base* base, int fd, bool connecting);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  void set_handler(Handler* h) noexcept { handler_ = h; }
  int fd() const noexcept { return fd_; }
  // The buffers exist only while in use (see release_idle_resources()).
  // input() moves bytes held in the read area into the evbuffer first.
  evbuffer* input() {
    if (input_flat()) [[unlikely]]
      spill_read_area_or_fail();
    if (!input_) input_ = make_buffer();
    return input_;
  }
  // output() moves bytes held in the write area into the evbuffer first.
  evbuffer* output() {
    if (output_flat()) [[unlikely]]
      spill_write_area_or_fail();
    if (!output_) output_ = make_buffer();
    return output_;
  }
  std::size_t input_length() const noexcept {
    if (input_flat()) return detail::t_read_area.end - detail::t_read_area.begin;
    return input_ ? evbuffer_get_length(input_) : 0;
  }
  // True while the input sits in the worker's read area (only inside this
  // stream's on_stream_readable): input_front() then holds all of it.
  bool input_flat() const noexcept { return detail::t_read_area.owner == static_cast<const void*>(this); }
  // The input's first contiguous bytes (empty when there are none), and
  // dropping n bytes from its front; neither moves the read area's bytes.
  std::string_view input_front() const noexcept;
  void drain_input(std::size_t n) noexcept;
  // Takes n bytes (at most input_length()) off the front of a flat input and
  // points at them, valid until the next read; null when the input is not
  // flat (move them with input() then: whole chains go without a copy).
  const char* take_flat_input(std::size_t n) noexcept;
  std::size_t output_length() const noexcept {
    if (output_flat()) return detail::t_write_area.end - detail::t_write_area.begin;
    return output_ ? evbuffer_get_length(output_) : 0;
  }
  // True while this stream's output sits in the worker's write area.
  bool output_flat() const noexcept { return detail::t_write_area.owner == static_cast<const void*>(this); }
  // Room for `n` more bytes at the end of the output (in the write area when
  // it can be had), to be filled and then committed with the bytes used;
  // nothing else may touch the output in between. Null when out of memory.
  char* reserve_output(std::size_t n);
  void commit_output(char* at, std::size_t used);
  // Appends bytes to the output (in the write area when it can be had).
  void add_output(const char* data, std::size_t n);
  // Frees the buffers that are empty, and the timer when no deadline is
  // armed: an idle keep-alive connection then holds no buffer or timer
  // memory at all (nginx does the same with its buffers).
  void release_idle_resources();
  // True when the loop has no news of the socket: its last read drained it
  // (a short read or EAGAIN) and no read edge was seen since, neither
  // handled (read_ready_) nor waiting in this loop turn's queue of active
  // events. With edge triggering epoll reports every arrival once, so what
  // this misses arrived after that read and was not in an epoll_wait batch
  // handled since: in practice during this loop turn (or, when more sockets
  // were ready than one batch holds, the turn before).
  bool quiet_as_observed() const noexcept {
    // libevent 2.1 has no public "is this event active" query; the flags are
    // in the installed event_struct.h.
    constexpr short queued = EVLIST_ACTIVE | EVLIST_ACTIVE_LATER;
    return fd_ >= 0 && io_ && !read_ready_ && !peer_closed_ && !eof_ && !pending_error_ && input_length() == 0 &&
           (io_->ev_evcallback.evcb_flags & queued) == 0;
  }
  bool is_connecting() const noexcept { return connecting_; }
  bool is_closed() const noexcept { return fd_ < 0; }
  // errno of the last error reported.
  int last_error() const noexcept { return last_error_; }

  // Reading from the socket stops while disabled or while input() holds
  // `input_limit` bytes (one recv never asks for more than the room left);
  // enabling again picks up data that arrived meanwhile.
  static constexpr std::uint32_t kDefaultInputLimit = 256 * 1024;
  void enable_read();
  void disable_read();
  bool reading_enabled() const noexcept { return reading_; }
  void set_input_limit(std::uint32_t bytes) noexcept { input_limit_ = bytes; }
  // on_stream_drained fires when a write leaves at most this many bytes.
  void set_drain_mark(std::uint32_t bytes) noexcept { drain_mark_ = bytes; }
  // Reads again if data may be waiting (after the owner consumed input
  // outside a read callback). Deferred to the loop; never re-enters.
  void kick();

  // Writes what it can of output() now; the rest goes when the socket is
  // writable. Failures are reported through on_stream_event (deferred).
  void flush();

  // nullopt: none. The read timeout counts while reading is enabled and
  // restarts with every read; the write timeout counts while output is
  // pending and restarts with every write (and bounds the connect).
  void set_read_timeout(std::optional<Millis> t);
  void set_write_timeout(std::optional<Millis> t);

  // Closes the socket now and goes inert; buffers stay until destruction.
  void close();
  // Sends FIN (shutdown of the writing side); reading goes on.
  void shutdown_write() noexcept;

  // --- For a splice(2) pump (splice.hpp), which reads or writes the socket
  // itself while the stream keeps its events, timeouts and error reporting ---
  // Raw input: a readiness edge calls on_stream_readable without a recv
  // (input() stays as it is); the pump reads and reports through note_raw_read.
  void set_raw_input(bool on) noexcept { raw_input_ = on; }
  bool read_ready() const noexcept { return read_ready_ && !eof_ && fd_ >= 0; }
  bool write_ready() const noexcept { return write_ready_ && !connecting_ && fd_ >= 0; }
  // Bytes were read around input(): restarts the read timeout. `drained`:
  // EAGAIN or EOF seen, so wait for the next edge.
  void note_raw_read(bool drained);
  // Ends reading as a recv would have: eof (err 0) or error, reported now.
  void report_raw_end(int err);
  // A write around output(): `progress` moved bytes; `blocked` met EAGAIN,
  // so the next writable edge calls on_stream_drained and the send timeout
  // counts meanwhile.
  void note_raw_write(bool progress, bool blocked);
  void end_raw_write() noexcept { raw_write_waiting_ = false; }
  // Reported from the loop, as flush() does.
  void fail_raw_write(int err);

  // --- Parking (parking.hpp): an idle stream may give its event up ---
  // True when the stream could wait without its event: open, connected, its
  // last read drained the socket and no edge of it is pending or queued, no
  // bytes buffered either way, no deadline armed, no splice pump on it.
  bool can_park() const noexcept;
  // Its socket waits in this thread's ParkingLot; any use of the stream that
  // needs the event (flush, a deadline, a kick) takes it back first.
  bool parked() const noexcept { return !io_ && fd_ >= 0; }

 private:
  // An empty evbuffer, from this thread's cache of freed ones when it has
  // one; drop_buffer() gives one back (freed if the cache is full).
  static evbuffer* make_buffer();
  static void drop_buffer(evbuffer* b) noexcept;
  friend class ParkingLot;
  // The io event's storage, from this thread's cache of given-up ones
  // (parking.cpp), and back.
  static event* take_event();
  static void give_event(event* ev) noexcept;
  void register_io(event_base* base);
  // For the ParkingLot: drops the event (the socket is in the lot's set).
  void give_up_io() noexcept;
  // The event, taken back from the lot first when the stream is parked.
  event* io() {
    if (!io_) [[unlikely]]
      leave_lot();
    return io_;
  }
  void leave_lot();
  static void on_io(evutil_socket_t fd, short what, void* arg);
  static void on_timer(evutil_socket_t fd, short what, void* arg);
  void handle_io(short what);
  void do_read();
  // The read area for a read of this stream, or null when it is in use or
  // cannot be had (the read then goes to the evbuffer).
  char* take_read_area() noexcept;
  // Gives `area` up, its bytes moved to the end of `to` (made if need be);
  // false when out of memory (the bytes are lost).
  static bool spill_area(detail::FlatArea& area, evbuffer*& to);
  // Moves what is left in the read area into input_.
  bool spill_read_area();
  // The same from inside a handler: a failure is reported from the loop.
  void spill_read_area_or_fail();
  // The write area with room for n bytes at its end, taken for this stream
  // (from another stream, whose bytes move to its evbuffer) when this
  // stream's output is empty; null when it cannot serve.
  char* write_area_room(std::size_t n);
  // Moves the write area's bytes into output_ and gives the area up.
  bool spill_write_area();
  void spill_write_area_or_fail();
  // Ends the stream with `err` (a failed write, or bytes or a deadline lost
  // for want of memory), reported from the loop, never from inside the
  // owner that is writing.
  void fail_from_loop(int err);
  // Sends what the write area holds: 0 when all of it went (the area is
  // given up), or an errno; what stays is moved into output_.
  int send_write_area(bool& wrote);
  // Writes output() until it is empty or the socket is full; errno on failure.
  int write_out();
  // One send of what output() holds (all of it when the socket takes it):
  // bytes sent (drained from output()) or -1 with errno; `offered` is what
  // the call tried to send.
  ssize_t send_some(std::size_t total, std::size_t& offered);
  // From the loop only: writes, then tells the handler when the output fell
  // to the drain mark. False when the stream failed or was closed meanwhile.
  bool write_and_notify();
  void finish_connect();
  void report(short what);
  void arm_timer();
  void raise_error(short direction, int err);

  // The timer, the deadline it is set for and the stream's two deadlines,
  // made together when a deadline is first set: an idle stream holds none of
  // them, and no deadline exists without its timer.
  struct Timer {
    event ev;
    Clock::time_point at;
    detail::CompactDeadline read_deadline;
    detail::CompactDeadline write_deadline;
  };
  // The timer, made if need be; false when the stream is closed, or when
  // there is no memory for it (the stream then fails, reported from the loop).
  bool ensure_timer();
  detail::CompactDeadline read_deadline() const noexcept { return timer_ ? timer_->read_deadline : detail::CompactDeadline{}; }
  detail::CompactDeadline write_deadline() const noexcept {
    return timer_ ? timer_->write_deadline : detail::CompactDeadline{};
  }
  // Setting a deadline makes the timer (false: it could not be made); the
  // caller arms it when the deadline may be the earliest.
  bool set_read_deadline(Clock::time_point t) {
    if (!ensure_timer()) return false;
    timer_->read_deadline = t;
    return true;
  }
  bool set_write_deadline(Clock::time_point t) {
    if (!ensure_timer()) return false;
    timer_->write_deadline = t;
    return true;
  }
  void clear_read_deadline() noexcept {
    if (timer_) timer_->read_deadline.reset();
  }
  void clear_write_deadline() noexcept {
    if (timer_) timer_->write_deadline.reset();
  }
  void free_timer() noexcept {
    if (!timer_) return;
    event_del(&timer_->ev);
    delete timer_;
    timer_ = nullptr;
    timer_armed_ = false;
  }

  // Laid out without holes (a client connection's Stream is paid once per
  // idle keep-alive connection): pointers, then the 4-byte fields with the flags.
  evbuffer* input_ = nullptr;   // created on first use
  evbuffer* output_ = nullptr;
  // Owned; null only while parked (the stream is open and its socket waits
  // in the lot's epoll set); otherwise added to the loop while open.
  // Held by pointer, not embedded, so that a parked idle connection does
  // not pay its 128 bytes.
  event* io_ = nullptr;
  Timer* timer_ = nullptr;      // created on first use
  Handler* handler_ = nullptr;
  int fd_;
  bool connecting_ : 1 = false;
  bool reading_ : 1 = false;
  bool read_ready_ : 1 = true;      // the socket may have unread bytes (edge seen, not drained)
  bool write_ready_ : 1 = true;     // the socket can take bytes (no EAGAIN since the last edge)
  bool eof_ : 1 = false;
  bool peer_closed_ : 1 = false;    // EPOLLRDHUP seen: read until recv returns 0
  bool timer_armed_ : 1 = false;
  bool pending_error_ : 1 = false;  // a write error waits to be reported from the loop
  bool raw_input_ : 1 = false;      // a splice pump reads the socket (set_raw_input)
  bool raw_write_waiting_ : 1 = false;  // a splice pump waits for a writable edge
  bool bulk_reads_ : 1 = false;     // the last read was large: the next goes to the evbuffer
  std::int16_t last_error_ = 0;  // an errno value; 2 bytes keep the Stream at 64
  std::uint32_t input_limit_ = kDefaultInputLimit;
  std::uint32_t drain_mark_ = 0;
  detail::CompactTimeout read_timeout_;
  detail::CompactTimeout write_timeout_;
};

}  // namespace holdfast
