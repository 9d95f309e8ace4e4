"""A real DNS resolver for tests: dnsmasq on an ephemeral loopback port.

dnsmasq answers only from a hosts file this fixture writes (every other name is
NXDOMAIN, nothing is forwarded); set() rewrites the file, sends SIGHUP (dnsmasq
then reads it again) and waits until a query shows the new answer. Standard
library only; the DNS queries are built and parsed here.

    with Dnsmasq({"backend.holdfast.test": ["127.0.0.2", "127.0.0.3"]}) as dns:
        config["resolver"] = dns.resolver          # "127.0.0.1:PORT"
        ...
        dns.set("backend.holdfast.test", ["127.0.0.4"])

dnsmasq comes from Debian's dnsmasq-base (scripts/setup installs it); it runs
as the test's own user, without a pid file, reading no /etc/dnsmasq.conf, and
dies with the test process (a guard shell kills it).
"""

import ctypes
import ipaddress
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

LOOPBACK = "127.0.0.1"
TYPE_A, TYPE_AAAA = 1, 28
RCODE_NXDOMAIN = 3


def _order(address):
    ip = ipaddress.ip_address(address)
    return ip.version, ip


def find_dnsmasq():
    found = shutil.which("dnsmasq")
    for path in (found, "/usr/sbin/dnsmasq", "/sbin/dnsmasq"):
        if path and os.access(path, os.X_OK):
            return path
    raise AssertionError("dnsmasq not found: install Debian's dnsmasq-base (scripts/setup does)")


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def _skip_name(data, at):
    while at < len(data):
        n = data[at]
        if n & 0xC0 == 0xC0:
            return at + 2
        if n == 0:
            return at + 1
        at += n + 1
    return at


def query(port, name, qtype=TYPE_A, timeout=0.3, host=LOOPBACK):
    """One UDP query. Returns (rcode, sorted addresses of type `qtype`), or
    None when nothing answered within `timeout`."""
    ident = random.randrange(1 << 16)
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(packet, (host, port))
            data = s.recv(4096)
        except OSError:   # timeout, or ICMP port unreachable
            return None
    if len(data) < 12 or struct.unpack(">H", data[:2])[0] != ident:
        return None
    flags, qd, an = struct.unpack(">HHH", data[2:8])
    at = 12
    for _ in range(qd):
        at = _skip_name(data, at) + 4
    found = []
    for _ in range(an):
        at = _skip_name(data, at)
        if at + 10 > len(data):
            break
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", data[at:at + 10])
        at += 10
        rdata = data[at:at + length]
        at += length
        if rtype == qtype == TYPE_A and length == 4:
            found.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == qtype == TYPE_AAAA and length == 16:
            found.append(str(ipaddress.IPv6Address(rdata)))
    return flags & 0x0F, sorted(found, key=_order)


