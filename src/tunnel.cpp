#include "holdfast/tunnel.hpp"


#include <spdlog/spdlog.h>
#include <string.h>

#include "holdfast/client_connection.hpp"
#include "holdfast/loop_clock.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

Tunnel::Tunnel(ClientConnection& client, Stream& client_stream, std::unique_ptr<UpstreamConnection> upstream,
               Millis idle_timeout, TunnelOrigin origin)
    : client_(client),
      worker_(client.worker()),
      upstream_(std::move(upstream)),
      idle_timeout_(idle_timeout),
      origin_(std::move(origin)),
      last_activity_(LoopClock::now()) {
  up_ = {&client_stream, &upstream_->stream(), "client"};
  down_ = {&upstream_->stream(), &client_stream, "backend"};
  upstream_->set_owner(this);
  worker_.stats().add(Counter::tunnels_opened);
  worker_.adjust_tunnels(+1);
}

Tunnel::~Tunnel() { close("shutdown"); }

void Tunnel::start() {
  for (Stream* s : {up_.from, down_.from}) {
    // tunnel_timeout replaces the read timeouts of both legs; the send
    // timeouts stay (a peer that stops reading is still a dead peer).
    s->set_read_timeout(idle_timeout_);
    s->set_drain_mark(kLowWater);
    s->enable_read();
  }
  pump(up_);
  pump(down_);
  up_.from->kick();
  down_.from->kick();
}

void Tunnel::pump(Direction& d) {
  while (!ended_ && d.from->input_length() > 0) {
    if (d.to->output_length() >= kHighWater) {
      d.to->flush();
      if (ended_) return;
      if (d.to->output_length() >= kHighWater) {
        // Backpressure: `from` waits until `to` drains (on_drained).
        if (!d.paused) {
          d.paused = true;
          d.from->disable_read();
        }
        return;
      }
    }
    std::size_t n = d.from->input_length();
    // A small read still in the read area is copied once, into the write
    // area when the other side's output is empty.
    if (const char* data = d.from->take_flat_input(n)) d.to->add_output(data, n);
    else evbuffer_remove_buffer(d.from->input(), d.to->output(), n);
    d.bytes += n;
    last_activity_ = LoopClock::now();
  }
  if (ended_) return;
  d.to->flush();
  if (d.eof && !d.shut && d.to->output_length() == 0) {
    // Everything before the FIN is written: pass the FIN on.
    d.to->shutdown_write();
    d.shut = true;
    if (up_.shut && down_.shut)
      end(first_fin_ && strcmp(first_fin_, "client") == 0 ? End::client : End::backend, "both sides closed");
  }
}

void Tunnel::on_drained(Direction& d) {
  if (ended_) return;
  if (d.paused) {
    d.paused = false;
    d.from->enable_read();
    d.from->kick();
  }
  pump(d);
}

void Tunnel::on_event(Direction& d, short what) {
  if (ended_) return;
  if (what & Stream::timeout) {
    if (what & Stream::writing) {
      // The stream that reported it is `d.from`, and it is that stream's peer that stopped reading.
      end(End::error, d.from == up_.from ? "send timeout to the client" : "send timeout to the backend");
      return;
    }
    // A read timeout on one leg while the other is busy is no idleness.
    auto idle = std::chrono::duration_cast<Millis>(LoopClock::now() - last_activity_);
    if (idle >= idle_timeout_) {
      end(End::idle_timeout, "idle for tunnel_timeout");
      return;
    }
    d.from->set_read_timeout(idle_timeout_ - idle);
    d.from->enable_read();
    return;
  }
  if ((what & Stream::eof) && !(what & Stream::error)) {
    d.eof = true;
    if (!first_fin_) first_fin_ = d.from_name;
    pump(d);
    return;
  }
  int err = d.from->last_error();
  end(End::error, err ? strerror(err) : "connection error");
}

void Tunnel::close(const char* reason) {
  if (ended_) return;
  // The client connection is going away: end without calling back into it.
  ended_ = true;
  end(End::shutdown, reason);
}

void Tunnel::end(End why, const char* detail) {
  bool notify_client = !ended_;
  ended_ = true;
  static constexpr const char* names[] = {"client", "backend", "idle timeout", "error", "shutdown"};
  static constexpr Counter counters[] = {Counter::tunnels_closed_client, Counter::tunnels_closed_backend,
                                         Counter::tunnels_closed_timeout, Counter::tunnels_closed_error,
                                         Counter::tunnels_closed_shutdown};
  auto i = static_cast<std::size_t>(why);
  worker_.stats().add(counters[i]);
  worker_.adjust_tunnels(-1);
  double seconds = std::chrono::duration<double>(LoopClock::now() - origin_.started).count();
  auto peer = client_.peer();
  spdlog::info("conn {} {}: tunnel closed by {} ({}): {} bytes up, {} bytes down, {:.3f} s", client_.id(),
               peer.full(), names[i], detail, up_.bytes, down_.bytes, seconds);
  ExchangeRecord record;
  record.peer = peer.full();
  record.method = origin_.method;
  record.target = origin_.target;
  record.version_major = origin_.version_major;
  record.version_minor = origin_.version_minor;
  record.status = 101;
  record.bytes_in = origin_.request_bytes + up_.bytes;
  record.bytes_out = origin_.response_bytes + down_.bytes;
  record.group = origin_.group;
  record.has_server = true;
  record.server = origin_.server;
  record.reused = origin_.reused;
  record.total = seconds;
  origin_.generation->finish_exchange(record);
  // Never pooled: the pool closes it and keeps its counts right.
  if (upstream_) {
    upstream_->set_owner(nullptr);
    origin_.generation->pool(origin_.group).release(std::move(upstream_), false);
  }
  if (notify_client) client_.on_tunnel_closed();
}

}  // namespace holdfast
