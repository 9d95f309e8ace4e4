// ClientConnection's endings: each timeout named for what it is, the
// client's half-close, draining, and the close itself, with a lingering
// read after an answer to a client that may still be sending.
#include <spdlog/spdlog.h>

#include "holdfast/client_connection.hpp"
#include "holdfast/exchange.hpp"
#include "holdfast/loop_clock.hpp"
#include "holdfast/tunnel.hpp"
#include "holdfast/worker.hpp"

namespace holdfast {

void ClientConnection::close_after_output(bool linger) {
  worker_.unmark_idle(this);
  state_ = State::closing;
  linger_ = linger && !input_closed_;
  // Nothing more is parsed; what is already buffered is discarded.
  stream_.drain_input(stream_.input_length());
  stream_.set_read_timeout(std::nullopt);
  stream_.flush();
  if (stream_.output_length() == 0) {
    start_lingering();
    return;
  }
  // Be told when the output is empty, not merely below the low mark.
  stream_.set_drain_mark(0);
}

void ClientConnection::start_lingering() {
  if (!linger_) {
    close_now();
    return;
  }
  state_ = State::lingering;
  stream_.shutdown_write();
  deadline_ = LoopClock::now() + kLingerTime;
  ending().lingered = 0;
  stream_.set_read_timeout(kLingerReadTimeout);
  if (reading_paused_) reading_paused_ = false;
  stream_.enable_read();
  stream_.kick();
}

void ClientConnection::on_timeout(bool reading) {
  // Each timeout names itself: a client that does not read its answers is
  // not one whose head is late.
  switch (state_) {
    case State::reading_head:
      if (reading) {
        spdlog::info("conn {} {}: request head not received within header_timeout", id_, peer().full());
        reject(ProxyError::request_timeout, nullptr);
        return;
      }
      break;
    case State::exchanging:
      if (reading && exchange_ && !exchange_->response_started()) {
        // Answered 408; the connection closes once that is written.
        exchange_->on_client_body_timeout();
        return;
      }
      if (reading) {
        if (exchange_) exchange_->on_client_gone("body timeout");
        close_now();
        return;
      }
      if (exchange_) exchange_->on_client_gone("send timeout");
      break;
    case State::lingering:
      close_now();
      return;
    case State::discarding:
      if (reading) {
        spdlog::info("conn {} {}: rest of the request body not received while discarding it", id_, peer().full());
        close_now();
        return;
      }
      break;
    default:
      break;
  }
  spdlog::info("conn {} {}: client send timeout: the client does not read its responses", id_, peer().full());
  close_now();
}

void ClientConnection::on_input_closed() {
  input_closed_ = true;
  switch (state_) {
    case State::idle:
      // Pipelined requests that came with the FIN are still answered; the
      // last response still goes out in full.
      if (stream_.input_length() > 0) parse_requests();
      else close_after_output(false);
      return;
    case State::reading_head:
      close_after_output(false);
      return;
    case State::discarding:  // the body was cut short: nothing more to answer
      close_now();
      return;
    case State::exchanging:
      // A half-close after a complete request still gets its response
      // (RFC 9112 9.6); only a request cut short is abandoned.
      if (exchange_ && exchange_->request_complete()) return;
      if (exchange_) exchange_->on_client_gone("closed");
      close_now();
      return;
    case State::closing:
      linger_ = false;
      if (stream_.output_length() == 0) close_now();
      return;
    case State::tunnel:  // the tunnel hears of it first (on_stream_event)
    case State::lingering:
    case State::closed:
      close_now();
      return;
  }
}

void ClientConnection::drain() {
  if (state_ == State::idle && stream_.input_length() > 0) parse_requests();
  // A request already in the socket buffer is read and answered (with
  // Connection: close) before the worker's drain grace closes the idle ones.
  stream_.kick();
}

void ClientConnection::close_idle(bool gracefully) {
  if (state_ != State::idle) return;
  if (!gracefully) {
    close_now();
    return;
  }
  close_after_output(true);
}

ClientConnection::Ending& ClientConnection::ending() {
  if (!ending_) ending_ = std::make_unique<Ending>();
  return *ending_;
}

void ClientConnection::close_now() {
  if (state_ == State::closed) return;
  state_ = State::closed;
  if (tunnel_) {
    tunnel_->close("client connection closed");
    worker_.defer_delete(std::move(tunnel_));
  }
  if (exchange_) {
    exchange_->on_client_gone("closed");
    worker_.defer_delete(std::move(exchange_));
  }
  stream_.close();
  worker_.remove_client(this);
}

}  // namespace holdfast
