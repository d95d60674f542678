"""COMPRESS=DEFLATE (RFC 4978) with Python's zlib over a raw socket.

usage: imap_compress.py HOST PORT USER PASSWORD TLS(0|1) SMTP_PORT N

USER's INBOX holds N messages appended by the caller, message i being
message(i) below. Logs in, checks the capability, turns compression on,
then SELECT, FETCH 1:* BODY.PEEK[] (every body compared), a second
COMPRESS (BAD [COMPRESSIONACTIVE]), a deflate bomb (32 MiB of one octet
without a line end, about 32 KiB compressed: refused as too long, the
session goes on), IDLE woken by an SMTP delivery, and
LOGOUT, all compressed. Prints "plain=<octets> wire=<octets>" for the
server's output after COMPRESS.
"""
import re
import smtplib
import socket
import ssl
import sys
import zlib

from common import check, eq, run

HOST, PORT, USER, PASSWORD, TLS, SMTP_PORT, N = (
    sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1",
    int(sys.argv[6]), int(sys.argv[7]))


def message(i):
    lines = "".join("Line %d of message %d: the quick brown fox jumps over the lazy dog.\r\n"
                    % (j, i) for j in range(40))
    return ("From: <sender@example.test>\r\nTo: <%s>\r\nSubject: compress %d\r\n\r\n%s"
            % (USER, i, lines)).encode()


class Conn:
    def __init__(self):
        s = socket.create_connection((HOST, PORT), timeout=30)
        if TLS:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname="localhost")
        self.s = s
        self.buf = b""
        self.z_out = None
        self.z_in = None
        self.wire_in = 0
        self.plain_in = 0
        self.n = 0

    def send(self, data):
        if self.z_out:
            data = self.z_out.compress(data) + self.z_out.flush(zlib.Z_SYNC_FLUSH)
        self.s.sendall(data)

    def more(self):
        chunk = self.s.recv(65536)
        check(chunk, "connection closed; have %r" % self.buf[-200:])
        if self.z_in:
            self.wire_in += len(chunk)
            chunk = self.z_in.decompress(chunk)
            self.plain_in += len(chunk)
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self.more()
        i = self.buf.index(b"\r\n")
        line, self.buf = self.buf[:i], self.buf[i + 2:]
        return line

    def take(self, n):
        while len(self.buf) < n:
            self.more()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self):
        """One response line with its literals inline."""
        out = self.line()
        while True:
            m = re.search(rb"\{(\d+)\}$", out)
            if not m:
                return out
            out += b"\r\n" + self.take(int(m.group(1))) + self.line()

    def cmd(self, text):
        self.n += 1
        tag = b"c%d" % self.n
        self.send(tag + b" " + text.encode() + b"\r\n")
        untagged = []
        while True:
            r = self.response()
            if r.startswith(tag + b" "):
                return untagged, r[len(tag) + 1:]
            untagged.append(r)


def main():
    c = Conn()
    check(c.line().startswith(b"* OK"), "greeting")
    _, st = c.cmd("COMPRESS DEFLATE")
    check(st.startswith(b"BAD"), "COMPRESS before login: %r" % st)
    _, st = c.cmd('LOGIN "%s" "%s"' % (USER, PASSWORD))
    check(st.startswith(b"OK"), "LOGIN %r" % st)
    u, st = c.cmd("CAPABILITY")
    check(b"COMPRESS=DEFLATE" in u[0].split(), "capability %r" % u)
    _, st = c.cmd("COMPRESS LZMA")
    check(st.startswith(b"BAD"), "unknown mechanism: %r" % st)
    _, st = c.cmd("COMPRESS DEFLATE")
    eq(st, b"OK DEFLATE active", "COMPRESS")
    c.z_out = zlib.compressobj(6, zlib.DEFLATED, -15)
    c.z_in = zlib.decompressobj(-15)
    check(c.buf == b"", "plain bytes after the OK: %r" % c.buf)
    u, st = c.cmd("SELECT INBOX")
    check(st.startswith(b"OK"), "SELECT %r" % st)
    check(b"* %d EXISTS" % N in u, "EXISTS in %r" % u)
    u, st = c.cmd("FETCH 1:* (BODY.PEEK[])")
    check(st.startswith(b"OK"), "FETCH %r" % st)
    eq(len(u), N, "FETCH responses")
    for i, r in enumerate(u, 1):
        m = re.match(rb"\* (\d+) FETCH \(BODY\[\] \{(\d+)\}\r\n", r)
        check(m, "FETCH response %r" % r[:100])
        body = r[m.end():m.end() + int(m.group(2))]
        eq(body, message(i), "body of message %d" % i)
    _, st = c.cmd("COMPRESS DEFLATE")
    check(st.startswith(b"BAD [COMPRESSIONACTIVE]"), "second COMPRESS %r" % st)
    # A deflate bomb: the server inflates no more than its bounded command
    # buffer holds, refuses the line and goes on.
    for _ in range(32):
        c.send(b"A" * (1 << 20))
    c.send(b"\r\n")
    l = c.line()
    check(l.startswith(b"* BAD") or b" BAD " in l, "bomb answer %r" % l[:200])
    _, st = c.cmd("NOOP")
    check(st.startswith(b"OK"), "NOOP after the bomb %r" % st)
    # IDLE: a delivery's EXISTS arrives through the compressed stream.
    c.n += 1
    tag = b"c%d" % c.n
    c.send(tag + b" IDLE\r\n")
    check(c.line().startswith(b"+"), "IDLE continuation")
    smtp = smtplib.SMTP(HOST, SMTP_PORT, timeout=30)
    smtp.sendmail("sender@example.test", [USER], message(N + 1))
    smtp.quit()
    while True:
        l = c.line()
        if l == b"* %d EXISTS" % (N + 1):
            break
    c.send(b"DONE\r\n")
    while True:
        l = c.line()
        if l.startswith(tag + b" "):
            check(l.startswith(tag + b" OK"), "IDLE end %r" % l)
            break
    u, st = c.cmd("LOGOUT")
    check(st.startswith(b"OK"), "LOGOUT %r" % st)
    print("plain=%d wire=%d" % (c.plain_in, c.wire_in))


run(main)
