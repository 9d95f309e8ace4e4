#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "holdfast/http1_encode.hpp"
#include "holdfast/http_message.hpp"

using namespace holdfast;

namespace {
struct Collect : BodySink {
  std::string body;
  HeaderList trailers;
  void on_body_data(const char* d, std::size_t n) override { body.append(d, n); }
  void on_trailers(HeaderList&& t) override { trailers = std::move(t); }
};

HttpParser::Result feed(HttpParser& p, const std::string& s) { return p.feed(s.data(), s.size()); }
}  // namespace

TEST_CASE("a request head stops the parser at its end") {
  HttpParser p(HttpParser::Kind::request, 16384);
  std::string req = "POST /x?y=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a:  2 \r\nContent-Length: 5\r\n\r\nhelloGET";
  auto r = feed(p, req);
  CHECK(r.event == HttpParser::Event::head_complete);
  CHECK(r.consumed == req.size() - 8);
  CHECK(p.head().method == "POST");
  CHECK(p.head().target == "/x?y=1");
  REQUIRE(p.head().headers.size() == 4);
  CHECK(p.head().headers[2].name == "x-a");
  CHECK(p.head().headers[2].value == "2");
  CHECK(p.head().has_content_length);
  CHECK(p.head().content_length == 5);
}

TEST_CASE("a parser given back mid-message is taken again ready, under its new limit") {
  auto p = HttpParser::take(HttpParser::Kind::request, 16384);
  REQUIRE(feed(*p, "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").event ==
          HttpParser::Event::head_complete);
  Collect sink;
  p->resume_chunked_body(&sink);
  REQUIRE(feed(*p, "5\r\nhel").event == HttpParser::Event::need_more);
  HttpParser::give_back(std::move(p));
  // Whether or not it is the same object, it starts a new message, with no
  // sink, under the limit it was taken with.
  auto q = HttpParser::take(HttpParser::Kind::request, 64);
  auto r = feed(*q, "GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
  REQUIRE(r.event == HttpParser::Event::head_complete);
  CHECK(q->head().target == "/b");
  CHECK(q->head().headers.size() == 1);
  q->reset();
  auto big = feed(*q, "GET /c HTTP/1.1\r\nHost: h\r\nX-Long: " + std::string(100, 'x') + "\r\n\r\n");
  CHECK(big.event == HttpParser::Event::error);
  CHECK(q->failure() == HttpParser::Failure::head_too_large);
  HttpParser::give_back(std::move(q));
  // A response parser is never handed out for a request.
  auto resp = HttpParser::take(HttpParser::Kind::response, 16384);
  CHECK(feed(*resp, "HTTP/1.1 204 No Content\r\n\r\n").event == HttpParser::Event::head_complete);
  HttpParser::give_back(std::move(resp));
  CHECK(sink.body == "hel");
}

TEST_CASE("a head split across many feeds") {
  HttpParser p(HttpParser::Kind::request, 16384);
  std::string req = "GET / HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n";
  HttpParser::Result r;
  for (char c : req) {
    r = p.feed(&c, 1);
    if (r.event != HttpParser::Event::need_more) break;
  }
  CHECK(r.event == HttpParser::Event::head_complete);
  CHECK(p.head().headers.size() == 2);
  CHECK(p.head().headers[0].value == "example");
}

TEST_CASE("chunked bodies are decoded with extensions and trailers") {
  HttpParser p(HttpParser::Kind::request, 16384);
  std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  std::string body = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 9\r\n\r\nNEXT";
  auto r = feed(p, head);
  REQUIRE(r.event == HttpParser::Event::head_complete);
  CHECK(p.head().chunked);
  Collect sink;
  p.resume_chunked_body(&sink);
  r = feed(p, body);
  CHECK(r.event == HttpParser::Event::message_complete);
  CHECK(r.consumed == body.size() - 4);
  CHECK(sink.body == "hello world");
  REQUIRE(sink.trailers.size() == 1);
  CHECK(sink.trailers[0].name == "X-Sum");
}

TEST_CASE("whitespace around values is removed in heads and trailer sections, however they are cut") {
  std::string head = "POST / HTTP/1.1\r\nHost: h \t\r\nX-A:\t a b  \r\nX-E:  \r\nTransfer-Encoding: chunked\r\n\r\n";
  std::string body = "1\r\nx\r\n0\r\nX-Sum:  9 \t\r\nX-E: \r\nX-Last:z\r\n\r\n";
  for (std::size_t step : {std::size_t{1}, std::size_t{3}, head.size() + body.size()}) {
    CAPTURE(step);
    HttpParser p(HttpParser::Kind::request, 16384);
    std::string all = head + body;
    HttpParser::Result r;
    std::size_t at = 0;
    for (; at < head.size(); at += r.consumed) {
      r = p.feed(all.data() + at, std::min(step, all.size() - at));
      if (r.event == HttpParser::Event::head_complete) {
        at += r.consumed;
        break;
      }
      REQUIRE(r.event == HttpParser::Event::need_more);
    }
    REQUIRE(r.event == HttpParser::Event::head_complete);
    REQUIRE(at == head.size());
    const auto& h = p.head().headers;
    REQUIRE(h.size() == 4);
    CHECK(h[0].value == "h");
    CHECK(h[1].value == "a b");
    CHECK(h[2].value.empty());
    Collect sink;
    p.resume_chunked_body(&sink);
    while (at < all.size()) {
      r = p.feed(all.data() + at, std::min(step, all.size() - at));
      at += r.consumed;
      if (r.event == HttpParser::Event::message_complete) break;
      REQUIRE(r.event == HttpParser::Event::need_more);
    }
    CHECK(r.event == HttpParser::Event::message_complete);
    REQUIRE(sink.trailers.size() == 3);
    CHECK(sink.trailers[0].value == "9");
    CHECK(sink.trailers[1].value.empty());
    CHECK(sink.trailers[2].value == "z");
  }
}

TEST_CASE("strict parsing refuses smuggling shapes") {
  const char* bad[] = {
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n",
      "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\x01x\r\n\r\n",
      "GARBAGE\r\n\r\n",
  };
  for (const char* b : bad) {
    HttpParser p(HttpParser::Kind::request, 16384);
    auto r = feed(p, b);
    std::string shown(b);
    CAPTURE(shown);
    CHECK(r.event == HttpParser::Event::error);
    CHECK(p.failure() == HttpParser::Failure::bad_message);
  }
}

TEST_CASE("bad chunk size is an error") {
  HttpParser p(HttpParser::Kind::request, 16384);
  REQUIRE(feed(p, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").event ==
          HttpParser::Event::head_complete);
  Collect sink;
  p.resume_chunked_body(&sink);
  CHECK(feed(p, "zz\r\nhello\r\n").event == HttpParser::Event::error);
}

TEST_CASE("heads over the limit: 431, or 414 while still in the target") {
  HttpParser p(HttpParser::Kind::request, 1024);
  std::string big = "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n";
  CHECK(feed(p, big).event == HttpParser::Event::error);
  CHECK(p.failure() == HttpParser::Failure::head_too_large);
  HttpParser q(HttpParser::Kind::request, 1024);
  std::string longurl = "GET /" + std::string(2000, 'a') + " HTTP/1.1\r\n\r\n";
  CHECK(feed(q, longurl).event == HttpParser::Event::error);
  CHECK(q.failure() == HttpParser::Failure::uri_too_long);
}

TEST_CASE("responses: status, reason and keep-alive reading") {
  HttpParser p(HttpParser::Kind::response, 16384);
  auto r = feed(p, "HTTP/1.1 404 Not Here\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
  CHECK(r.event == HttpParser::Event::head_complete);
  CHECK(p.head().status == 404);
  CHECK(p.head().reason == "Not Here");
  CHECK_FALSE(p.head().keep_alive);
  p.reset();
  r = feed(p, "HTTP/1.0 200 OK\r\n\r\n");
  CHECK(r.event == HttpParser::Event::head_complete);
  CHECK_FALSE(p.head().keep_alive);
  CHECK_FALSE(p.head().has_content_length);
}

namespace {
// Feeds a chunked message body (after its head) in pieces of `piece` bytes;
// returns the last event.
HttpParser::Event feed_body(HttpParser& p, const std::string& body, std::size_t piece) {
  HttpParser::Event last = HttpParser::Event::need_more;
  for (std::size_t at = 0; at < body.size();) {
    auto r = p.feed(body.data() + at, std::min(piece, body.size() - at));
    last = r.event;
    if (r.event != HttpParser::Event::need_more) break;
    at += r.consumed;
  }
  return last;
}

std::string trailer_lines(std::size_t bytes) {
  std::string out;
  for (int i = 0; out.size() < bytes; ++i) out += "X-T" + std::to_string(i) + ": " + std::string(40, 'v') + "\r\n";
  return out;
}
}  // namespace

TEST_CASE("the trailer section is bounded by the head limit") {
  for (auto kind : {HttpParser::Kind::request, HttpParser::Kind::response}) {
    for (std::size_t piece : {std::size_t(1), std::size_t(7), std::size_t(1 << 20)}) {
      CAPTURE(piece);
      HttpParser p(kind, 1024);
      std::string head = kind == HttpParser::Kind::request
                             ? "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                             : "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
      REQUIRE(feed(p, head).event == HttpParser::Event::head_complete);
      Collect sink;
      p.resume_chunked_body(&sink);
      // Body bytes before the last chunk do not count against the limit.
      std::string body = "800\r\n" + std::string(2048, 'b') + "\r\n0\r\n" + trailer_lines(4096);
      CHECK(feed_body(p, body, piece) == HttpParser::Event::error);
      CHECK(p.failure() == HttpParser::Failure::head_too_large);
      CHECK(sink.body.size() == 2048);
      CHECK(sink.trailers.empty());
    }
  }
}

TEST_CASE("a trailer section within the limit passes, even after a large body") {
  HttpParser p(HttpParser::Kind::request, 1024);
  REQUIRE(feed(p, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").event ==
          HttpParser::Event::head_complete);
  Collect sink;
  p.resume_chunked_body(&sink);
  std::string trailers = trailer_lines(900);
  std::string body = "1000\r\n" + std::string(4096, 'b') + "\r\n0\r\n" + trailers + "\r\nNEXT";
  auto r = feed(p, body);
  CHECK(r.event == HttpParser::Event::message_complete);
  CHECK(r.consumed == body.size() - 4);
  CHECK(sink.body.size() == 4096);
  CHECK(sink.trailers.size() > 10);
}

TEST_CASE("a transfer coding list naming chunked more than once is refused") {
  const char* lists[] = {
      "Transfer-Encoding: chunked, chunked\r\n",
      "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
      "Transfer-Encoding: chunked;x=1, chunked\r\n",
      "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip, Chunked\r\n",
  };
  for (const char* te : lists) {
    std::string shown(te);
    CAPTURE(shown);
    HttpParser req(HttpParser::Kind::request, 16384);
    CHECK(feed(req, std::string("POST / HTTP/1.1\r\nHost: h\r\n") + te + "\r\n").event == HttpParser::Event::error);
    CHECK(req.failure() == HttpParser::Failure::bad_message);
    HttpParser resp(HttpParser::Kind::response, 16384);
    CHECK(feed(resp, std::string("HTTP/1.1 200 OK\r\n") + te + "\r\n").event == HttpParser::Event::error);
  }
  HttpParser ok(HttpParser::Kind::response, 16384);
  CHECK(feed(ok, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n").event ==
        HttpParser::Event::head_complete);
}

TEST_CASE("a response status must be three digits from 100 to 599") {
  using E = HttpParser::Event;
  struct Case {
    const char* head;
    E expected;
  };
  const Case cases[] = {
      {"HTTP/1.1 20 OK\r\n\r\n", E::error},       {"HTTP/1.1 2000 OK\r\n\r\n", E::error},
      {"HTTP/1.1 099 X\r\n\r\n", E::error},       {"HTTP/1.1 600 X\r\n\r\n", E::error},
      {"HTTP/1.1 0200 OK\r\n\r\n", E::error},     {"HTTP/1.1 000 X\r\n\r\n", E::error},
      {"HTTP/1.1 1 X\r\n\r\n", E::error},         {"HTTP/1.1 20\r\n\r\n", E::error},
      {"HTTP/1.1  200 OK\r\n\r\n", E::error},     {"HTTP/1.1 00000000000000000000000000200 OK\r\n\r\n", E::error},
      {"HTTP/1.1 100 Continue\r\n\r\n", E::head_complete},
      {"HTTP/1.1 200\r\n\r\n", E::head_complete},
      {"HTTP/1.1 599 Odd\r\n\r\n", E::head_complete},
      {"\r\nHTTP/1.1 204 No Content\r\n\r\n", E::head_complete},
  };
  for (const auto& c : cases) {
    std::string shown(c.head);
    CAPTURE(shown);
    for (std::size_t piece : {std::size_t(1), std::size_t(1024)}) {
      HttpParser p(HttpParser::Kind::response, 16384);
      CHECK(feed_body(p, c.head, piece) == c.expected);
    }
  }
  // The count starts again for the final response after an interim one.
  HttpParser p(HttpParser::Kind::response, 16384);
  REQUIRE(feed(p, "HTTP/1.1 100 Continue\r\n\r\n").event == HttpParser::Event::head_complete);
  p.reset();
  CHECK(feed(p, "HTTP/1.1 20 OK\r\n\r\n").event == HttpParser::Event::error);
}

TEST_CASE("a head is parsed in place: fields are views of their own lines, forwarded as received") {
  HttpParser p(HttpParser::Kind::request, 65536);
  // Longer than one staging slice, with the body's first bytes behind it.
  std::string big(3000, 'v');
  std::string req = "POST / HTTP/1.1\r\nHost: h\r\nX-Tight:1\r\nX-Big: " + big +
                    "\r\nX-Pad:   3  \r\nContent-Length: 4\r\n\r\nbody";
  auto r = feed(p, req);
  REQUIRE(r.event == HttpParser::Event::head_complete);
  CHECK(r.consumed == req.size() - 4);
  const auto& h = p.head().headers;
  REQUIRE(h.size() == 5);
  CHECK(h[1].value == "1");
  CHECK(h[2].value == big);
  CHECK(h[3].value == "3");
  // Name, colon and value lie in one range of the store.
  CHECK(h[1].value.data() == h[1].name.data() + h[1].name.size() + 1);
  CHECK(h[2].value.data() == h[2].name.data() + h[2].name.size() + 2);
  // Lines go out as they came; a line with other whitespace is rewritten.
  auto out = encode_request_head(p.head(), ForwardInfo{"10.0.0.1", "backend", "", false});
  CHECK(out.find("\r\nX-Tight:1\r\n") != std::string::npos);
  CHECK(out.find("\r\nX-Big: " + big + "\r\n") != std::string::npos);
  CHECK(out.find("\r\nX-Pad: 3\r\n") != std::string::npos);
  CHECK(out.find("body") == std::string::npos);
}

TEST_CASE("the request head is written whole in each of its longest forms") {
  // The head is written through a cursor into room sized beforehand: every
  // optional part at once, with numbers of the most digits, must fit and
  // come out exactly.
  MessageHead h;
  h.method = "PATCH";
  h.target = "/" + std::string(500, 't');
  h.version_minor = 0;
  h.headers.add("X-Forwarded-For", "203.0.113.7, 198.51.100.2");
  h.headers.add("X-Forwarded-For", "192.0.2.1");
  h.headers.add("X-Forwarded-For", "");
  h.headers.add("Transfer-Encoding", "gzip, chunked");
  h.headers.add("A", std::string(300, 'a'));
  h.chunked = true;
  h.has_transfer_encoding = true;
  auto out = encode_request_head(h, ForwardInfo{"2001:db8::1", "backend.example:8080", "websocket", true});
  CHECK(out == "PATCH " + h.target + " HTTP/1.1\r\nA: " + std::string(300, 'a') +
                   "\r\nHost: backend.example:8080\r\nX-Forwarded-For: 203.0.113.7, 198.51.100.2, 192.0.2.1, "
                   "2001:db8::1\r\nX-Forwarded-Proto: http\r\nVia: 1.1 holdfast\r\nUpgrade: websocket\r\n"
                   "Connection: upgrade\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");

  MessageHead l;
  l.method = "PUT";
  l.target = "/";
  l.headers.add("Host", "h.example");
  l.headers.add("Content-Length", "18446744073709551615");
  l.has_content_length = true;
  l.content_length = 18446744073709551615ULL;
  CHECK(encode_request_head(l, ForwardInfo{"10.0.0.1", "backend", "", false}) ==
        "PUT / HTTP/1.1\r\nHost: h.example\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n"
        "X-Forwarded-Host: h.example\r\nConnection: keep-alive\r\nContent-Length: 18446744073709551615\r\n\r\n");

  // Written over the storage of a longer head (a worker reuses the last
  // request's): exactly the same bytes, nothing of the old head left.
  std::string reused = out;
  encode_request_head(l, ForwardInfo{"10.0.0.1", "backend", "", false}, reused);
  CHECK(reused == encode_request_head(l, ForwardInfo{"10.0.0.1", "backend", "", false}));
  CHECK(reused.capacity() >= out.size());
}

TEST_CASE("a field changed after parsing is written from its new value") {
  HttpParser p(HttpParser::Kind::request, 16384);
  auto r = feed(p, "GET / HTTP/1.1\r\nHost: old.example\r\nA: 1\r\n\r\n");
  REQUIRE(r.event == HttpParser::Event::head_complete);
  MessageHead head = std::move(p.head());
  head.headers.set_value(0, "new.example");
  head.headers.add("B", "2");
  std::string out;
  append_end_to_end(out, head.headers, {});
  CHECK(out == "Host: new.example\r\nA: 1\r\nB: 2\r\n");
}

TEST_CASE("pipelined heads each parse from their own store") {
  HttpParser p(HttpParser::Kind::request, 16384);
  std::string two = "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n";
  auto r = feed(p, two);
  REQUIRE(r.event == HttpParser::Event::head_complete);
  MessageHead first = std::move(p.head());
  p.reset();
  auto r2 = p.feed(two.data() + r.consumed, two.size() - r.consumed);
  REQUIRE(r2.event == HttpParser::Event::head_complete);
  CHECK(first.target == "/a");
  CHECK(first.headers[0].value == "a");
  CHECK(p.head().target == "/b");
  CHECK(p.head().headers[0].value == "b");
}

namespace {
// What a head parses to, in a form two parsers' results can be compared by.
std::string outcome(HttpParser::Kind kind, const std::string& bytes) {
  HttpParser p(kind, 16384);
  auto r = feed(p, bytes);
  std::string out = std::to_string(static_cast<int>(r.event)) + "/" + std::to_string(r.consumed);
  if (r.event == HttpParser::Event::error) return out + " error " + (p.error_reason() ? p.error_reason() : "");
  for (const auto& f : p.head().headers) out += "|" + std::string(f.name) + "=" + std::string(f.value);
  return out;
}
}  // namespace

TEST_CASE("llhttp's SSE4.2 build parses every head as the baseline build does") {
  if (!llhttp_sse42_available()) return;  // nothing to compare on this CPU
  // Values long enough for the 16-byte scan, values that end inside a
  // 16-byte block, bytes it must stop at (control characters, DEL) and bytes
  // it must pass (tab, obs-text).
  const std::string long_value(70, 'v');
  const std::vector<std::pair<HttpParser::Kind, std::string>> heads = {
      {HttpParser::Kind::request, "GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: " + long_value + "\r\n\r\n"},
      {HttpParser::Kind::request, "GET / HTTP/1.1\r\nHost: h\r\nX-Tab: a\tb\tc and sixteen more bytes\r\n\r\n"},
      {HttpParser::Kind::request, "GET / HTTP/1.1\r\nHost: h\r\nX-Obs: caf\xc3\xa9 \xff\xfe and more than sixteen\r\n\r\n"},
      {HttpParser::Kind::request, "GET / HTTP/1.1\r\nHost: h\r\nX-Nul: sixteen bytes then\x01 a control\r\n\r\n"},
      {HttpParser::Kind::request, "GET / HTTP/1.1\r\nHost: h\r\nX-Del: sixteen bytes then\x7f a delete\r\n\r\n"},
      {HttpParser::Kind::request, "GET / HTTP/1.1\r\nHost: h\r\nX-Lf: sixteen bytes then a bare\nline feed\r\n\r\n"},
      {HttpParser::Kind::request, "GET / HTTP/1.1\r\nHost: h\r\nX-Cr: sixteen bytes then a bare\rreturn\r\n\r\n"},
      {HttpParser::Kind::response,
       "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 05:58:20 GMT\r\n"
       "Content-Type: application/octet-stream\r\nContent-Length: 13\r\nETag: \"6b0ddd65-d\"\r\n\r\n"},
      {HttpParser::Kind::response, "HTTP/1.1 200 OK\r\nX-Long: " + long_value + long_value + "  \r\nContent-Length: 0\r\n\r\n"},
  };
  for (const auto& [kind, bytes] : heads) {
    // Whole, and byte by byte, so that the 16-byte scan also meets the end
    // of its input.
    llhttp_prefer_sse42(false);
    const std::string baseline = outcome(kind, bytes);
    llhttp_prefer_sse42(true);
    REQUIRE(llhttp_sse42_in_use());
    CHECK(outcome(kind, bytes) == baseline);
    for (std::size_t cut = 1; cut < bytes.size(); cut += 7) {
      llhttp_prefer_sse42(false);
      HttpParser a(kind, 16384);
      auto ra = feed(a, bytes.substr(0, cut));
      llhttp_prefer_sse42(true);
      HttpParser b(kind, 16384);
      auto rb = feed(b, bytes.substr(0, cut));
      CHECK(static_cast<int>(ra.event) == static_cast<int>(rb.event));
      CHECK(ra.consumed == rb.consumed);
    }
  }
  llhttp_prefer_sse42(true);
}

namespace {
// Everything one message makes the parser report, fed `step` bytes at a
// time: the head, the decoded chunked body and its trailers, and how it ended.
std::string message_outcome(HttpParser::Kind kind, const std::string& bytes, std::size_t step) {
  HttpParser p(kind, 16384);
  Collect sink;
  std::string out;
  HttpParser::Result r;
  bool body = false;
  for (std::size_t at = 0; at < bytes.size();) {
    r = p.feed(bytes.data() + at, std::min(step, bytes.size() - at));
    at += r.consumed;
    if (r.event == HttpParser::Event::error) {
      out += "error@" + std::to_string(at) + " " + std::to_string(static_cast<int>(p.failure())) + " " +
             (p.error_reason() ? p.error_reason() : "");
      break;
    }
    if (r.event == HttpParser::Event::head_complete) {
      const auto& h = p.head();
      out += "head@" + std::to_string(at) + " " + h.method + " " + h.target + " " + std::to_string(h.status) + " " +
             h.reason + " " + std::to_string(h.version_major) + "." + std::to_string(h.version_minor) +
             (h.keep_alive ? " ka" : " close") + (h.chunked ? " chunked" : "") + " cl=" + std::to_string(h.content_length);
      for (const auto& f : h.headers) out += "|" + std::string(f.name) + "=" + std::string(f.value);
      if (!h.chunked) break;
      p.resume_chunked_body(&sink);
      body = true;
    }
    if (r.event == HttpParser::Event::message_complete) {
      out += " end@" + std::to_string(at);
      break;
    }
  }
  if (body) {
    out += " body=" + sink.body;
    for (const auto& f : sink.trailers) out += "|" + std::string(f.name) + "=" + std::string(f.value);
  }
  return out;
}
}  // namespace

TEST_CASE("llhttp's SSE4.2 build reports every callback and error as the baseline build does") {
  if (!llhttp_sse42_available()) return;  // nothing to compare on this CPU
  // The SSE4.2 build calls HttpParser's callbacks through holdfast's own
  // hooks, the baseline build through llhttp's api.c: heads, chunked bodies
  // with extensions and trailers, and callbacks that refuse, cut anywhere.
  const std::vector<std::pair<HttpParser::Kind, std::string>> messages = {
      {HttpParser::Kind::request,
       "POST /up?x=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum:  9 \r\nX-E:\r\n\r\nNEXT"},
      {HttpParser::Kind::response,
       "HTTP/1.1 201 Created Here\r\nServer: s\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
      {HttpParser::Kind::response, "HTTP/1.0 204 \r\nConnection: keep-alive\r\n\r\n"},
      {HttpParser::Kind::request, "GET /a HTTP/1.0\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"},
      {HttpParser::Kind::request, "GET / HTTP/1.1\r\nHost: h\r\n: nameless\r\n\r\n"},
      {HttpParser::Kind::request, "GET / HTTP/1.1\r\nHost: h\r\nX-F: a\r\n folded\r\n\r\n"},
      {HttpParser::Kind::request,
       "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n: v\r\n\r\n"},
      {HttpParser::Kind::request, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"},
      {HttpParser::Kind::response, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"},
      {HttpParser::Kind::request, "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"},
  };
  for (const auto& [kind, bytes] : messages) {
    for (std::size_t step : {bytes.size(), std::size_t{1}, std::size_t{4}, std::size_t{7}}) {
      CAPTURE(bytes);
      CAPTURE(step);
      llhttp_prefer_sse42(false);
      const std::string baseline = message_outcome(kind, bytes, step);
      llhttp_prefer_sse42(true);
      REQUIRE(llhttp_sse42_in_use());
      CHECK(message_outcome(kind, bytes, step) == baseline);
    }
  }
  llhttp_prefer_sse42(true);
}

TEST_CASE("lines forwarded as received sit beside dropped and rewritten ones") {
  HttpParser p(HttpParser::Kind::response, 16384);
  auto r = feed(p,
                "HTTP/1.1 200 OK\r\nServer: s\r\nDate: d\r\nConnection: keep-alive, X-Hop\r\nContent-Length: 4\r\n"
                "ETag: e  \r\nX-Hop: 1\r\nA:1\r\nB:   2\r\nC: 3\r\nKeep-Alive: timeout=5\r\nD: 4\r\n\r\nbody");
  REQUIRE(r.event == HttpParser::Event::head_complete);
  std::string out;
  append_end_to_end(out, p.head().headers, {"content-length"});
  // ETag's trailing spaces and B's extra ones are not sent on; the fields
  // Connection names go, with Connection itself.
  CHECK(out == "Server: s\r\nDate: d\r\nETag: e\r\nA:1\r\nB: 2\r\nC: 3\r\nD: 4\r\n");
}

TEST_CASE("a folded line is refused wherever the head is cut") {
  const std::string folded[] = {
      "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX-A:\r\n folded\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\t\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX-A:\r\n \r\nY: 2\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1  \r\n  2  \r\n 3\r\n\r\n",
  };
  for (const auto& b : folded) {
    CAPTURE(b);
    for (std::size_t step : {b.size(), std::size_t{1}, std::size_t{3}, std::size_t{7}}) {
      HttpParser p(HttpParser::Kind::request, 16384);
      HttpParser::Result r;
      for (std::size_t at = 0; at < b.size() && r.event != HttpParser::Event::error; at += step)
        r = p.feed(b.data() + at, std::min(step, b.size() - at));
      CHECK(r.event == HttpParser::Event::error);
      CHECK(p.failure() == HttpParser::Failure::bad_message);
      CHECK(std::string(p.error_reason()).find("obs-fold") != std::string::npos);
    }
  }
  // The same fields unfolded pass, cut the same ways.
  const std::string plain = "GET / HTTP/1.1\r\nHost: h\r\nX-A:\r\nX-B: 1  \r\nX-C:  \r\n\r\n";
  for (std::size_t step : {plain.size(), std::size_t{1}, std::size_t{3}}) {
    HttpParser p(HttpParser::Kind::request, 16384);
    HttpParser::Result r;
    for (std::size_t at = 0; at < plain.size() && r.event == HttpParser::Event::need_more; at += step)
      r = p.feed(plain.data() + at, std::min(step, plain.size() - at));
    REQUIRE(r.event == HttpParser::Event::head_complete);
    REQUIRE(p.head().headers.size() == 4);
    CHECK(p.head().headers[1].value == "");
    CHECK(p.head().headers[2].value == "1");
    CHECK(p.head().headers[3].value == "");
  }
}

TEST_CASE("a field line without a name is refused, in requests, responses and trailers") {
  const std::pair<HttpParser::Kind, std::string> bad[] = {
      {HttpParser::Kind::request, "GET / HTTP/1.1\r\n: v\r\nHost: h\r\n\r\n"},
      {HttpParser::Kind::request, "GET / HTTP/1.1\r\nHost: h\r\n:\r\n\r\n"},
      {HttpParser::Kind::response, "HTTP/1.1 200 OK\r\n: v\r\nContent-Length: 0\r\n\r\n"},
  };
  for (const auto& [kind, b] : bad) {
    CAPTURE(b);
    for (std::size_t step : {b.size(), std::size_t{1}, std::size_t{5}}) {
      HttpParser p(kind, 16384);
      HttpParser::Result r;
      for (std::size_t at = 0; at < b.size() && r.event != HttpParser::Event::error; at += step)
        r = p.feed(b.data() + at, std::min(step, b.size() - at));
      CHECK(r.event == HttpParser::Event::error);
      CHECK(p.failure() == HttpParser::Failure::bad_message);
      CHECK(std::string(p.error_reason()) == "field line without a name");
    }
  }
  // The colon ends one read and the store grows before the value arrives:
  // nothing may look at the bytes the store held before.
  std::string first = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ";
  first += std::string(2048 - first.size() - 3, 'a') + "\r\n:";
  REQUIRE(first.size() == 2048);
  HttpParser p(HttpParser::Kind::request, 16384);
  auto r = p.feed(first.data(), first.size());
  REQUIRE(r.event == HttpParser::Event::need_more);
  std::string second = " \r\n folded\r\n\r\n";
  r = p.feed(second.data(), second.size());
  CHECK(r.event == HttpParser::Event::error);
  CHECK(std::string(p.error_reason()) == "field line without a name");
  // A name cut right before its colon is still a name.
  HttpParser q(HttpParser::Kind::request, 16384);
  REQUIRE(q.feed("GET / HTTP/1.1\r\nHost: h\r\nX-A", 28).event == HttpParser::Event::need_more);
  REQUIRE(q.feed(": v\r\n\r\n", 7).event == HttpParser::Event::head_complete);
  CHECK(q.head().headers[1].name == "X-A");
  CHECK(q.head().headers[1].value == "v");
  // In a trailer section too.
  HttpParser t(HttpParser::Kind::request, 16384);
  Collect sink;
  REQUIRE(feed(t, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").event ==
          HttpParser::Event::head_complete);
  t.resume_chunked_body(&sink);
  CHECK(feed(t, "1\r\na\r\n0\r\n: v\r\n\r\n").event == HttpParser::Event::error);
}