def _die_with_parent():
    # PR_SET_PDEATHSIG, until dnsmasq changes its credentials.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Dnsmasq:
    """dnsmasq on 127.0.0.1:port (UDP and TCP) answering from `names`
    ({name: [addresses]}, IPv4 and IPv6 mixed)."""

    START_TIMEOUT = 5.0
    SET_TIMEOUT = 5.0

    def __init__(self, names=None):
        self.names = {k: list(v) for k, v in (names or {}).items()}
        self.binary = find_dnsmasq()
        self.dir = tempfile.mkdtemp(prefix="holdfast-dns-")
        self.hosts_path = os.path.join(self.dir, "hosts")
        self.log_path = os.path.join(self.dir, "dnsmasq.log")
        self.proc = None
        self.guard = None
        self.port = None

    @property
    def resolver(self):
        """The `resolver` config value that points holdfast here."""
        return "%s:%d" % (LOOPBACK, self.port)

    def command(self, port):
        cmd = [self.binary, "--keep-in-foreground", "--conf-file=/dev/null", "--port=%d" % port,
               "--listen-address=" + LOOPBACK, "--bind-interfaces", "--no-resolv", "--no-hosts",
               "--addn-hosts=" + self.hosts_path, "--local=/#/", "--pid-file=", "--log-queries",
               "--log-facility=-"]
        try:
            import pwd
            cmd.append("--user=" + pwd.getpwuid(os.geteuid()).pw_name)
        except KeyError:
            pass
        return cmd

    def start(self):
        self._write_hosts()
        for _ in range(5):
            port = self._free_port()
            log = open(self.log_path, "ab")
            proc = subprocess.Popen(self.command(port), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    preexec_fn=_die_with_parent)
            log.close()
            deadline = time.monotonic() + self.START_TIMEOUT
            while time.monotonic() < deadline and proc.poll() is None:
                if query(port, "ready.invalid") is not None:
                    self.proc, self.port = proc, port
                    # dnsmasq drops privileges, which clears PR_SET_PDEATHSIG:
                    # this shell kills it once our end of its stdin closes,
                    # even when the test process dies.
                    self.guard = subprocess.Popen(["/bin/sh", "-c", "read _; kill -9 %d 2>/dev/null" % proc.pid],
                                                  stdin=subprocess.PIPE)
                    return self
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
        raise AssertionError("dnsmasq did not start:\n" + self.log())

    def set(self, name, addresses):
        """Makes `name` resolve to `addresses` ([] removes it: NXDOMAIN) and
        waits until dnsmasq answers so."""
        if addresses:
            self.names[name] = list(addresses)
        else:
            self.names.pop(name, None)
        self._write_hosts()
        self.proc.send_signal(signal.SIGHUP)
        self.wait_answer(name, addresses)

    def wait_answer(self, name, addresses):
        want = sorted(addresses, key=_order)
        v4 = [a for a in want if ipaddress.ip_address(a).version == 4]
        v6 = [a for a in want if ipaddress.ip_address(a).version == 6]
        deadline = time.monotonic() + self.SET_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            a, aaaa = query(self.port, name, TYPE_A), query(self.port, name, TYPE_AAAA)
            last = (a, aaaa)
            if a and aaaa:
                if not want and a[0] == RCODE_NXDOMAIN:
                    return
                if want and a[0] == aaaa[0] == 0 and a[1] == v4 and aaaa[1] == v6:
                    return
            time.sleep(0.02)
        raise AssertionError("dnsmasq does not answer %s with %s (last: %r)" % (name, want, last))

    def kill(self):
        """The resolver dies: queries go unanswered from now on."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        if self.guard:
            self.guard.stdin.close()
            self.guard.wait(timeout=5)
            self.guard = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _write_hosts(self):
        tmp = self.hosts_path + ".new"
        with open(tmp, "w") as f:
            for name, addresses in sorted(self.names.items()):
                for a in addresses:
                    f.write("%s %s\n" % (a, name))
        os.replace(tmp, self.hosts_path)

    @staticmethod
    def _free_port():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOOPBACK, 0))
            return s.getsockname()[1]


if __name__ == "__main__":
    # Self-check of the fixture: start, answer, change, remove, die.
    with Dnsmasq({"backend.holdfast.test": ["127.0.0.3", "127.0.0.2"], "v6.holdfast.test": ["::1"]}) as dns:
        assert query(dns.port, "backend.holdfast.test") == (0, ["127.0.0.2", "127.0.0.3"])
        assert query(dns.port, "v6.holdfast.test", TYPE_AAAA) == (0, ["::1"])
        assert query(dns.port, "other.example")[0] == RCODE_NXDOMAIN
        dns.set("backend.holdfast.test", ["127.0.0.4", "::1"])
        assert query(dns.port, "backend.holdfast.test") == (0, ["127.0.0.4"])
        dns.set("backend.holdfast.test", [])
        dns.kill()
        assert query(dns.port, "v6.holdfast.test") is None
        print("dnslib: ok on port", dns.port)
