"""Dot-stuffing and 8-bit content survive SMTP in and POP3 out unchanged.

usage: dots_8bit.py HOST SMTP_PORT POP3_PORT USER PASSWORD

smtplib stuffs leading dots (RFC 5321 4.5.2) and poplib removes the POP3
byte-stuffing (RFC 1939 3); what poplib returns, minus the server's
Return-Path and Received lines, must be the original bytes. USER's
maildrop must be empty.
"""
import poplib
import smtplib
import sys

from common import check, eq, joined, run, strip_trace

HOST, SMTP_PORT, POP3_PORT, USER, PASSWORD = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

raw_high = bytes(range(0x80, 0x100))
lines = [
    b"From: dots@example.test",
    ("To: %s" % USER).encode(),
    "Subject: =?utf-8?q?dots?= \u00fcber caf\u00e9".encode("utf-8"),
    b"Message-ID: <dots-8bit@e2e.test>",
    b"MIME-Version: 1.0",
    b"Content-Type: text/plain; charset=utf-8",
    b"Content-Transfer-Encoding: 8bit",
    b"",
    b".",
    b"..",
    b"...",
    b". a line starting with dot space",
    b".leading dot",
    b"..two leading dots",
    b"middle . dot and trailing dot .",
    b"",
    b".",
    b"",
    "UTF-8: gr\u00fc\u00dfe, \u65e5\u672c\u8a9e, emoji \U0001F600, \u0645\u0631\u062d\u0628\u0627".encode("utf-8"),
    b"raw high bytes: " + raw_high,
    b"\x80\xff\xfe leading high bytes",
    b"." + raw_high,
    b"x" * 998,
    b"." + b"y" * 997,
    b"tab\tand spaces   ",
    b"",
    b"the end",
    b".",
]
MESSAGE = joined(lines)


def main():
    with smtplib.SMTP(HOST, SMTP_PORT, timeout=15) as s:
        code, resp = s.ehlo("dots.e2e.test")
        eq(code, 250, "EHLO")
        check(s.has_extn("8bitmime"), "EHLO does not list 8BITMIME")
        refused = s.sendmail("dots@example.test", [USER], MESSAGE, mail_options=["BODY=8BITMIME"])
        eq(refused, {}, "refused recipients")
        # The same bytes once more, declared with SMTPUTF8 as well (RFC 6531).
        check(s.has_extn("smtputf8"), "EHLO does not list SMTPUTF8")
        refused = s.sendmail("dots@example.test", [USER], MESSAGE, mail_options=["BODY=8BITMIME", "SMTPUTF8"])
        eq(refused, {}, "refused recipients (SMTPUTF8)")

    p = poplib.POP3(HOST, POP3_PORT, timeout=15)
    p.user(USER)
    p.pass_(PASSWORD)
    count, size = p.stat()
    eq(count, 2, "messages in the maildrop")
    total = 0
    for n in (1, 2):
        resp, got, _ = p.retr(n)
        stored = joined(got)
        total += len(stored)
        eq(strip_trace(stored)[1], MESSAGE, "message %d after SMTP and POP3" % n)
    eq(size, total, "STAT octets equal the retrieved sizes")
    p.quit()


run(main)
