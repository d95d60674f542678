#!/usr/bin/env python3
"""COMPRESS=DEFLATE (RFC 4978) against none, over plain IMAP and IMAPS.

Fills USER's INBOX with MESSAGES generated mails (headers of a received
message, a text/plain body of 1-6 KiB: prose from an order-2 word Markov
chain over /usr/share/common-licenses, so no two bodies repeat), then for
each transport and ROUNDS rounds runs one session without and one with
COMPRESS DEFLATE (order alternating: ABBA...), each doing FETCH 1:*
(BODY.PEEK[]) and FETCH 1:* (ENVELOPE FLAGS UID RFC822.SIZE) FETCHES times.
Per FETCH kind it records the TCP payload bytes the client received
(tcpi_bytes_received, so TLS records count as sent), and the server's CPU
time over the leg: utime+stime from /proc/PID/stat (10 ms ticks) and the
sum of its threads' /proc/PID/task/*/schedstat run times (ns).

usage: imap_compress_bench.py IMAP_HOST:PORT IMAPS_HOST:PORT SERVER_PID USER PASSWORD
       [--messages 2000] [--rounds 4] [--fetches 5] [--json FILE]
"""
import argparse
import glob
import json
import os
import random
import re
import socket
import ssl
import statistics
import struct
import sys
import time
import zlib

KINDS = {"body": "FETCH 1:* (BODY.PEEK[])", "envelope": "FETCH 1:* (ENVELOPE FLAGS UID RFC822.SIZE)"}
NAMES = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov",
         "Donald Knuth", "Frances Allen", "Ken Thompson", "Radia Perlman", "John McCarthy"]


def corpus_chain():
    words = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path):
            words += open(path, errors="replace").read().split()
    chain = {}
    for a, b, c in zip(words, words[1:], words[2:]):
        chain.setdefault((a, b), []).append(c)
    return chain


def mails(n, user, seed=1):
    rng = random.Random(seed)
    chain = corpus_chain()
    keys = list(chain)

    def prose(count):
        a, b = rng.choice(keys)
        out = []
        for _ in range(count):
            nxt = chain.get((a, b))
            c = rng.choice(nxt) if nxt else rng.choice(keys)[0]
            out.append(c)
            a, b = b, c
        lines, line = [], ""
        for w in out:
            if len(line) + len(w) + 1 > 72:
                lines.append(line)
                line = w
            else:
                line = (line + " " + w).strip()
        return "\r\n".join(lines + [line])

    for i in range(n):
        name = rng.choice(NAMES)
        addr = name.lower().replace(" ", ".") + "@" + rng.choice(["example.org", "example.net", "lists.example.com"])
        day = 1 + i % 28
        when = "%s, %02d Nov 2026 %02d:%02d:%02d +0000" % (
            ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][day % 7], day, rng.randrange(24),
            rng.randrange(60), rng.randrange(60))
        size = rng.randint(1024, 6144)
        paragraphs = []
        while sum(len(p) for p in paragraphs) < size:
            paragraphs.append(prose(rng.randint(30, 120)))
        head = ("Return-Path: <%s>\r\n"
                "Received: from mx%d.example.org (mx%d.example.org [192.0.2.%d])\r\n"
                "\tby mail.example.test (ringmail) with ESMTPS id %016x\r\n\tfor <%s>; %s\r\n"
                "From: \"%s\" <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\n"
                "Message-ID: <%032x@%s>\r\nMIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                % (addr, rng.randrange(9), rng.randrange(9), rng.randrange(1, 255), rng.getrandbits(64),
                   user, when, name, addr, user, prose(rng.randint(4, 10)), when, rng.getrandbits(128),
                   addr.split("@")[1]))
        yield (head + "\r\n\r\n".join(paragraphs) + "\r\n").encode()


class Conn:
    def __init__(self, addr, tls):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=120)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.s = ctx.wrap_socket(self.s, server_hostname="localhost")
            self.tls = "%s %s" % (self.s.version(), self.s.cipher()[0])
        self.z_out = self.z_in = None
        self.buf = b""
        self.n = 0
        self.plain = 0  # octets of server output after inflating
        self.read_until(b"\r\n")

    def wire_in(self):
        # struct tcp_info: tcpi_bytes_received is the u64 at offset 128.
        return struct.unpack_from("Q", self.s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256), 128)[0]

    def send(self, data):
        if self.z_out:
            data = self.z_out.compress(data) + self.z_out.flush(zlib.Z_SYNC_FLUSH)
        self.s.sendall(data)

    def more(self):
        chunk = self.s.recv(1 << 20)
        if not chunk:
            sys.exit("connection closed; have %r" % self.buf[-200:])
        if self.z_in:
            chunk = self.z_in.decompress(chunk)
        self.plain += len(chunk)
        self.buf += chunk

    def read_until(self, marker):
        """Read until the buffer holds marker; return everything up to its end."""
        while (i := self.buf.find(marker)) < 0:
            self.more()
        out, self.buf = self.buf[:i + len(marker)], self.buf[i + len(marker):]
        return out

    def cmd(self, text, keep=True):
        """Send a command and read its response; with keep=False the untagged
        part is only counted (in self.plain), not kept."""
        self.n += 1
        tag = b"Zq%d " % self.n
        self.send(tag + text.encode() + b"\r\n")
        head = b""
        while not self.buf.startswith(tag):
            i = self.buf.find(b"\r\n" + tag)
            if i >= 0:
                head += self.buf[:i + 2]
                self.buf = self.buf[i + 2:]
                break
            cut = max(0, len(self.buf) - len(tag) - 2)
            if keep:
                head += self.buf[:cut]
            self.buf = self.buf[cut:]
            self.more()
        status = self.read_until(b"\r\n")[len(tag):]
        if not status.startswith(b"OK"):
            sys.exit("%s: %r" % (text, status))
        return head

    def compress(self):
        self.cmd("COMPRESS DEFLATE")
        self.z_out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.z_in = zlib.decompressobj(-15)


