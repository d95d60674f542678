"""NUL octets are refused, long lines are kept whole: with smtplib, imaplib, poplib.

usage: forbidden_octets.py HOST SMTP_PORT IMAP_PORT POP3_PORT USER PASSWORD

* SMTP DATA with a NUL gets 550 5.6.0 and the same connection then sends a
  clean message (RFC 5321 4.2.5: the session goes on).
* IMAP APPEND with a NUL gets NO [PARSE] (RFC 3501 4.3: no NUL in a
  literal), and the session appends a clean message next.
* A 100,000-octet line (RFC 5321 4.5.3.1.6 caps lines at 1,000; ringmail
  accepts and stores it whole) comes back intact through IMAP FETCH and
  POP3 RETR.
USER's mailbox must be empty.
"""
import imaplib
import poplib
import smtplib
import sys

from common import check, eq, joined, run, strip_trace

HOST = sys.argv[1]
SMTP_PORT, IMAP_PORT, POP3_PORT = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
USER, PASSWORD = sys.argv[5], sys.argv[6]

LONG = b"From: probe@example.test\r\nSubject: long line\r\n\r\nshort\r\n" + b"L" * 100000 + b"\r\nend\r\n"


def smtp():
    s = smtplib.SMTP(HOST, SMTP_PORT, timeout=30)
    s.ehlo("probe.test")
    try:
        s.sendmail("probe@example.test", [USER], b"Subject: nul\r\n\r\nbefore\x00after\r\n")
        raise AssertionError("a message with NUL was accepted")
    except smtplib.SMTPDataError as e:
        eq(e.smtp_code, 550, "reply to DATA with NUL")
        check(e.smtp_error.startswith(b"5.6.0"), "enhanced code: %r" % e.smtp_error)
    s.sendmail("probe@example.test", [USER], b"Subject: clean\r\n\r\nno nul here\r\n")
    s.sendmail("probe@example.test", [USER], LONG)
    s.quit()


def imap():
    m = imaplib.IMAP4(HOST, IMAP_PORT)
    m.login(USER, PASSWORD)
    typ, data = m.append("INBOX", None, None, b"Subject: nul\r\n\r\na\x00b\r\n")
    eq(typ, "NO", "APPEND with NUL")
    check(data[0].startswith(b"[PARSE]"), "response code: %r" % data)
    typ, data = m.append("INBOX", None, None, b"Subject: appended\r\n\r\nclean\r\n")
    eq(typ, "OK", "clean APPEND after the refusal")
    m.select("INBOX", readonly=True)
    typ, data = m.search(None, "SUBJECT", '"long line"')
    eq(typ, "OK", "SEARCH")
    nums = data[0].split()
    eq(len(nums), 1, "messages with the long line")
    typ, data = m.fetch(nums[0], "(BODY.PEEK[])")
    eq(typ, "OK", "FETCH")
    eq(strip_trace(data[0][1])[1], LONG, "long line over IMAP")
    typ, data = m.search(None, "ALL")
    eq(len(data[0].split()), 3, "messages stored (clean, long, appended)")
    m.logout()


def pop3():
    p = poplib.POP3(HOST, POP3_PORT, timeout=30)
    # poplib's default line limit (2048) is itself a client policy; lift it.
    poplib._MAXLINE = 200000
    p.user(USER)
    p.pass_(PASSWORD)
    found = False
    for i in range(1, p.stat()[0] + 1):
        _, lines, _ = p.retr(i)
        msg = joined(lines)
        if b"Subject: long line" in msg:
            eq(strip_trace(msg)[1], LONG, "long line over POP3")
            found = True
        check(b"\x00" not in msg, "NUL in message %d" % i)
    check(found, "long-line message not found over POP3")
    p.quit()


def main():
    smtp()
    imap()
    pop3()


run(main)
