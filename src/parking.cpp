#include "holdfast/parking.hpp"

#include <event2/event_struct.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cassert>
#include <new>

#include "holdfast/spare_stack.hpp"
#include "holdfast/stats.hpp"
#include "holdfast/stream.hpp"

namespace holdfast {

namespace {
thread_local ParkingLot* t_lot = nullptr;

// Events given up by parked or closed streams, kept for the next stream on
// this thread: a connection that parks and wakes allocates nothing, and
// during a burst of new connections the events of those that park are
// reused by those that arrive. Enough for the difference between the two
// rates, no more: every spare is paid for as long as the worker lives (1024
// of them cost 16 bytes per idle connection in the benchmark's 9,000).
void free_event(event* ev) { ::operator delete(ev); }
thread_local SpareStack<event, 128, free_event> t_events;

constexpr int kBatch = 64;
}  // namespace

event* Stream::take_event() {
  event* ev = t_events.take();
  return ev ? ev : static_cast<event*>(::operator new(sizeof(event)));
}

void Stream::give_event(event* ev) noexcept { t_events.give(ev); }

bool Stream::can_park() const noexcept {
  constexpr short queued = EVLIST_ACTIVE | EVLIST_ACTIVE_LATER;
  return fd_ >= 0 && io_ && !connecting_ && !read_ready_ && !eof_ && !peer_closed_ && !pending_error_ &&
         !raw_input_ && !raw_write_waiting_ && !timer_armed_ && input_length() == 0 && output_length() == 0 &&
         (io_->ev_evcallback.evcb_flags & queued) == 0;
}

void Stream::give_up_io() noexcept {
  event_del(io_);
  give_event(io_);
  io_ = nullptr;
  free_timer();
}

void Stream::leave_lot() {
  // Only a parked stream lacks its event, and only a worker's thread parks.
  assert(fd_ >= 0 && t_lot);
  t_lot->unpark(*this);
}

ParkingLot::ParkingLot(event_base* base, Stats& stats) : base_(base), stats_(stats) {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) return;
  // Level-triggered: a batch left unread is reported again on the next turn.
  watch_ = event_new(base_, epfd_, EV_READ | EV_PERSIST, &ParkingLot::on_ready, this);
  event_add(watch_, nullptr);
}

ParkingLot::~ParkingLot() {
  // The worker closes its connections first; nothing is parked here now.
  assert(parked_ == 0);
  if (t_lot == this) t_lot = nullptr;
  if (watch_) event_free(watch_);
  if (epfd_ >= 0) ::close(epfd_);
}

void ParkingLot::bind_to_thread() noexcept { t_lot = this; }

ParkingLot* ParkingLot::current() noexcept { return t_lot; }

bool ParkingLot::park(Stream& s) noexcept {
  if (epfd_ < 0 || !s.can_park()) return false;
  // Registered here before the event goes: bytes that came since the last
  // read are reported by this registration (epoll_ctl ADD checks readiness).
  epoll_event e{};
  e.events = EPOLLIN | EPOLLRDHUP;
  e.data.ptr = &s;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, s.fd(), &e) < 0) return false;
  s.give_up_io();
  ++parked_;
  publish();
  return true;
}

void ParkingLot::unpark(Stream& s) {
  ::epoll_ctl(epfd_, EPOLL_CTL_DEL, s.fd(), nullptr);
  --parked_;
  publish();
  // The socket's readiness, if any, is reported by the new registration (an
  // edge-triggered ADD reports what is already there), and read from the
  // loop as any other edge.
  s.register_io(base_);
}

void ParkingLot::forget(Stream&) noexcept {
  assert(t_lot && t_lot->parked_ > 0);
  --t_lot->parked_;
  t_lot->publish();
}

void ParkingLot::on_ready(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<ParkingLot*>(arg);
  epoll_event ready[kBatch];
  // Only events are made here, no callback runs: no stream in the batch can
  // be closed or freed before its turn comes.
  int n = ::epoll_wait(self->epfd_, ready, kBatch, 0);
  for (int i = 0; i < n; ++i) self->unpark(*static_cast<Stream*>(ready[i].data.ptr));
}

void ParkingLot::publish() noexcept { stats_.set(0, Gauge::client_parked, static_cast<std::int64_t>(parked_)); }

}  // namespace holdfast
