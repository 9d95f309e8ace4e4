"""The README's configuration reference is what `holdfast --config-reference`
prints from the config schema; scripts/config-reference rewrites it."""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

BEGIN = "<!-- config-reference:begin -->"
END = "<!-- config-reference:end -->"


def readme_reference():
    with open(os.path.join(h.REPO, "README.md")) as f:
        text = f.read()
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise AssertionError(f"README.md needs exactly one {BEGIN} and one {END}")
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


class ConfigReferenceTest(unittest.TestCase):

    def generated(self):
        p = subprocess.run([h.HOLDFAST_BIN, "--config-reference"], capture_output=True, text=True, timeout=30 * h.SLOW)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout

    def test_readme_matches_the_binary(self):
        generated = self.generated().strip("\n")
        documented = readme_reference().strip("\n")
        if documented != generated:
            old, new = documented.splitlines(), generated.splitlines()
            first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
            self.fail("README.md's configuration reference differs from `holdfast --config-reference` "
                      f"(run scripts/config-reference); first difference at line {first + 1}:\n"
                      f"  README: {old[first] if first < len(old) else '(end)'}\n"
                      f"  binary: {new[first] if first < len(new) else '(end)'}")

    def test_reference_names_every_kind_of_key(self):
        out = self.generated()
        for key in ("`workers`", "`resolver`", "`reload_on_change`", "`upstreams.*.keepalive.idle_timeout`",
                    "`upstreams.*.resolve_interval`", "`upstreams.*.servers[].weight`",
                    "`upstreams.*.health_check.expect`", "`routes[].match.path_prefix`"):
            self.assertIn("| " + key + " |", out)
        rows = [ln for ln in out.splitlines() if ln.startswith("| `")]
        for row in rows:
            cells = [c.strip() for c in row.strip("|").split(" | ")]
            self.assertEqual(len(cells), 6, row)
            self.assertIn(cells[4], ("live", "restart", "connection"), row)
            self.assertTrue(cells[1] and cells[5], f"type and help must be given: {row}")
            # restart_required() compares top-level keys, same_connection_settings() an upstream's.
            if cells[4] == "restart":
                self.assertNotRegex(cells[0], r"[*\[]", f"a restart key must be top-level: {row}")
            if cells[4] == "connection":
                self.assertRegex(cells[0], r"^`upstreams\.\*\.[a-z_.]+`$", f"a connection key belongs to an upstream: {row}")

    def test_help_mentions_the_flag(self):
        p = subprocess.run([h.HOLDFAST_BIN, "--help"], capture_output=True, text=True, timeout=30 * h.SLOW)
        self.assertIn("--config-reference", p.stdout)


if __name__ == "__main__":
    unittest.main()
