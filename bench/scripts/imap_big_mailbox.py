#!/usr/bin/env python3
"""A large INBOX: the server's VmRSS with N sessions that SELECTed it minus
the same N sessions only logged in (bytes per selected session and
message), then the times of SELECT, FETCH 1:* (UID FLAGS), UID SEARCH
UNSEEN, UID FETCH <last 11 UIDs>:* (FLAGS) and a few more (each with the
server's CPU time, from /proc/PID/task/*/schedstat), before and after
STORE 1:<all but the last 1%> +FLAGS.SILENT (\\Seen).

usage: imap_big_mailbox.py HOST:PORT SERVER_PID USER PASSWORD
       [--sessions 1,10,100] [--repeat 5] [--json FILE]
"""
import argparse
import json
import os
import re
import socket
import statistics
import sys
import time


class Session:
    def __init__(self, addr, user, password):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=120)
        self.n = 0
        self.buf = bytearray()
        while b"\r\n" not in self.buf:
            self.buf += self.s.recv(65536)
        self.buf.clear()
        self.cmd('LOGIN "%s" "%s"' % (user, password))

    def cmd(self, text):
        """Send one command, read to its tagged OK: (response bytes, seconds)."""
        self.n += 1
        tag = b"t%d " % self.n
        t = time.perf_counter()
        self.s.sendall(tag + text.encode() + b"\r\n")
        buf, scan, i = self.buf, 0, -1
        while True:
            if i < 0:  # where the tagged line starts, searching only new bytes
                j = buf.find(b"\r\n" + tag, max(0, scan - len(tag) - 2))
                i = 0 if buf.startswith(tag) else j + 2 if j >= 0 else -1
            end = buf.find(b"\r\n", i) if i >= 0 else -1
            if end >= 0:
                break
            scan = len(buf)
            chunk = self.s.recv(1 << 20)
            if not chunk:
                sys.exit("connection closed after %r" % text)
            buf += chunk
        took = time.perf_counter() - t
        status = bytes(buf[i + len(tag):end])
        if not status.startswith(b"OK"):
            sys.exit("%s: %r" % (text, status))
        out = bytes(buf[:end + 2])
        del buf[:end + 2]
        return out, took

    def close(self):
        self.s.close()


def rss_kib(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def cpu_ns(pid):
    """Run time of all the server's threads so far (/proc/PID/task/*/schedstat)."""
    total = 0
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, task)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def settle(pid, field="VmRSS"):
    """VmRSS (or RssAnon) after the server had a moment to give back freed memory."""
    time.sleep(2)
    samples = []
    for _ in range(3):
        samples.append(rss_kib(pid, field))
        time.sleep(0.2)
    return min(samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("imap")
    ap.add_argument("pid", type=int)
    ap.add_argument("user")
    ap.add_argument("password")
    ap.add_argument("--sessions", default="1,10,100")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json")
    o = ap.parse_args()
    res = {"rss_idle_kib": settle(o.pid), "anon_idle_kib": rss_kib(o.pid, "RssAnon"),
           "file_idle_kib": rss_kib(o.pid, "RssFile"), "memory": [], "times": {}}

    probe = Session(o.imap, o.user, o.password)
    out, took = probe.cmd("EXAMINE INBOX")
    messages = int(re.search(rb"\* (\d+) EXISTS", out).group(1))
    res["messages"] = messages
    res["first_examine_ms"] = took * 1000
    probe.close()

    for n in [int(x) for x in o.sessions.split(",")]:
        sessions = [Session(o.imap, o.user, o.password) for _ in range(n)]
        logged_in, anon_in = settle(o.pid), rss_kib(o.pid, "RssAnon")
        for s in sessions:
            s.cmd("SELECT INBOX")
        selected, anon_sel = settle(o.pid), rss_kib(o.pid, "RssAnon")
        per = (selected - logged_in) * 1024 / n / messages
        per_anon = (anon_sel - anon_in) * 1024 / n / messages
        res["memory"].append({"sessions": n, "rss_logged_in_kib": logged_in, "rss_selected_kib": selected,
                              "anon_logged_in_kib": anon_in, "anon_selected_kib": anon_sel,
                              "bytes_per_session_message": per, "anon_bytes_per_session_message": per_anon})
        print("%3d sessions: VmRSS logged in %d KiB, selected %d KiB: %.1f bytes per session and message"
              " (RssAnon %d -> %d KiB: %.1f)" % (n, logged_in, selected, per, anon_in, anon_sel, per_anon),
              file=sys.stderr)
        for s in sessions:
            s.close()

    s = Session(o.imap, o.user, o.password)
    last = messages - 10

    def timed(label, command):
        runs, cpu = [], []
        for _ in range(o.repeat):
            c0 = cpu_ns(o.pid)
            runs.append(s.cmd(command))
            cpu.append((cpu_ns(o.pid) - c0) / 1e6)
        ms = [t * 1000 for _, t in runs]
        res["times"][label] = {"command": command, "median_ms": statistics.median(ms), "min_ms": min(ms),
                               "max_ms": max(ms), "server_cpu_ms": statistics.median(cpu),
                               "response_bytes": len(runs[-1][0])}
        print("%-30s median %8.2f ms  min %8.2f  max %8.2f  server CPU %8.2f ms  (%d bytes)"
              % (label, statistics.median(ms), min(ms), max(ms), statistics.median(cpu), len(runs[-1][0])),
              file=sys.stderr)

    timed("NOOP, nothing selected", "NOOP")
    timed("SELECT", "SELECT INBOX")
    timed("NOOP, INBOX selected", "NOOP")
    timed("FETCH 1:* (UID FLAGS)", "FETCH 1:* (UID FLAGS)")
    timed("UID SEARCH UNSEEN (all)", "UID SEARCH UNSEEN")
    timed("UID FETCH last:* (FLAGS)", "UID FETCH %d:* (FLAGS)" % last)
    timed("FETCH last:* (FLAGS)", "FETCH %d:* (FLAGS)" % last)
    timed("STATUS INBOX (MESSAGES UNSEEN)", "STATUS INBOX (MESSAGES UNSEEN)")
    c0 = cpu_ns(o.pid)
    _, took = s.cmd("STORE 1:%d +FLAGS.SILENT (\\Seen)" % (messages - messages // 100))
    res["store_seen_ms"], res["store_seen_cpu_ms"] = took * 1000, (cpu_ns(o.pid) - c0) / 1e6
    print("STORE 1:%d +FLAGS.SILENT (\\Seen): %.1f ms, server CPU %.1f ms"
          % (messages - messages // 100, took * 1000, res["store_seen_cpu_ms"]), file=sys.stderr)
    timed("UID SEARCH UNSEEN (1%)", "UID SEARCH UNSEEN")
    timed("SELECT (after STORE)", "SELECT INBOX")
    timed("FETCH 1:* (after STORE)", "FETCH 1:* (UID FLAGS)")
    s.close()
    res["rss_end_kib"] = settle(o.pid)
    if o.json:
        with open(o.json, "w") as f:
            json.dump(res, f, indent=1)
    print(json.dumps(res))


main()
