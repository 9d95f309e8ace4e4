#include <doctest/doctest.h>

#include <string_view>
#include <vector>

#include "holdfast/headers.hpp"
#include "holdfast/http1_encode.hpp"

using namespace holdfast;

TEST_CASE("list elements are taken one by one, trimmed, empty ones skipped") {
  std::vector<std::string_view> got;
  for (std::string_view rest = " a,\tb c ,, ,d,", item; next_list_item(rest, item);) got.push_back(item);
  CHECK(got == std::vector<std::string_view>{"a", "b c", "d"});
  std::string_view rest = " , ,", item;
  CHECK_FALSE(next_list_item(rest, item));
}

TEST_CASE("trim_ows removes spaces and tabs at either end and keeps inner ones") {
  CHECK(trim_ows("") == "");
  CHECK(trim_ows(" \t \t") == "");
  CHECK(trim_ows("\tgzip\t") == "gzip");
  CHECK(trim_ows("  a b\tc  ") == "a b\tc");
  CHECK(trim_ows(" \tleft") == "left");
  CHECK(trim_ows("right\t ") == "right");
  CHECK(trim_ows("none") == "none");
  // Only SP and HTAB are OWS: other whitespace is part of the value.
  CHECK(trim_ows("\r\nx\v") == "\r\nx\v");
}

TEST_CASE("Connection tokens name further hop-by-hop fields") {
  HeaderList h{{"Connection", "close, X-Secret"}, {"connection", " Foo "}, {"X-Secret", "1"}};
  auto tokens = connection_tokens(h);
  REQUIRE(tokens.size() == 3);
  CHECK(tokens[0] == "close");
  CHECK(tokens[1] == "x-secret");
  CHECK(tokens[2] == "foo");
  CHECK(is_hop_by_hop("X-SECRET", tokens));
  CHECK(is_hop_by_hop("Foo", tokens));
  for (auto name : {"Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade"})
    CHECK(is_hop_by_hop(name, {}));
  CHECK_FALSE(is_hop_by_hop("Content-Length", tokens));
  CHECK_FALSE(is_hop_by_hop("X-Other", tokens));
}

