#!/usr/bin/env python3
"""EXISTS latency under IDLE: SESSIONS IMAP sessions of one account, INBOX
selected, in IDLE; DELIVERIES messages over SMTP, one every INTERVAL
seconds; per delivery and session, the time from the SMTP `250` to that
session's `* n EXISTS`.

Both times are the kernel's receive timestamps (SO_TIMESTAMPNS) of the
client's sockets, so they do not depend on when this single-threaded client
got round to reading each socket; the times at which the client read them
are reported too ("as read").

usage: imap_idle_wakeup.py IMAP_HOST:PORT SMTP_HOST:PORT USER PASSWORD
       [--sessions 1000] [--deliveries 20] [--interval 1.0] [--json FILE]
"""
import argparse
import json
import re
import select
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = 35  # asm-generic/socket.h (SO_TIMESTAMPNS_OLD); also the cmsg type
EXISTS = re.compile(rb"\* (\d+) EXISTS\r\n")


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def connect(a):
    s = socket.create_connection(a, timeout=120)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    return s


def recv_ts(s):
    """(data, kernel receive time of its first byte, time read), both in ns."""
    data, anc, _, _ = s.recvmsg(65536, 64)
    read = time.time_ns()
    kernel = read
    for level, kind, d in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", d[:16])
            kernel = sec * 1_000_000_000 + nsec
    return data, kernel, read


def read_until(s, buf, pattern):
    while not re.search(pattern, buf):
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("connection closed; have %r" % buf[-300:])
        buf += chunk
    return buf


def idle_session(a, user, password):
    """A session logged in, INBOX selected, in IDLE; returns (socket, EXISTS)."""
    s = connect(a)
    buf = read_until(s, b"", rb"\r\n")
    s.sendall(b'a LOGIN "%s" "%s"\r\nb SELECT INBOX\r\nc IDLE\r\n' % (user.encode(), password.encode()))
    buf = read_until(s, buf, rb"(^|\r\n)(\+ [^\r\n]*|[abc] (NO|BAD)[^\r\n]*)\r\n")
    if b"\r\na OK" not in buf or b"\r\nb OK" not in buf:
        sys.exit("LOGIN/SELECT/IDLE failed: %r" % buf[-300:])
    return s, int(EXISTS.search(buf).group(1))


def smtp_reply(s, expect):
    buf = b""
    while not re.search(rb"(^|\r\n)\d{3} [^\r\n]*\r\n$", buf):
        data, kernel, read = recv_ts(s)
        if not data:
            sys.exit("SMTP connection closed")
        buf += data
    if not buf.startswith(expect):
        sys.exit("SMTP: expected %r, got %r" % (expect, buf))
    return kernel, read


