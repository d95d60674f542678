"""A full POP3 session with poplib (RFC 1939, RFC 2449 CAPA).

usage: pop3_session.py HOST SMTP_PORT POP3_PORT USER PASSWORD

Delivers three known messages to USER with smtplib first (USER's maildrop
must be empty), then checks CAPA, bad password, STAT, LIST, UIDL, TOP, RETR,
DELE, RSET, NOOP, the [IN-USE] lock, QUIT and that DELE+QUIT persists.
"""
import poplib
import re
import smtplib
import sys

from common import Mismatch, check, eq, joined, run, strip_trace

HOST, SMTP_PORT, POP3_PORT, USER, PASSWORD = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]


def message(i):
    headers = [
        b"From: Sender <sender@example.test>",
        ("To: <%s>" % USER).encode(),
        ("Subject: poplib message %d" % i).encode(),
        ("Message-ID: <pop3-session-%d@e2e.test>" % i).encode(),
    ]
    body = [("body line %d of message %d" % (n, i)).encode() for n in range(1, 6 + i)]
    body.insert(2, b".starts with a dot")
    return headers, body, joined(headers + [b""] + body)


MESSAGES = [message(i) for i in (1, 2, 3)]


def login(p, password=PASSWORD):
    p.user(USER)
    return p.pass_(password)


def main():
    with smtplib.SMTP(HOST, SMTP_PORT, timeout=15) as s:
        s.ehlo("poplib.e2e.test")
        for _, _, raw in MESSAGES:
            refused = s.sendmail("sender@example.test", [USER], raw)
            eq(refused, {}, "refused recipients")

    p = poplib.POP3(HOST, POP3_PORT, timeout=15)
    check(p.getwelcome().startswith(b"+OK"), "greeting %r" % p.getwelcome())
    capa = p.capa()
    for c in ("TOP", "UIDL", "USER", "PIPELINING"):
        check(c in capa, "CAPA lacks %s: %r" % (c, capa))

    # A wrong password: -ERR [AUTH] (RFC 3206), the connection stays usable.
    try:
        login(p, "wrong-" + PASSWORD)
        raise Mismatch("wrong password accepted")
    except poplib.error_proto as e:
        check(str(e).startswith("b'-ERR [AUTH]"), "bad password reply: %s" % e)
    resp = login(p)
    check(resp.startswith(b"+OK"), "PASS: %r" % resp)

    # The maildrop is locked: a second session gets [IN-USE].
    q = poplib.POP3(HOST, POP3_PORT, timeout=15)
    try:
        login(q)
        raise Mismatch("second login to a locked maildrop succeeded")
    except poplib.error_proto as e:
        check(str(e).startswith("b'-ERR [IN-USE]"), "second login reply: %s" % e)
    q.close()

    retrieved = []
    for n in (1, 2, 3):
        resp, lines, _ = p.retr(n)
        check(resp.startswith(b"+OK"), "RETR %d: %r" % (n, resp))
        stored = joined(lines)
        trace, original = strip_trace(stored)
        eq(original, MESSAGES[n - 1][2], "RETR %d body" % n)
        check(trace.startswith(b"Return-Path: <sender@example.test>\r\n"), "Return-Path: %r" % trace)
        retrieved.append(stored)

    sizes = [len(m) for m in retrieved]
    eq(p.stat(), (3, sum(sizes)), "STAT")
    resp, listing, _ = p.list()
    check(resp.startswith(b"+OK"), "LIST: %r" % resp)
    eq(listing, [("%d %d" % (i + 1, s)).encode() for i, s in enumerate(sizes)], "LIST")
    eq(p.list(2), ("+OK 2 %d" % sizes[1]).encode(), "LIST 2")
    try:
        p.list(4)
        raise Mismatch("LIST 4 of 3 messages succeeded")
    except poplib.error_proto:
        pass

    resp, uidls, _ = p.uidl()
    ids = []
    for i, l in enumerate(uidls):
        n, uid = l.split(b" ", 1)
        eq(int(n), i + 1, "UIDL numbering")
        check(re.fullmatch(rb"\d+\.\d+", uid), "UIDL id %r is not <uidvalidity>.<uid>" % uid)
        ids.append(uid)
    eq(len(ids), 3, "UIDL entries")
    eq(len(set(ids)), 3, "UIDL ids must be unique")
    eq(p.uidl(3), b"+OK 3 " + ids[2], "UIDL 3")

    headers, body, _ = MESSAGES[1]
    trace_lines = strip_trace(retrieved[1])[0].split(b"\r\n")[:-1]
    resp, lines, _ = p.top(2, 0)
    eq(lines, trace_lines + headers + [b""], "TOP 2 0")
    resp, lines, _ = p.top(2, 3)
    eq(lines, trace_lines + headers + [b""] + body[:3], "TOP 2 3")
    resp, lines, _ = p.top(2, 1000)
    eq(lines, trace_lines + headers + [b""] + body, "TOP 2 1000")

    check(p.dele(2).startswith(b"+OK"), "DELE 2")
    eq(p.stat(), (2, sizes[0] + sizes[2]), "STAT after DELE 2")
    for cmd in (lambda: p.retr(2), lambda: p.list(2), lambda: p.dele(2), lambda: p.top(2, 0), lambda: p.uidl(2)):
        try:
            cmd()
            raise Mismatch("a command on a deleted message succeeded")
        except poplib.error_proto:
            pass
    resp, listing, _ = p.list()
    eq(listing, [("1 %d" % sizes[0]).encode(), ("3 %d" % sizes[2]).encode()], "LIST after DELE")
    check(p.rset().startswith(b"+OK"), "RSET")
    eq(p.stat(), (3, sum(sizes)), "STAT after RSET")
    check(p.noop().startswith(b"+OK"), "NOOP")

    check(p.dele(1).startswith(b"+OK"), "DELE 1")
    check(p.quit().startswith(b"+OK"), "QUIT")

    p = poplib.POP3(HOST, POP3_PORT, timeout=15)
    login(p)
    eq(p.stat(), (2, sizes[1] + sizes[2]), "STAT in a new session after DELE 1 + QUIT")
    resp, uidls, _ = p.uidl()
    eq([l.split(b" ", 1)[1] for l in uidls], ids[1:], "UIDLs are stable across sessions")
    eq(joined(p.retr(1)[1]), retrieved[1], "message 2 is now number 1")
    p.quit()


run(main)
