// Stream's flat areas, driven over a real socket pair. The read area: a read
// into an empty input is handed to the handler in place (input_flat), and
// what the handler leaves must stay the stream's input, in order, once the
// callback returns. The write area: output written while the evbuffer is
// empty leaves in one send, and every other way out (output(), a full
// socket, another stream taking the area, close) keeps bytes and order.
#include <doctest/doctest.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "holdfast/stream.hpp"
#include "loop_helpers.hpp"

using namespace holdfast;
using holdfast::test::run_until;
using namespace std::chrono_literals;

namespace {

// What one on_stream_readable call saw, and what the test's step did.
struct Seen {
  bool flat = false;
  std::size_t length = 0;
  std::string front;
};

class Probe final : public Stream::Handler {
 public:
  // Runs for each readable callback, after the view is recorded.
  std::function<void(Stream&)> step;
  std::vector<Seen> seen;
  void on_stream_readable(Stream& s) override {
    seen.push_back({s.input_flat(), s.input_length(), std::string(s.input_front())});
    if (step) step(s);
  }
  void on_stream_drained(Stream&) override {}
  void on_stream_event(Stream&, short) override {}
};

struct Pair {
  int near = -1;  // the Stream's socket
  int far = -1;   // the test writes here
  Pair() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    near = fds[0];
    far = fds[1];
    ::fcntl(near, F_SETFL, ::fcntl(near, F_GETFL) | O_NONBLOCK);
  }
  ~Pair() {
    if (far >= 0) ::close(far);
  }
  void send(const std::string& bytes) const { REQUIRE(::write(far, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size())); }
};

std::string all_input(Stream& s) {
  std::string out(s.input_length(), '\0');
  evbuffer_copyout(s.input(), out.data(), out.size());
  return out;
}

struct Loop {
  event_base* base = event_base_new();
  ~Loop() { event_base_free(base); }
};

// A reading Stream on one end of a socket pair, reporting to a Probe.
struct Rig {
  Loop loop;
  Pair pair;
  Probe probe;
  Stream s{loop.base, pair.near, false};
  Rig() {
    s.set_handler(&probe);
    s.enable_read();
  }
  // Sends `bytes` and runs the loop until the probe has seen `calls` callbacks.
  void send_and_wait(const std::string& bytes, std::size_t calls) {
    pair.send(bytes);
    REQUIRE(run_until(loop.base, [&] { return probe.seen.size() >= calls; }));
  }
};

}  // namespace

TEST_CASE("stream: a small read is parsed in place; what the handler leaves stays the input, in order") {
  Rig rig;
  Stream& s = rig.s;
  auto& seen = rig.probe.seen;
  rig.probe.step = [](Stream& st) {
    if (st.input_flat()) st.drain_input(6);  // takes "hello ", leaves "world"
  };
  rig.send_and_wait("hello world", 1);
  CHECK(seen[0].flat);
  CHECK(seen[0].length == 11);
  CHECK(seen[0].front == "hello world");
  // Back from the callback: the rest is in the evbuffer.
  CHECK_FALSE(s.input_flat());
  CHECK(s.input_length() == 5);
  CHECK(s.input_front() == "world");
  // Bytes already buffered keep their place: the next read goes behind them.
  rig.probe.step = nullptr;
  rig.send_and_wait("!!", 2);
  CHECK_FALSE(seen[1].flat);
  CHECK(seen[1].length == 7);
  CHECK(all_input(s) == "world!!");
  // Consumed to the end outside a callback: the next read is in place again.
  s.drain_input(s.input_length());
  rig.send_and_wait("next", 3);
  CHECK(seen[2].flat);
  CHECK(seen[2].front == "next");
  CHECK(all_input(s) == "next");
}

TEST_CASE("stream: input() inside the callback moves the read area's bytes into the evbuffer") {
  Rig rig;
  std::size_t buffered = 0;
  bool flat_after = true;
  rig.probe.step = [&](Stream& st) {
    st.drain_input(2);
    buffered = evbuffer_get_length(st.input());
    flat_after = st.input_flat();
  };
  rig.send_and_wait("abcdef", 1);
  CHECK(rig.probe.seen[0].flat);
  CHECK(buffered == 4);
  CHECK_FALSE(flat_after);
  CHECK(all_input(rig.s) == "cdef");
}

TEST_CASE("stream: after a bulk read the next read goes to the evbuffer, then in place again") {
  Rig rig;
  auto& seen = rig.probe.seen;
  rig.probe.step = [](Stream& st) { st.drain_input(st.input_length()); };
  const std::string bulk(20 * 1024, 'x');
  rig.pair.send(bulk);
  REQUIRE(run_until(rig.loop.base, [&] {
    std::size_t got = 0;
    for (const auto& v : seen) got += v.length;
    return got >= bulk.size();
  }));
  CHECK(seen.back().length >= 16 * 1024);  // one read took (nearly) all of it
  const std::size_t before = seen.size();
  rig.send_and_wait("small", before + 1);
  CHECK_FALSE(seen.back().flat);
  CHECK(seen.back().front == "small");
  rig.send_and_wait("again", before + 2);
  CHECK(seen.back().flat);
  CHECK(seen.back().front == "again");
  CHECK(rig.s.input_length() == 0);
}