def drain(ep, by_fd):
    """Read what the sessions still have (RECENT lines after an EXISTS), so
    that the next delivery's first read starts with its own bytes."""
    while True:
        ready = ep.poll(0.2)
        if not ready:
            return
        for fd, _ in ready:
            recv_ts(by_fd[fd])


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("imap")
    ap.add_argument("smtp")
    ap.add_argument("user")
    ap.add_argument("password")
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--deliveries", type=int, default=20)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--json")
    o = ap.parse_args()

    t0 = time.monotonic()
    socks, base = [], None
    for _ in range(o.sessions):
        s, n = idle_session(addr(o.imap), o.user, o.password)
        socks.append(s)
        base = n if base is None else base
    print("%d sessions in IDLE in %.1f s (INBOX: %d messages)"
          % (len(socks), time.monotonic() - t0, base), file=sys.stderr)
    time.sleep(1)
    ep = select.epoll()
    by_fd = {}
    for s in socks:
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = s

    smtp = connect(addr(o.smtp))
    smtp_reply(smtp, b"220")
    smtp.sendall(b"EHLO bench.test\r\n")
    smtp_reply(smtp, b"250")
    rows, kernel_ms, read_ms, data_ms, data250_ms = [], [], [], [], []
    for k in range(1, o.deliveries + 1):
        drain(ep, by_fd)
        start = time.monotonic()
        want = base + k
        smtp.sendall(b"MAIL FROM:<bench@bench.test>\r\n")
        smtp_reply(smtp, b"250")
        smtp.sendall(b"RCPT TO:<%s>\r\n" % o.user.encode())
        smtp_reply(smtp, b"250")
        smtp.sendall(b"DATA\r\n")
        smtp_reply(smtp, b"354")
        sent = time.time_ns()
        smtp.sendall(b"From: <bench@bench.test>\r\nTo: <%s>\r\nSubject: wake-up %d\r\n\r\n"
                     b"Delivery %d of the IDLE wake-up benchmark.\r\n.\r\n" % (o.user.encode(), k, k))
        k250, r250 = smtp_reply(smtp, b"250")
        bufs, got = {}, {}
        deadline = time.monotonic() + 30
        while len(got) < len(socks) and time.monotonic() < deadline:
            for fd, _ in ep.poll(1.0):
                data, kernel, read = recv_ts(by_fd[fd])
                if not data:
                    sys.exit("an IMAP session was closed")
                if fd in got:
                    continue
                b = bufs.get(fd, b"") + data
                bufs[fd] = b
                m = EXISTS.search(b)
                if m and int(m.group(1)) >= want:
                    got[fd] = (kernel, read)
        if len(got) < len(socks):
            sys.exit("delivery %d: %d of %d sessions saw no EXISTS within 30 s"
                     % (k, len(socks) - len(got), len(socks)))
        ks = [(kt - k250) / 1e6 for kt, _ in got.values()]
        rs = [(rt - r250) / 1e6 for _, rt in got.values()]
        kernel_ms += ks
        read_ms += rs
        data_ms += [(kt - sent) / 1e6 for kt, _ in got.values()]
        data250_ms.append((k250 - sent) / 1e6)
        rows.append({"delivery": k, "p50_ms": pct(ks, 50), "max_ms": max(ks), "min_ms": min(ks),
                     "before_250": sum(1 for x in ks if x < 0), "data_to_250_ms": data250_ms[-1]})
        print("delivery %2d: end of DATA to 250 %6.2f ms; EXISTS after the 250: min %7.2f  p50 %7.2f"
              "  max %7.2f ms (as read: p50 %7.2f  max %7.2f)"
              % (k, data250_ms[-1], min(ks), pct(ks, 50), max(ks), pct(rs, 50), max(rs)), file=sys.stderr)
        time.sleep(max(0.0, o.interval - (time.monotonic() - start)))
    smtp.sendall(b"QUIT\r\n")
    smtp.close()
    for s in socks:
        s.close()

    def summary(xs):
        return {"min": min(xs), "p50": pct(xs, 50), "p99": pct(xs, 99), "max": max(xs),
                "within_50ms": sum(1 for x in xs if x <= 50) / len(xs)}
    result = {"sessions": len(socks), "deliveries": o.deliveries, "samples": len(kernel_ms),
              "kernel_ms": summary(kernel_ms), "read_ms": summary(read_ms),
              "data_to_exists_ms": summary(data_ms), "data_to_250_ms": summary(data250_ms),
              "before_250": sum(1 for x in kernel_ms if x < 0), "per_delivery": rows}
    if o.json:
        with open(o.json, "w") as f:
            json.dump(result, f, indent=1)
    k_, r_, d_, a_ = (result[x] for x in ("kernel_ms", "read_ms", "data_to_exists_ms", "data_to_250_ms"))
    print("EXISTS after 250 over %d samples: p50 %.2f ms, p99 %.2f ms, max %.2f ms, min %.2f ms, "
          "%.1f%% within 50 ms; as read by the client: p50 %.2f, p99 %.2f, max %.2f ms; "
          "end of DATA to EXISTS: p50 %.2f, p99 %.2f, max %.2f ms; end of DATA to 250: p50 %.2f, max %.2f ms"
          % (len(kernel_ms), k_["p50"], k_["p99"], k_["max"], k_["min"], 100 * k_["within_50ms"],
             r_["p50"], r_["p99"], r_["max"], d_["p50"], d_["p99"], d_["max"], a_["p50"], a_["max"]))


main()
