#include "holdfast/worker.hpp"

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cassert>
#include <chrono>
#include <thread>

#include "holdfast/client_connection.hpp"
#include "holdfast/loop_clock.hpp"
#include "holdfast/parking.hpp"

namespace holdfast {

Worker::Worker(SharedState& shared, unsigned index, std::shared_ptr<const ConfigVersion> version,
               std::vector<ListenSocket> listeners)
    : shared_(shared), index_(index), stats_(kMaxSlots) {
  // Each base is used by its own thread only, so libevent runs without locks;
  // the cross-thread messages (drain, a new version) arrive through an eventfd.
  event_config* cfg = event_config_new();
  event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
  event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  base_ = event_base_new_with_config(cfg);
  event_config_free(cfg);
  drain_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  current_ = std::make_shared<Generation>(*this, std::move(version), nullptr);
  stats_.set(0, Gauge::config_version, static_cast<std::int64_t>(current_->version().id));
  for (auto& l : listeners)
    listeners_.emplace_back(l.key, std::make_unique<Listener>(base_, l.fd, [this](int cfd, const sockaddr* a, int n) {
                              on_accept(cfd, a, n);
                            }));
  reap_event_ = event_new(base_, -1, 0, &Worker::on_reap, this);
  drain_request_event_ = event_new(base_, drain_fd_, EV_READ | EV_PERSIST, &Worker::on_drain_request, this);
  event_add(drain_request_event_, nullptr);
  drain_deadline_event_ = evtimer_new(base_, &Worker::on_drain_deadline, this);
  idle_timer_ = evtimer_new(base_, &Worker::on_idle_timer, this);
  park_timer_ = evtimer_new(base_, &Worker::on_park_timer, this);
  trim_timer_ = evtimer_new(base_, &Worker::on_trim_timer, this);
  lot_ = std::make_unique<ParkingLot>(base_, stats_);
  resume_event_ = event_new(base_, -1, 0, &Worker::on_resume, this);
}

Worker::~Worker() {
  listeners_.clear();
  // Client connections first (they may hand upstream connections back to the
  // pools), then whatever they retired, then the pools.
  close_all_clients();
  retired_.clear();
  current_->close_idle();
  retired_.clear();
  current_.reset();
  retired_.clear();
  // Updates never taken hold sockets of their own.
  for (auto& u : updates_)
    for (auto& l : u.add) ::close(l.fd);
  event_free(reap_event_);
  event_free(drain_request_event_);
  event_free(drain_deadline_event_);
  event_free(idle_timer_);
  event_free(park_timer_);
  event_free(trim_timer_);
  lot_.reset();  // before its base goes; no connection is parked any more
  event_free(resume_event_);
  event_base_free(base_);
  ::close(drain_fd_);
}

void Worker::start() {
  thread_ = std::thread([this] { run(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::run() {
  running_.store(true, std::memory_order_relaxed);
  lot_->bind_to_thread();
  LoopClock::set_turn_end_work(&Worker::finish_turn, this);
  // The loop returns -1 when epoll_wait fails with anything but EINTR (a debugger's attach can
  // leak a restart code); that is no reason to drop every client, so it is entered again. It
  // ends for good only when the worker asked it to (loopexit on drain, loopbreak on stop).
  while (event_base_dispatch(base_) < 0 && !event_base_got_exit(base_) && !event_base_got_break(base_)) {
    spdlog::warn("worker {}: event loop failed, resuming", index_);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // no busy spin if it persists
  }
  running_.store(false, std::memory_order_relaxed);
  LoopClock::set_turn_end_work(nullptr, nullptr);
  // Whatever is still open when the loop ends (drain timeout) is closed here,
  // on the worker's own thread. reap(), not clear(): a deletion may retire
  // more objects while the list is being emptied.
  close_all_clients();
  reap();
  current_->close_idle();
  reap();
}

void Worker::request_drain() {
  drain_requested_.store(true, std::memory_order_relaxed);
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(drain_fd_, &one, sizeof one);
}

void Worker::post_update(WorkerUpdate update) {
  {
    std::lock_guard<std::mutex> lock(updates_mutex_);
    updates_.push_back(std::move(update));
  }
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(drain_fd_, &one, sizeof one);
}

void Worker::on_drain_request(evutil_socket_t fd, short, void* arg) {
  std::uint64_t value;
  [[maybe_unused]] auto n = ::read(fd, &value, sizeof value);
  auto* self = static_cast<Worker*>(arg);
  self->apply_updates();
  if (self->drain_requested_.load(std::memory_order_relaxed)) self->begin_drain();
}

ReloadAnnouncement::~ReloadAnnouncement() { spdlog::info("reload: version {} active ({})", version, cause); }

void Worker::apply_updates() {
  std::vector<WorkerUpdate> taken;
  {
    std::lock_guard<std::mutex> lock(updates_mutex_);
    taken.swap(updates_);
  }
  for (auto& u : taken) {
    for (auto slot : u.fresh_slots) stats_.clear_slot(slot);
    // Removed listeners stop accepting; connections they accepted stay.
    for (const auto& key : u.remove)
      for (auto it = listeners_.begin(); it != listeners_.end(); ++it)
        if (it->first == key) {
          // What the kernel already accepted is served, not reset.
          it->second->accept_pending();
          listeners_.erase(it);
          break;
        }
    for (auto& l : u.add) {
      if (draining_) {
        ::close(l.fd);
        continue;
      }
      listeners_.emplace_back(l.key, std::make_unique<Listener>(base_, l.fd, [this](int cfd, const sockaddr* a, int n) {
                                on_accept(cfd, a, n);
                              }));
    }
    // The new generation adopts the servers both versions have; the old one
    // lives on in the exchanges that started on it, and its other servers drain.
    auto next = std::make_shared<Generation>(*this, std::move(u.version), current_.get());
    current_->drain_unadopted();
    current_ = std::move(next);
    stats_.set(0, Gauge::config_version, static_cast<std::int64_t>(current_->version().id));
    // Idle keep-alive clients may wait longer or shorter now.
    if (idle_timer_armed_) event_del(idle_timer_);
    arm_idle_timer();
  }
}

void Worker::begin_drain() {
  if (draining_) return;
  draining_ = true;
  event_del(drain_request_event_);
  // Connections already in the accept queue may carry a request: take them
  // (they are answered with Connection: close) before the socket closes.
  for (auto& l : listeners_) {
    l.second->accept_pending();
    l.second->stop();
  }
  add_timer(drain_deadline_event_, config().drain_timeout);
  // Active ones first: drain() may make an idle one active, never the reverse,
  // so each is told once.
  for (auto* list : {&active_, &resume_, &idle_}) list->for_each([](ClientConnection* c) { c->drain(); });
  // Idle connections now close after the drain grace instead of
  // keepalive_timeout, counted from the drain: each gets the full grace.
  auto now = clock_ms(LoopClock::now());
  idle_.for_each([now](ClientConnection* c) { c->idle_since_ms = now; });
  if (idle_timer_armed_) event_del(idle_timer_);
  arm_idle_timer();
  current_->close_idle();
  maybe_finish_drain();
}

void Worker::maybe_finish_drain() {
  if (draining_ && client_count() == 0) event_base_loopexit(base_, nullptr);
}

void Worker::on_drain_deadline(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  spdlog::warn("worker {}: drain_timeout reached with {} connection(s) still open; closing them", self->index_,
               self->client_count());
  event_base_loopbreak(self->base_);
}

void Worker::on_accept(int fd, const sockaddr* addr, int len) {
  auto conn = std::make_unique<ClientConnection>(*this, fd, addr, len);
  auto* raw = conn.get();
  add_client(std::move(conn));
  raw->start();
}

void Worker::add_client(std::unique_ptr<ClientConnection> conn) {
  move_to(conn.release(), ClientConnection::ClientList::active);
  publish_client_gauges();
}

void Worker::publish_client_gauges() noexcept {
  auto idle = static_cast<std::int64_t>(idle_.size());
  stats_.set(0, Gauge::client_idle, idle);
  auto active = client_count() - idle_.size();
  stats_.set(0, Gauge::client_active, static_cast<std::int64_t>(active));
  if (trim_policy_.note_active(busy_clients())) add_timer(trim_timer_, HeapTrimPolicy::kQuiet);
}

void Worker::on_trim_timer(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  auto now = LoopClock::now();
  auto wait = self->trim_policy_.check(self->busy_clients(), now);
  if (!wait) return;
  if (wait->count() > 0) {
    add_timer(self->trim_timer_, *wait);
    return;
  }
  spdlog::debug("worker {}: returning free heap pages after a burst of {} active connections", self->index_,
                self->trim_policy_.peak());
  trim_heap();
  self->trim_policy_.trimmed(now);
}

void Worker::close_all_clients() {
  for (auto* list : {&active_, &resume_, &idle_})
    list->for_each([this](ClientConnection* c) {
      move_to(c, ClientConnection::ClientList::none);
      delete c;
    });
  publish_client_gauges();
}

void Worker::move_to(ClientConnection* conn, ClientConnection::ClientList to) noexcept {
  using L = ClientConnection::ClientList;
  auto list = [this](L l) -> ClientLists* {
    return l == L::active ? &active_ : l == L::idle ? &idle_ : l == L::resume ? &resume_ : nullptr;
  };
  if (conn == park_cursor_) park_cursor_ = conn->list_link.next;  // the cursor stays in idle_
  if (auto* from = list(conn->listed_in)) from->remove(conn);
  if (auto* into = list(to)) into->push_back(conn);
  conn->listed_in = to;
}

void Worker::mark_idle(ClientConnection* conn) {
  // Never waiting for a resume here: a connection is posted for one only
  // while exchanging, and taken off the resume list before it is idle again.
  assert(conn->listed_in != ClientConnection::ClientList::resume);
  if (conn->listed_in == ClientConnection::ClientList::none) return;  // closed meanwhile
  conn->idle_since_ms = clock_ms(LoopClock::now());
  move_to(conn, ClientConnection::ClientList::idle);
  publish_client_gauges();
  if (!idle_timer_armed_) arm_idle_timer();
  if (!park_cursor_) park_cursor_ = conn;
  if (!park_timer_armed_) arm_park_timer();
}

void Worker::arm_park_timer() {
  park_timer_armed_ = false;
  if (!park_cursor_) return;
  // A little later than the first one is due, so that one pass parks a batch.
  auto wait = ParkingLot::kParkAfter - idle_for(park_cursor_, clock_ms(LoopClock::now())) + std::chrono::milliseconds(20);
  add_timer(park_timer_, wait);
  park_timer_armed_ = true;
}

void Worker::on_park_timer(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  self->park_timer_armed_ = false;
  auto now = clock_ms(LoopClock::now());
  // A connection that cannot park now (bytes pending, an edge queued) is
  // about to be busy; it is tried again the next time it becomes idle.
  while (self->park_cursor_ && idle_for(self->park_cursor_, now) >= ParkingLot::kParkAfter) {
    auto* c = self->park_cursor_;
    self->park_cursor_ = c->list_link.next;
    self->lot_->park(c->stream());
  }
  self->arm_park_timer();
}

std::chrono::milliseconds Worker::idle_limit() const noexcept {
  // While draining, a keep-alive client gets a short grace to send the
  // request it may be about to send (answered with Connection: close), then
  // a half-close; a busy client thus loses no request to the drain.
  // Otherwise the advertised timeout plus a grace: a client that honours
  // Keep-Alive: timeout=N stops reusing the connection at N, before holdfast
  // closes it, so the two never cross.
  const auto& cl = config().client;
  return draining_ ? std::min(cl.keepalive_timeout.value, kDrainIdleGrace) : cl.keepalive_timeout.value + cl.keepalive_grace;
}

void Worker::add_timer(event* timer, std::chrono::milliseconds after) noexcept {
  timeval tv = to_timeval(after);
  event_add(timer, &tv);
}

void Worker::arm_idle_timer() {
  idle_timer_armed_ = false;
  if (idle_.empty()) return;
  add_timer(idle_timer_, idle_limit() - idle_for(idle_.front(), clock_ms(LoopClock::now())));
  idle_timer_armed_ = true;
}

void Worker::on_idle_timer(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  self->idle_timer_armed_ = false;
  auto now = clock_ms(LoopClock::now());
  auto timeout = self->idle_limit();
  // keepalive_timeout: the ordinary end of an idle connection.
  while (!self->idle_.empty() && idle_for(self->idle_.front(), now) >= timeout) {
    auto* c = self->idle_.front();
    self->move_to(c, ClientConnection::ClientList::active);
    c->close_idle(self->draining_);
  }
  self->arm_idle_timer();
}

void Worker::post_resume(ClientConnection* conn) {
  // Only an active connection has an exchange to finish; a closed one
  // (none) is not the worker's any more.
  if (conn->listed_in == ClientConnection::ClientList::active) move_to(conn, ClientConnection::ClientList::resume);
  if (!LoopClock::turn_end_pending()) event_active(resume_event_, EV_READ, 0);
}

void Worker::on_resume(evutil_socket_t, short, void* arg) {
  LoopClock::Turn turn;
  static_cast<Worker*>(arg)->run_resumes();
}

void Worker::run_resumes() {
  while (!resume_.empty()) {
    auto* c = resume_.front();
    move_to(c, ClientConnection::ClientList::active);
    c->resume_after_exchange();
  }
}

void Worker::finish_turn(void* arg) noexcept {
  // In the order the events used to run them: what the callback retired is
  // deleted before a resumed connection starts its next exchange. Either
  // may leave more of the other.
  auto* self = static_cast<Worker*>(arg);
  while (!self->retired_.empty() || !self->resume_.empty()) {
    self->reap();
    self->run_resumes();
  }
}

void Worker::remove_client(ClientConnection* conn) {
  if (conn->listed_in != ClientConnection::ClientList::none) {
    move_to(conn, ClientConnection::ClientList::none);
    defer_delete(std::unique_ptr<ClientConnection>(conn));
  }
  publish_client_gauges();
  maybe_finish_drain();
}

void Worker::schedule_reaper() {
  if (LoopClock::turn_end_pending()) return;
  if (!reap_scheduled_) {
    reap_scheduled_ = true;
    event_active(reap_event_, EV_READ, 0);
  }
}

void Worker::on_reap(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  self->reap_scheduled_ = false;
  self->reap();
}

void Worker::reap() {
  // Deleting may retire more objects (an exchange hands back its upstream
  // connection): loop until nothing is left.
  // The two lists trade places, so neither gives its capacity back: no
  // allocation per turn.
  while (!retired_.empty()) {
    reaping_.swap(retired_);
    reaping_.clear();
  }
}

}  // namespace holdfast