TEST_CASE("stream: a handler that consumes nothing sees old and new bytes in one order") {
  // A head still incomplete: the next read goes behind the bytes left.
  Rig rig;
  rig.send_and_wait("GET / HT", 1);
  CHECK(rig.probe.seen[0].flat);
  rig.send_and_wait("TP/1.1\r\n\r\n", 2);
  CHECK_FALSE(rig.probe.seen[1].flat);
  CHECK(all_input(rig.s) == "GET / HTTP/1.1\r\n\r\n");
}

namespace {
// Reads what the far end has received, waiting up to `budget` for `n` bytes.
std::string receive(Rig& rig, std::size_t n, std::chrono::milliseconds budget = 1000ms) {
  std::string got;
  char buf[65536];
  REQUIRE(run_until(
      rig.loop.base,
      [&] {
        for (;;) {
          ssize_t r = ::recv(rig.pair.far, buf, sizeof buf, MSG_DONTWAIT);
          if (r <= 0) break;
          got.append(buf, static_cast<std::size_t>(r));
        }
        return got.size() >= n;
      },
      budget));
  return got;
}
}  // namespace

TEST_CASE("stream: a small output waits in the write area and leaves in one send") {
  Rig rig;
  Stream& s = rig.s;
  char* head = s.reserve_output(64);
  REQUIRE(head != nullptr);
  std::memcpy(head, "HTTP/1.1 200 OK\r\n\r\n", 19);
  s.commit_output(head, 19);
  s.add_output("body", 4);
  CHECK(s.output_flat());
  CHECK(s.output_length() == 23);
  s.flush();
  CHECK_FALSE(s.output_flat());
  CHECK(s.output_length() == 0);
  CHECK(receive(rig, 23) == "HTTP/1.1 200 OK\r\n\r\nbody");
  // A reservation committed empty gives the area back.
  char* none = s.reserve_output(64);
  REQUIRE(none != nullptr);
  s.commit_output(none, 0);
  CHECK_FALSE(s.output_flat());
  CHECK(s.output_length() == 0);
}

TEST_CASE("stream: writing through output() after the write area keeps the order") {
  Rig rig;
  Stream& s = rig.s;
  s.add_output("head ", 5);
  CHECK(s.output_flat());
  evbuffer_add(s.output(), "body", 4);
  CHECK_FALSE(s.output_flat());
  CHECK(s.output_length() == 9);
  // Bytes in the evbuffer keep the area away: these go behind them.
  s.add_output(" tail", 5);
  CHECK_FALSE(s.output_flat());
  s.flush();
  CHECK(receive(rig, 14) == "head body tail");
}

TEST_CASE("stream: another stream's write takes the area; the first stream's bytes wait in its evbuffer") {
  Rig one;
  Rig two;
  one.s.add_output("first", 5);
  CHECK(one.s.output_flat());
  two.s.add_output("second", 6);
  CHECK(two.s.output_flat());
  CHECK_FALSE(one.s.output_flat());
  CHECK(one.s.output_length() == 5);
  one.s.add_output(" more", 5);
  CHECK(one.s.output_length() == 10);
  two.s.flush();
  one.s.flush();
  CHECK(receive(one, 10) == "first more");
  CHECK(receive(two, 6) == "second");
}

TEST_CASE("stream: what a full socket does not take stays the output, in order, and goes on the write edge") {
  Rig rig;
  Stream& s = rig.s;
  int small = 4096;
  REQUIRE(::setsockopt(rig.pair.near, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
  // Larger than the socket takes at once, and distinct bytes to check the order.
  std::string sent;
  for (int i = 0; sent.size() < 15000; ++i) sent += std::to_string(i) + ",";
  s.add_output(sent.data(), sent.size());
  CHECK(s.output_flat());
  s.flush();
  CHECK_FALSE(s.output_flat());  // what is left moved to the evbuffer
  CHECK(s.output_length() > 0);
  CHECK(s.output_length() < sent.size());
  // The rest goes as the far end reads, on the socket's write edges.
  CHECK(receive(rig, sent.size()) == sent);
  CHECK(s.output_length() == 0);
}

TEST_CASE("stream: closing a stream with bytes in the write area keeps them counted as unsent") {
  Rig rig;
  rig.s.add_output("unsent", 6);
  REQUIRE(rig.s.output_flat());
  rig.s.close();
  CHECK_FALSE(rig.s.output_flat());
  CHECK(rig.s.output_length() == 6);
}
