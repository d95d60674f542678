"""A 10 MiB message: smtplib in, poplib out, byte-identical.

usage: big_message.py HOST SMTP_PORT POP3_PORT USER PASSWORD

USER's maildrop must be empty.
"""
import hashlib
import poplib
import random
import smtplib
import sys

from common import eq, joined, run, strip_trace

HOST, SMTP_PORT, POP3_PORT, USER, PASSWORD = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
TARGET = 10 * 1024 * 1024


def build():
    rnd = random.Random(10)
    alphabet = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
    out = [b"From: big@example.test", ("To: %s" % USER).encode(), b"Subject: ten mebibytes",
           b"Message-ID: <big-10mib@e2e.test>", b""]
    size = sum(len(l) + 2 for l in out)
    n = 0
    while size < TARGET:
        n += 1
        length = rnd.choice((0, 1, 40, 76, 200, 998, rnd.randrange(0, 999)))
        line = bytes(rnd.choice(alphabet) for _ in range(min(length, 64)))
        line = (line * (length // max(len(line), 1) + 1))[:length]
        if n % 97 == 0:
            line = b"." + line[1:]
        out.append(line)
        size += len(line) + 2
    return joined(out)


def main():
    message = build()
    assert len(message) >= TARGET
    with smtplib.SMTP(HOST, SMTP_PORT, timeout=60) as s:
        s.ehlo("big.e2e.test")
        eq(s.sendmail("big@example.test", [USER], message, mail_options=["BODY=8BITMIME"]), {}, "refused")
    p = poplib.POP3(HOST, POP3_PORT, timeout=60)
    p.user(USER)
    p.pass_(PASSWORD)
    count, size = p.stat()
    eq(count, 1, "messages")
    resp, lines, _ = p.retr(1)
    stored = joined(lines)
    eq(size, len(stored), "STAT size")
    got = strip_trace(stored)[1]
    eq(hashlib.sha256(got).hexdigest(), hashlib.sha256(message).hexdigest(), "SHA-256 of the 10 MiB message")
    eq(got, message, "10 MiB message")
    p.quit()


run(main)
