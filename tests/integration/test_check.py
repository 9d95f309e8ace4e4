"""`holdfast --check` (issues 2 and 4): valid configs print the effective config and
the timeout chain; each kind of bad config is refused with FILE:LINE: KEY."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GOOD = """\
listen: ["127.0.0.1:0"]
workers: 1
client:
  keepalive_timeout: 75s
  front_idle_timeout: 60s
upstreams:
  app:
    servers:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:9002
    keepalive:
      max_idle: 8
      margin: 500ms
    backend_keepalive_timeout: 5s
  other:
    servers:
      - address: 127.0.0.1:9003
    keepalive:
      idle_timeout: 20s
routes:
  - match: {host: api.example.com, path_prefix: /v1/}
    upstream: app
  - match: {path_prefix: /}
    upstream: other
log:
  level: info
  access: "off"
"""


def minimal(upstream_extra="", client_extra="", top_extra="", route_upstream="app", address="127.0.0.1:9001"):
    """A small config; returned with the text so tests can find line numbers."""
    text = "listen: [\"127.0.0.1:0\"]\n"
    text += top_extra
    text += "client:\n  keepalive_timeout: 75s\n" + client_extra
    text += "upstreams:\n  app:\n    servers:\n      - address: " + address + "\n" + upstream_extra
    text += "routes:\n  - match: {path_prefix: /}\n    upstream: " + route_upstream + "\n"
    return text


def line_of(text, needle):
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in config text")


class CheckTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="holdfast-check-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def check(self, path, *extra):
        p = subprocess.run([h.HOLDFAST_BIN, "--check", "-c", path, *extra], capture_output=True, text=True,
                           timeout=30 * h.SLOW)
        return p.returncode, p.stdout, p.stderr

    def assertRefused(self, name, text, line, key, *must_name):
        path = self.write(name, text)
        code, out, err = self.check(path)
        self.assertEqual(code, 1, f"--check accepted a bad config ({name}); stdout:\n{out}\nstderr:\n{err}")
        lines = [ln for ln in err.splitlines() if f"{path}:" in ln]
        self.assertTrue(lines, f"no '{path}:LINE:' in stderr:\n{err}")
        pattern = re.compile(re.escape(path) + r":(\d+): ([^:\s]+): ")
        found = [pattern.search(ln) for ln in lines]
        found = [m for m in found if m]
        self.assertTrue(found, f"stderr lacks 'FILE:LINE: KEY: ...':\n{err}")
        lines_reported = {int(m.group(1)) for m in found}
        keys = {m.group(2) for m in found}
        expected_lines = {line} if isinstance(line, int) else set(line)
        self.assertTrue(lines_reported & expected_lines,
                        f"reported line(s) {lines_reported}, expected {sorted(expected_lines)}:\n{err}")
        leaf = key.split(".")[-1].split("[")[0]
        self.assertTrue(any(k.split(".")[-1].split("[")[0] == leaf and (k == key or k.endswith("." + key))
                            for k in keys),
                        f"reported key(s) {keys}, expected {key}:\n{err}")
        for word in must_name:
            # A value may be named in an equivalent spelling ("60s" or "1m").
            spellings = word if isinstance(word, tuple) else (word,)
            self.assertTrue(any(w in err for w in spellings), f"the message should name {word!r}:\n{err}")
        return err

    # -- valid

    def test_good_config_prints_effective_config_and_chain(self):
        path = self.write("good.yaml", GOOD)
        code, out, err = self.check(path)
        self.assertEqual(code, 0, f"stdout:\n{out}\nstderr:\n{err}")
        text = out + err
        # Effective values include defaults that the file did not write.
        self.assertRegex(text, r"connect_timeout:\s*2s")
        self.assertRegex(text, r"read_timeout:\s*30s")
        self.assertIn("127.0.0.1:9002", text)
        self.assertIn("api.example.com", text)
        # idle_timeout of `app` is derived from the backend's 5s minus the 500ms margin.
        self.assertRegex(text, r"idle_timeout:\s*4500ms")
        # The chain, hop by hop, marks what is declared, defaulted or unknown.
        self.assertIn("declared", text)
        self.assertTrue("defaulted" in text or "derived" in text, text)
        self.assertIn("unknown", text, "the backend timeout of `other` is not declared and should be marked unknown")
        # The hop in front of holdfast appears with its declared 60s.
        self.assertTrue("front" in text.lower() or "load balancer" in text.lower(), text)
        self.assertTrue("60s" in text or "1m" in text, text)

    def test_client_margin_is_printed_with_its_origin(self):
        text = minimal(client_extra="  front_idle_timeout: 60s\n  margin: 3s\n")
        code, out, err = self.check(self.write("margin.yaml", text))
        self.assertEqual(code, 0, err)
        client = out.split("\nclient:\n", 1)[1].split("\nupstreams:", 1)[0]
        self.assertRegex(client, r"(?m)^  margin: 3s$", "client.margin is missing from the effective config")
        chain = [ln for ln in out.splitlines() if "client side" in ln]
        self.assertEqual(len(chain), 1, out)
        self.assertIn("margin 3s (declared)", chain[0])
        code, out, err = self.check(self.write("margin_default.yaml", minimal()))
        self.assertEqual(code, 0, err)
        self.assertIn("margin 1s (defaulted)", [ln for ln in out.splitlines() if "client side" in ln][0])

    def test_unknown_backend_timeout_is_explained(self):
        # Not silently 50s: what holdfast asks, learns and keeps in hand.
        code, out, err = self.check(self.write("unknown.yaml", minimal()))
        self.assertEqual(code, 0, err)
        self.assertIn("idle timeout is unknown", out)
        for word in ("asks:", "learns:", "keeps:", "Connection: keep-alive", "margin (1s)", "idle_timeout (50s)"):
            self.assertIn(word, out)

    def test_listen_backlog_is_printed(self):
        code, out, err = self.check(self.write("backlog.yaml", minimal(top_extra="listen_backlog: 2048\n")))
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"(?m)^listen_backlog: 2048$")
        code, out, err = self.check(self.write("backlog_default.yaml", minimal()))
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"(?m)^listen_backlog: 511$")

    def test_bad_listen_backlog(self):
        text = minimal(top_extra="listen_backlog: 0\n")
        self.assertRefused("bad_backlog.yaml", text, line_of(text, "listen_backlog"), "listen_backlog", "1..65535")

    def test_tunnel_timeout_and_upgrade_list_are_printed(self):
        text = minimal(upstream_extra="    upgrade: [WebSocket, foo]\n    tunnel_timeout: 10m\n")
        code, out, err = self.check(self.write("tunnel.yaml", text))
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"(?m)^    upgrade: \[websocket, foo\]$")
        chain = [ln for ln in out.splitlines() if "tunnel_timeout" in ln and ln.startswith("#")]
        self.assertEqual(len(chain), 1, out)
        self.assertIn("10m", chain[0])
        code, out, err = self.check(self.write("tunnel_default.yaml", minimal()))
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"(?m)^    tunnel_timeout: 1h$")

    def test_h2c_upgrade_refused(self):
        text = minimal(upstream_extra="    upgrade: [websocket, h2c]\n")
        self.assertRefused("h2c.yaml", text, line_of(text, "upgrade:"), "upgrade[1]", "h2c")

    def test_upgrade_must_be_a_list(self):
        text = minimal(upstream_extra="    upgrade: websocket\n")
        self.assertRefused("upgrade_scalar.yaml", text, line_of(text, "upgrade:"), "upgrade", "list")

    def test_minimal_config_is_valid(self):
        code, out, err = self.check(self.write("minimal.yaml", minimal()))
        self.assertEqual(code, 0, err)

    def test_version_and_help(self):
        p = subprocess.run([h.HOLDFAST_BIN, "--version"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout + p.stderr, r"\d+\.\d+\.\d+")
        p = subprocess.run([h.HOLDFAST_BIN, "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("--check", p.stdout + p.stderr)

    def test_missing_file(self):
        code, out, err = self.check(os.path.join(self.dir, "does-not-exist.yaml"))
        self.assertEqual(code, 1)
        self.assertIn("does-not-exist.yaml", err)

    # -- each kind of error, with file, line and key

    def test_unknown_top_level_key(self):
        text = minimal(top_extra="wrokers: 2\n")
        self.assertRefused("unknown_top.yaml", text, line_of(text, "wrokers"), "wrokers")

    def test_unknown_nested_key(self):
        text = minimal(client_extra="  keepalive_timeuot: 5s\n")
        self.assertRefused("unknown_nested.yaml", text, line_of(text, "keepalive_timeuot"),
                           "client.keepalive_timeuot")

    def test_unknown_key_in_keepalive(self):
        text = minimal(upstream_extra="    keepalive:\n      max_idel: 4\n")
        self.assertRefused("unknown_ka.yaml", text, line_of(text, "max_idel"), "max_idel")

    def test_wrong_type_list_for_scalar(self):
        text = minimal(upstream_extra="    connect_timeout: [1s, 2s]\n")
        self.assertRefused("wrong_type.yaml", text, line_of(text, "connect_timeout"), "connect_timeout")

    def test_wrong_type_map_for_scalar(self):
        text = minimal(client_extra="  keepalive_requests: {a: 1}\n")
        self.assertRefused("wrong_type_map.yaml", text, line_of(text, "keepalive_requests"), "keepalive_requests")

    def test_bad_duration(self):
        text = minimal(upstream_extra="    read_timeout: 5 seconds\n")
        self.assertRefused("bad_duration.yaml", text, line_of(text, "read_timeout"), "read_timeout", "5 seconds")

    def test_duration_without_unit(self):
        text = minimal(client_extra="  header_timeout: 10\n")
        self.assertRefused("bare_duration.yaml", text, line_of(text, "header_timeout"), "header_timeout")

    def test_bad_size(self):
        text = minimal(client_extra="  max_header_bytes: 16q\n")
        self.assertRefused("bad_size.yaml", text, line_of(text, "max_header_bytes"), "max_header_bytes", "16q")

    def test_route_to_missing_upstream(self):
        text = minimal(route_upstream="nowhere")
        self.assertRefused("missing_upstream.yaml", text, line_of(text, "nowhere"), "upstream", "nowhere")

    def test_unparsable_address(self):
        text = minimal(address="not-an-address")
        self.assertRefused("bad_address.yaml", text, line_of(text, "not-an-address"), "address", "not-an-address")

    def test_invalid_port(self):
        text = minimal(address="127.0.0.1:99999")
        self.assertRefused("bad_port.yaml", text, line_of(text, "99999"), "address", "99999")

    def test_invalid_listen_port(self):
        text = minimal().replace('listen: ["127.0.0.1:0"]', "listen: 127.0.0.1:70000")
        self.assertRefused("bad_listen.yaml", text, 1, "listen", "70000")

    def test_yaml_syntax_error(self):
        text = minimal() + "oops: [unclosed\n"
        path = self.write("syntax.yaml", text)
        code, out, err = self.check(path)
        self.assertEqual(code, 1)
        self.assertIn(f"{path}:", err)

    # -- broken timeout orderings (issue 4)

    def test_idle_timeout_plus_margin_above_backend_timeout(self):
        text = minimal(upstream_extra="    keepalive:\n      idle_timeout: 50s\n      margin: 1s\n"
                                      "    backend_keepalive_timeout: 5s\n")
        err = self.assertRefused("order_pool.yaml", text,
                                 (line_of(text, "idle_timeout"), line_of(text, "backend_keepalive_timeout")),
                                 "idle_timeout", "50s", "5s", "backend_keepalive_timeout")
        self.assertIn("idle_timeout", err)

    def test_margin_not_below_backend_timeout(self):
        text = minimal(upstream_extra="    keepalive:\n      margin: 2s\n    backend_keepalive_timeout: 2s\n")
        path = self.write("order_margin.yaml", text)
        code, out, err = self.check(path)
        self.assertEqual(code, 1, out)
        self.assertIn("2s", err)

    def test_client_keepalive_below_front_idle_plus_margin(self):
        text = minimal(client_extra="  front_idle_timeout: 60s\n").replace("keepalive_timeout: 75s",
                                                                            "keepalive_timeout: 30s")
        err = self.assertRefused("order_client.yaml", text,
                                 (line_of(text, "keepalive_timeout: 30s"), line_of(text, "front_idle_timeout")),
                                 "keepalive_timeout", "30s", ("60s", "1m"), "front_idle_timeout")
        self.assertIn("keepalive_timeout", err)

    def test_client_keepalive_equal_to_front_idle_is_refused(self):
        # keepalive_timeout must exceed front_idle_timeout by the margin (default 1s).
        text = minimal(client_extra="  front_idle_timeout: 75s\n")
        path = self.write("order_client_equal.yaml", text)
        code, out, err = self.check(path)
        self.assertEqual(code, 1, out)
        self.assertIn("75s", err)

    def test_good_ordering_accepted(self):
        text = minimal(upstream_extra="    keepalive:\n      idle_timeout: 4s\n      margin: 1s\n"
                                      "    backend_keepalive_timeout: 5s\n",
                       client_extra="  front_idle_timeout: 60s\n")
        code, out, err = self.check(self.write("order_ok.yaml", text))
        self.assertEqual(code, 0, err)

    def test_broken_ordering_refused_at_start(self):
        text = minimal(upstream_extra="    keepalive:\n      idle_timeout: 50s\n    backend_keepalive_timeout: 5s\n")
        path = self.write("order_start.yaml", text)
        p = subprocess.run([h.HOLDFAST_BIN, "-c", path], capture_output=True, text=True, timeout=30 * h.SLOW)
        self.assertNotEqual(p.returncode, 0, "holdfast started with a broken timeout order")
        self.assertIn("50s", p.stderr)
        self.assertIn("5s", p.stderr)


if __name__ == "__main__":
    unittest.main()
