#include "holdfast/headers.hpp"

#include <algorithm>
#include <charconv>

namespace holdfast {

namespace {
char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

template <typename F>
void for_each_list_item(std::string_view value, F&& f) {
  for (std::string_view item; next_list_item(value, item);) f(item);
}
}  // namespace

std::vector<std::string> connection_tokens(const HeaderList& headers) {
  std::vector<std::string> tokens;
  for (const auto& h : headers) {
    if (!iequals(h.name, "connection")) continue;
    for_each_list_item(h.value, [&](std::string_view item) {
      std::string t(item);
      std::transform(t.begin(), t.end(), t.begin(), lower);
      tokens.push_back(std::move(t));
    });
  }
  return tokens;
}

bool has_token(const std::vector<std::string>& tokens, std::string_view token) noexcept {
  return std::any_of(tokens.begin(), tokens.end(), [&](const std::string& t) { return iequals(t, token); });
}

bool is_fixed_hop_by_hop(std::string_view name) noexcept {
  // By length first: most names match none of the lengths.
  switch (name.size()) {
    case 2: return iequals(name, "te");
    case 7: return iequals(name, "trailer") || iequals(name, "upgrade");
    case 10: return iequals(name, "connection") || iequals(name, "keep-alive");
    case 16: return iequals(name, "proxy-connection");
    case 17: return iequals(name, "transfer-encoding");
    default: return false;
  }
}

bool is_hop_by_hop(std::string_view name, const std::vector<std::string>& tokens) noexcept {
  return is_fixed_hop_by_hop(name) || has_token(tokens, name);
}

bool list_has_token(std::string_view list, std::string_view token) noexcept {
  bool found = false;
  for_each_list_item(list, [&](std::string_view item) { found = found || iequals(item, token); });
  return found;
}

bool connection_has_token(const HeaderList& headers, std::string_view token) noexcept {
  for (const auto& h : headers)
    if (iequals(h.name, "connection") && list_has_token(h.value, token)) return true;
  return false;
}

const std::string_view* find_header(const HeaderList& headers, std::string_view name) noexcept {
  for (const auto& h : headers)
    if (iequals(h.name, name)) return &h.value;
  return nullptr;
}

std::string codings_before_chunked(const HeaderList& headers) {
  std::vector<std::string_view> codings;
  for (const auto& h : headers)
    if (iequals(h.name, "transfer-encoding")) for_each_list_item(h.value, [&](std::string_view c) { codings.push_back(c); });
  if (!codings.empty() && iequals(codings.back(), "chunked")) codings.pop_back();
  std::string out;
  for (auto c : codings) {
    if (!out.empty()) out += ", ";
    out.append(c);
  }
  return out;
}

std::size_t count_chunked_codings(const HeaderList& headers) {
  std::size_t n = 0;
  for (const auto& h : headers)
    if (iequals(h.name, "transfer-encoding"))
      for_each_list_item(h.value, [&](std::string_view c) { n += iequals(trim_ows(c.substr(0, c.find(';'))), "chunked"); });
  return n;
}

std::string chunked_coding_list(const HeaderList& headers) {
  auto before = codings_before_chunked(headers);
  return before.empty() ? std::string("chunked") : before + ", chunked";
}

KeepAliveHint parse_keep_alive(const HeaderList& headers) {
  KeepAliveHint hint;
  for (const auto& h : headers) {
    if (!iequals(h.name, "keep-alive")) continue;
    for_each_list_item(h.value, [&](std::string_view item) {
      auto eq = item.find('=');
      if (eq == std::string_view::npos) return;
      auto key = trim_ows(item.substr(0, eq));
      auto val = trim_ows(item.substr(eq + 1));
      if (!val.empty() && val.front() == '"' && val.size() >= 2 && val.back() == '"') val = val.substr(1, val.size() - 2);
      std::uint64_t n = 0;
      auto [p, ec] = std::from_chars(val.data(), val.data() + val.size(), n);
      if (ec != std::errc() || p != val.data() + val.size()) return;  // malformed parameter: ignore it
      if (iequals(key, "timeout") && n <= 86400) hint.timeout = Millis(n * 1000);
      else if (iequals(key, "max")) hint.max = n;
    });
  }
  return hint;
}

}  // namespace holdfast
