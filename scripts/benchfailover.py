"""The failover row of scripts/bench: under load, one of two backends is
SIGKILLed and restarted every 5 s, behind holdfast, nginx and HAProxy in turn.

Load and counting are scripts/failoverlib.py's: 4 keep-alive clients
alternating GET and POST (2 KiB body), each request with its own id; a
failure is anything but a 200 carrying that id. It is "in flight" when the
killed backend had the request (it logged the id, or the client sent it
before the kill and was still waiting); every other failure is a request that
never reached the killed backend, one a proxy could have sent elsewhere.

Each proxy runs with its documented defaults plus the failover settings its
users usually set, the same ejection numbers for all three (one failure takes
a server out for 10 s):

  holdfast   defaults (max_fails 1, fail_timeout 10s; a request that reached
             no backend goes to the other server, POST included)
  nginx      max_fails=1 fail_timeout=10s, proxy_next_upstream error timeout
             (its default; non_idempotent NOT set, as users run it), keepalive 32
  HAProxy    option redispatch, retries 3, `check` on each server (inter 2s)
"""

import os
import time

import failoverlib

KILL_EVERY = 5.0
DOWN_FOR = 1.0
CLIENTS = 4
BODY = 2048


def nginx_conf(common, d, port, servers):
    head, temps = common(d, 1, 1024)
    ups = "\n".join("    server 127.0.0.1:%d max_fails=1 fail_timeout=10s;" % s for s in servers)
    return head + """
http {
  access_log off;
  keepalive_requests 100000000;
%(temps)s
  upstream fo {
%(ups)s
    keepalive 32;
  }
  server {
    listen 127.0.0.1:%(port)d;
    location / {
      proxy_pass http://fo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout;
      proxy_connect_timeout 2s;
    }
  }
}
""" % {"temps": temps, "ups": ups, "port": port}


def holdfast_conf(port, servers, workers):
    lines = ['listen: ["127.0.0.1:%d"]' % port, "workers: %d" % workers, "drain_timeout: 2s",
             "client: {keepalive_requests: 100000000}", "upstreams:", "  app:", "    servers:"]
    lines += ["      - 127.0.0.1:%d" % s for s in servers]
    lines += ['log: {level: info, access: "off"}']
    return "\n".join(lines) + "\n"


def start_proxy(bench, b, name, d, port, servers):
    """Starts one proxy in front of `servers` with its failover settings; returns its Proc.
    `b` is bench.py's module (Proc, start_nginx, nginx_common)."""
    os.makedirs(d, exist_ok=True)
    if name == "nginx":
        return b.start_nginx("fo-nginx", d, nginx_conf(b.nginx_common, d, port, servers))
    if name == "haproxy":
        return b.proxy_haproxy("fo-haproxy", d, port, servers, bench.args.workers, reuse=None,
                               defaults_extra=("option redispatch", "retries 3"), server_opts=" check inter 2s")
    path = os.path.join(d, "holdfast.yaml")
    with open(path, "w") as f:
        f.write(holdfast_conf(port, servers, bench.args.workers))
    return b.Proc("fo-holdfast", [bench.holdfast_bin, "-c", path], d)


def run(bench, b):
    """Runs the row for every proxy among bench.targets; returns its results dict.
    `bench` is the Bench, `b` bench.py's module (its process and timing helpers)."""
    duration = 20.0 if bench.quick else 60.0
    rows = []
    for name in ("holdfast", "nginx", "haproxy"):
        if name not in bench.targets:
            continue
        d = os.path.join(bench.workdir, "failover-" + name)
        os.makedirs(d, exist_ok=True)
        victim = failoverlib.Backend("victim", failoverlib.free_port(), d)
        steady = failoverlib.Backend("steady", failoverlib.free_port(), d)
        row = {"proxy": name}
        proc = None
        try:
            victim.start()
            steady.start()
            port = b.free_port()
            proc = start_proxy(bench, b, name, d, port, [victim.port, steady.port])
            if not b.wait_listening(port, proc):
                raise RuntimeError("did not start: %s" % proc.stderr_text()[-300:].strip())
            time.sleep(0.5 if name != "haproxy" else 2.5)  # HAProxy: first checks pass
            b.log("failover: %s, %d s, kill every %.0f s" % (name, duration, KILL_EVERY))
            s0, o0, t0 = b.system_busy_seconds(), b.own_seconds(), time.monotonic()
            r = failoverlib.run_load(port, victim, duration=duration, kill_every=KILL_EVERY, down_for=DOWN_FOR,
                                     clients=CLIENTS, body_size=BODY)
            foreign = max(0.0, (b.system_busy_seconds() - s0) - (b.own_seconds() - o0)) / (time.monotonic() - t0)
            r["lost_examples"] = [list(x[:3]) for x in r["lost_examples"]]
            r["foreign_cpus"] = round(foreign, 2)
            row.update(r)
            if not proc.alive():
                row["error"] = "exited during the run (code %s)" % proc.popen.returncode
        except Exception as e:  # report the other proxies anyway
            row["error"] = "%s: %s" % (type(e).__name__, e)
        finally:
            if proc:
                proc.stop()
            victim.stop()
            steady.stop()
        if "error" in row:
            bench.note("failover %s: %s" % (name, row["error"]))
        elif row["foreign_cpus"] > 0.5:
            bench.note("other processes used %.2f CPUs during the failover run of %s" % (row["foreign_cpus"], name))
        rows.append(row)
    return {"duration_s": duration, "kill_every_s": KILL_EVERY, "down_for_s": DOWN_FOR, "clients": CLIENTS,
            "body": BODY, "rows": rows}


def markdown(L, fo):
    if not fo:
        return
    L.append("")
    L.append("## Failover: a backend killed and restarted under load")
    L.append("")
    L.append("Two backends; one is SIGKILLed every %.0f s for %.0f s and restarted %.0f s later. %d keep-alive "
             "clients alternate GET and POST (%d-byte body). *In flight*: failures of requests the killed backend "
             "had already received (nobody can save those without risking a second execution). *Lost*: failures "
             "of requests that never reached it. Settings: holdfast defaults (max_fails 1, fail_timeout 10s); "
             "nginx `max_fails=1 fail_timeout=10s`, `proxy_next_upstream error timeout` (default, without "
             "`non_idempotent`), `keepalive 32`; HAProxy `option redispatch`, `retries 3`, `check inter 2s`."
             % (fo["kill_every_s"], fo["duration_s"], fo["down_for_s"], fo["clients"], fo["body"]))
    L.append("")
    L.append("| proxy | requests | kills | failed | in flight | lost | lost POSTs |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for r in fo["rows"]:
        if "error" in r:
            L.append("| %s | error: %s | | | | | |" % (r["proxy"], r["error"][:80]))
            continue
        L.append("| %s | %d | %d | %d | %d | %d | %d |" % (r["proxy"], r["requests"], r["kills"], r["failures"],
                                                          r["in_flight_failures"], r["lost"], r["lost_posts"]))
