#include <doctest/doctest.h>

#include <string>

#include "holdfast/request_target.hpp"

using namespace holdfast;

namespace {
MessageHead request(std::string method, std::string target, HeaderList headers) {
  MessageHead h;
  h.method = std::move(method);
  h.target = std::move(target);
  h.headers = std::move(headers);
  return h;
}

std::string normalized(std::string_view target) {
  std::string scratch;
  return std::string(normalized_path(target, scratch));
}
}  // namespace

TEST_CASE("remove_dot_segments: RFC 3986 5.2.4 examples") {
  CHECK(remove_dot_segments("/a/b/c/./../../g") == "/a/g");
  CHECK(remove_dot_segments("mid/content=5/../6") == "mid/6");
}

TEST_CASE("remove_dot_segments: each step of 5.2.4") {
  struct Case {
    const char* in;
    const char* out;
  };
  const Case cases[] = {
      {"../a", "a"},           // A: leading "../"
      {"./a", "a"},            // A: leading "./"
      {"/./a", "/a"},          // B: "/./"
      {"/a/.", "/a/"},         // B: trailing "/."
      {"/a/b/../c", "/a/c"},   // C: "/../"
      {"/a/b/..", "/a/"},      // C: trailing "/.."
      {"/..", "/"},            // C: never above the root
      {"/../../a", "/a"},      //
      {"/a/b/c/../../../../g", "/g"},
      {".", ""},               // D
      {"..", ""},              // D
      {"/a/..b/.c/b..", "/a/..b/.c/b.."},  // dots inside a segment are data
      {"/a//../b", "/a/b"},    // an empty segment is a segment
      {"/", "/"},
      {"", ""},
      {"/v1/../admin", "/admin"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.in);
    CHECK(remove_dot_segments(c.in) == c.out);
  }
}

TEST_CASE("normalize_path: percent-encoding normalisation, then dot-segments") {
  CHECK(normalize_path("/%7euser/%41%2d%2E%5F") == "/~user/A-._");  // unreserved characters decoded
  CHECK(normalize_path("/a%2fb%3a%c3%a9") == "/a%2Fb%3A%C3%A9");     // others kept, hex upper-cased
  CHECK(normalize_path("/v1/%2e%2E/admin") == "/admin");             // escaped dots are dot-segments
  CHECK(normalize_path("/v1/%2E/x") == "/v1/x");
  CHECK(normalize_path("/a%zz/%4/%") == "/a%zz/%4/%");               // not escapes: left alone
  CHECK(normalize_path("/a/%252e%252e/b") == "/a/%252e%252e/b");     // decoded once only
}

TEST_CASE("normalized_path: the path of each target form, without the query") {
  CHECK(normalized("/plain/path") == "/plain/path");
  CHECK(normalized("/v1/../admin?x=/v1/") == "/admin");
  CHECK(normalized("/a/./b#frag") == "/a/b");
  CHECK(normalized("/q?a=../../b") == "/q");
  CHECK(normalized("*") == "/");
  CHECK(normalized("http://a.example") == "/");
  CHECK(normalized("http://a.example?x") == "/");
  CHECK(normalized("http://a.example/v1/../x?y") == "/x");
}

TEST_CASE("normalized_path returns a view of the target when nothing changes") {
  std::string scratch;
  std::string target = "/static/app.js?v=3";
  auto path = normalized_path(target, scratch);
  CHECK(path == "/static/app.js");
  CHECK(path.data() == target.data());
  CHECK(scratch.empty());
}

TEST_CASE("absolute-form: authority replaces Host, target becomes origin-form") {
  auto h = request("GET", "http://a.example/x?q=1", {{"Host", "b.example"}, {"Accept", "*/*"}});
  CHECK(rewrite_request_target(h) == nullptr);
  CHECK(h.target == "/x?q=1");
  REQUIRE(h.headers.size() == 2);
  CHECK(h.headers[0].name == "Host");
  CHECK(h.headers[0].value == "a.example");
  CHECK(h.headers[1].value == "*/*");
}

TEST_CASE("absolute-form: empty path, query only, port, case, https") {
  struct Case {
    const char* target;
    const char* origin;
    const char* host;
  };
  const Case cases[] = {
      {"http://a.example", "/", "a.example"},
      {"http://a.example?k=v", "/?k=v", "a.example"},
      {"HTTP://A.example:8080/p/../q", "/p/../q", "A.example:8080"},  // forwarded as received
      {"https://[::1]:8443/x", "/x", "[::1]:8443"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.target);
    auto h = request("GET", c.target, {{"host", "other"}});
    CHECK(rewrite_request_target(h) == nullptr);
    CHECK(h.target == c.origin);
    CHECK(h.headers[0].value == c.host);
  }
}

TEST_CASE("absolute-form: Host is added when absent; extra Host fields are left for the caller") {
  auto h = request("GET", "http://a.example/", {{"Accept", "*/*"}});
  CHECK(rewrite_request_target(h) == nullptr);
  REQUIRE(h.headers.size() == 2);
  CHECK(h.headers[0].name == "Host");
  CHECK(h.headers[0].value == "a.example");

  auto two = request("GET", "http://a.example/", {{"Host", "b"}, {"Host", "c"}});
  CHECK(rewrite_request_target(two) == nullptr);
  REQUIRE(two.headers.size() == 2);
  CHECK(two.headers[0].value == "a.example");
  CHECK(two.headers[1].value == "c");
}

TEST_CASE("absolute-form targets that are refused leave the head unchanged") {
  const char* bad[] = {"http://user@a.example/", "http://u:p@a.example/x", "ftp://a.example/x", "http:///x",
                       "http://:80/x"};
  for (const char* target : bad) {
    CAPTURE(target);
    auto h = request("GET", target, {{"Host", "b.example"}});
    CHECK(rewrite_request_target(h) != nullptr);
    CHECK(h.target == target);
    CHECK(h.headers[0].value == "b.example");
  }
}

TEST_CASE("other target forms are left alone; * only with OPTIONS") {
  auto origin = request("GET", "/a/../b", {{"Host", "h"}});
  CHECK(rewrite_request_target(origin) == nullptr);
  CHECK(origin.target == "/a/../b");
  auto authority = request("CONNECT", "a.example:443", {{"Host", "h"}});
  CHECK(rewrite_request_target(authority) == nullptr);
  CHECK(authority.target == "a.example:443");
  auto options = request("OPTIONS", "*", {{"Host", "h"}});
  CHECK(rewrite_request_target(options) == nullptr);
  CHECK(options.target == "*");
  auto get = request("GET", "*", {{"Host", "h"}});
  CHECK(rewrite_request_target(get) != nullptr);
}