TEST_CASE("Connection tokens are found in place without being copied") {
  HeaderList h{{"Connection", "close, X-Secret"}, {"connection", " Foo ,,"}, {"X-Secret", "1"}};
  CHECK(connection_has_token(h, "close"));
  CHECK(connection_has_token(h, "x-secret"));
  CHECK(connection_has_token(h, "FOO"));
  CHECK_FALSE(connection_has_token(h, "fo"));
  CHECK_FALSE(connection_has_token(h, "keep-alive"));
  CHECK_FALSE(connection_has_token({{"X-Connection", "close"}}, "close"));
  CHECK(list_has_token(" a ,\tb\t", "B"));
  CHECK_FALSE(list_has_token("ab", "a"));
  CHECK_FALSE(list_has_token("", ""));
  for (auto name : {"connection", "KEEP-ALIVE", "Proxy-Connection", "te", "Trailer", "transfer-encoding", "UPGRADE"})
    CHECK(is_fixed_hop_by_hop(name));
  for (auto name : {"Host", "TE2", "Content-Length", "Transfer-Encodings", "x-secret", ""})
    CHECK_FALSE(is_fixed_hop_by_hop(name));
  // The length mask the encoder skips comparisons by covers every name of the set.
  for (auto name : {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"})
    CHECK(((kFixedHopByHopLengths >> std::string_view(name).size()) & 1) == 1);
  CHECK(iequals("Content-LENGTH", "content-length"));
  CHECK_FALSE(iequals("content-lengtx", "content-length"));
  CHECK_FALSE(iequals("[", "{"));  // only ASCII letters fold
}

TEST_CASE("Keep-Alive hints are parsed leniently and safely") {
  auto hint = parse_keep_alive({{"Keep-Alive", "timeout=5, max=100"}});
  CHECK(hint.timeout == Millis(5000));
  CHECK(hint.max == 100u);
  hint = parse_keep_alive({{"keep-alive", "max=3"}});
  CHECK_FALSE(hint.timeout.has_value());
  CHECK(hint.max == 3u);
  hint = parse_keep_alive({{"Keep-Alive", "timeout=abc, max=-1, junk"}});
  CHECK_FALSE(hint.timeout.has_value());
  CHECK_FALSE(hint.max.has_value());
  hint = parse_keep_alive({{"Keep-Alive", "timeout=\"2\""}});
  CHECK(hint.timeout == Millis(2000));
  CHECK_FALSE(parse_keep_alive({{"X-Keep-Alive", "timeout=5"}}).timeout.has_value());
}

TEST_CASE("transfer codings other than the final chunked survive re-framing") {
  CHECK(chunked_coding_list({{"Transfer-Encoding", "chunked"}}) == "chunked");
  CHECK(chunked_coding_list({{"Transfer-Encoding", "gzip, chunked"}}) == "gzip, chunked");
  CHECK(chunked_coding_list({{"Transfer-Encoding", "gzip"}, {"transfer-encoding", "chunked"}}) == "gzip, chunked");
  // Close-delimited with a coding: the coding stays, chunked is added.
  CHECK(chunked_coding_list({{"Transfer-Encoding", "gzip"}}) == "gzip, chunked");
  CHECK(chunked_coding_list({}) == "chunked");
  CHECK(codings_before_chunked({{"Transfer-Encoding", "gzip, chunked"}}) == "gzip");
}

TEST_CASE("find_header is case-insensitive and returns the first") {
  HeaderList h{{"Host", "a"}, {"HOST", "b"}};
  REQUIRE(find_header(h, "host"));
  CHECK(*find_header(h, "host") == "a");
  CHECK(find_header(h, "via") == nullptr);
}

TEST_CASE("HeaderList keeps its fields valid across growth, copies and moves") {
  HeaderList h;
  std::string long_value(3000, 'v');  // forces the store to grow under earlier views
  h.append_name("X-", true);
  h.append_name("One", false);
  h.append_value("  a");
  h.append_value("b \t");
  h.trim_values();
  h.append_name("X-Two", true);
  h.append_value(long_value);
  h.add("Empty", "");
  REQUIRE(h.size() == 3);
  CHECK(h[0].name == "X-One");
  CHECK(h[0].value == "ab");
  CHECK(h[1].value == long_value);
  CHECK(h[2].value.empty());
  h.set_value(0, "changed");
  h.insert_front("Host", "a.example");
  REQUIRE(h.size() == 4);
  CHECK(h[0].name == "Host");
  CHECK(h[1].value == "changed");
  HeaderList copy = h;
  h.set_value(1, "again");
  CHECK(copy[1].value == "changed");
  CHECK(copy[2].value == long_value);
  HeaderList moved = std::move(copy);
  CHECK(moved[0].value == "a.example");
  CHECK(moved[3].name == "Empty");
  copy = moved;
  CHECK(copy[2].value == long_value);
  const auto* value = find_header(moved, "x-two");
  REQUIRE(value != nullptr);
  CHECK(*value == long_value);
  moved.clear();
  CHECK(moved.empty());
  moved.add("A", "1");
  CHECK(moved[0].value == "1");
}

TEST_CASE("append_end_to_end copies end-to-end fields exactly and drops hop-by-hop ones") {
  HeaderList h{{"Host", "a.example"},      {"Connection", "X-Secret, host,,close"}, {"X-Secret", "1"},
               {"x-empty", ""},            {"Keep-Alive", "timeout=5"},             {"Content-Length", "3"},
               {"TE", "trailers"},         {"X-Kept", "two words"},                 {"connection", "x-other"},
               {"X-OTHER", "gone"}};
  std::string out = "HEAD\r\n";
  append_end_to_end(out, h, {"content-length"});
  CHECK(out == "HEAD\r\nHost: a.example\r\nx-empty: \r\nX-Kept: two words\r\n");
  out.clear();
  append_end_to_end(out, {}, {});
  CHECK(out.empty());
  // More Connection tokens than are held in place: the copied list decides.
  HeaderList many{{"Connection", "a, b, c, d, e, f, g, h, i, X-Last"}, {"X-Last", "1"}, {"I", "2"}, {"Z", "3"}};
  append_end_to_end(out, many, {});
  CHECK(out == "Z: 3\r\n");
  // Names of every length up to and past 64, dropped because Connection or
  // the skip list names them, whatever their case; their neighbours of the
  // same lengths stay.
  for (std::size_t n = 1; n < 80; ++n) {
    std::string named(n, 'n'), skipped(n, 's'), kept(n, 'k');
    std::string named_upper(n, 'N');
    HeaderList fields{{"Connection", named}, {named_upper, "1"}, {skipped, "2"}, {kept, "3"}};
    std::string got;
    append_end_to_end(got, fields, {skipped});
    CAPTURE(n);
    CHECK(got == kept + ": 3\r\n");
  }
}