def append_all(addr, user, password, messages, count):
    c = Conn(addr, False)
    c.cmd('LOGIN "%s" "%s"' % (user, password))
    batch, total = [], 0
    for i, m in enumerate(messages, 1):
        batch.append(b"A%d APPEND INBOX {%d+}\r\n%s\r\n" % (i, len(m), m))
        total += len(m)
        if len(batch) == 100 or i == count:
            c.send(b"".join(batch))
            c.read_until(b"A%d OK" % i)
            c.read_until(b"\r\n")
            batch = []
    out = c.cmd("SELECT INBOX")
    if b"* %d EXISTS" % count not in out:
        sys.exit("INBOX does not hold %d messages: %r" % (count, out[:300]))
    c.cmd("LOGOUT")
    return total


def server_cpu(pid):
    """(utime+stime seconds from /proc/PID/stat, run time of all threads in ns)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    ns = 0
    for path in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(path) as f:
                ns += int(f.read().split()[0])
        except OSError:
            pass
    return ticks / os.sysconf("SC_CLK_TCK"), ns


def leg(addr, tls, compress, pid, user, password, fetches):
    c = Conn(addr, tls)
    c.cmd('LOGIN "%s" "%s"' % (user, password))
    if compress:
        c.compress()
    c.cmd("SELECT INBOX")
    out = {}
    for kind, command in KINDS.items():
        w0, p0, (s0, n0), t0 = c.wire_in(), c.plain, server_cpu(pid), time.perf_counter()
        for _ in range(fetches):
            c.cmd(command, keep=False)
        t1, (s1, n1) = time.perf_counter(), server_cpu(pid)
        out[kind] = {"wire": (c.wire_in() - w0) / fetches, "plain": (c.plain - p0) / fetches,
                     "cpu_stat_s": (s1 - s0) / fetches, "cpu_ns": (n1 - n0) / fetches,
                     "wall_s": (t1 - t0) / fetches}
    out["tls"] = getattr(c, "tls", None)
    c.cmd("LOGOUT")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("imap")
    ap.add_argument("imaps")
    ap.add_argument("pid", type=int)
    ap.add_argument("user")
    ap.add_argument("password")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--fetches", type=int, default=5)
    ap.add_argument("--json")
    o = ap.parse_args()

    t = time.monotonic()
    n = o.messages
    total = append_all(o.imap, o.user, o.password, mails(n, o.user), n)
    print("appended %d messages, %d octets (mean %d) in %.1f s"
          % (n, total, total // n, time.monotonic() - t), file=sys.stderr)
    legs = []
    for transport, addr, tls in (("plain", o.imap, False), ("tls", o.imaps, True)):
        for r in range(o.rounds):
            for compress in ((False, True) if r % 2 == 0 else (True, False)):
                res = leg(addr, tls, compress, o.pid, o.user, o.password, o.fetches)
                legs.append({"transport": transport, "round": r, "compress": compress, **res})
                print("%-5s round %d %-10s " % (transport, r, "COMPRESS" if compress else "none")
                      + "  ".join("%s: wire %.0f, plain %.0f, server CPU %.1f ms (stat %.0f ms), %.0f ms"
                                  % (k, v["wire"], v["plain"], v["cpu_ns"] / 1e6, v["cpu_stat_s"] * 1e3,
                                     v["wall_s"] * 1e3) for k, v in res.items() if k != "tls"), file=sys.stderr)
    rows = []
    for transport in ("plain", "tls"):
        for kind in KINDS:
            def med(compress, field):
                return statistics.median(l[kind][field] for l in legs
                                         if l["transport"] == transport and l["compress"] == compress)
            def tot(compress):  # 10 ms ticks: only the sum over all legs means much
                return sum(l[kind]["cpu_stat_s"] for l in legs
                           if l["transport"] == transport and l["compress"] == compress)
            rows.append({"transport": transport, "fetch": KINDS[kind],
                         "wire_none": med(False, "wire"), "wire_compress": med(True, "wire"),
                         "wire_ratio": med(True, "wire") / med(False, "wire"),
                         "cpu_ms_none": med(False, "cpu_ns") / 1e6, "cpu_ms_compress": med(True, "cpu_ns") / 1e6,
                         "cpu_ratio": med(True, "cpu_ns") / med(False, "cpu_ns"),
                         "stat_cpu_ratio": tot(True) / max(tot(False), 1e-9),
                         "wall_ms_none": med(False, "wall_s") * 1e3,
                         "wall_ms_compress": med(True, "wall_s") * 1e3})
    print("TLS: %s" % next(l["tls"] for l in legs if l["tls"]), file=sys.stderr)
    if o.json:
        with open(o.json, "w") as f:
            json.dump({"messages": n, "octets": total, "legs": legs, "rows": rows}, f, indent=1)
    print("| transport | command | wire bytes, none | with COMPRESS | ratio | server CPU ms, none | with COMPRESS"
          " | ratio (schedstat) | ratio (stat, all legs) | client wall ms, none / with |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print("| %s | `%s` | %.0f | %.0f | **%.3f** | %.1f | %.1f | **%.2f** | %.2f | %.0f / %.0f |"
              % (r["transport"], r["fetch"], r["wire_none"], r["wire_compress"], r["wire_ratio"],
                 r["cpu_ms_none"], r["cpu_ms_compress"], r["cpu_ratio"], r["stat_cpu_ratio"],
                 r["wall_ms_none"], r["wall_ms_compress"]))


if __name__ == "__main__":
    main()
