"""A full IMAP session with imaplib (RFC 3501 plus UIDPLUS, MOVE, IDLE-less).

usage: imap_session.py HOST SMTP_PORT IMAP_PORT USER PASSWORD

USER's INBOX must be empty. Delivers two messages with smtplib, then drives
imaplib through CAPABILITY, a failed and a good LOGIN, LIST, SELECT, FETCH,
SEARCH, STORE, APPEND, COPY, UID commands, EXPUNGE, CREATE/DELETE, STATUS,
NOOP, CLOSE and LOGOUT, checking every answer.
"""
import imaplib
import re
import smtplib
import sys
import time

from common import check, eq, run, strip_trace

HOST, SMTP_PORT, IMAP_PORT, USER, PASSWORD = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]


def message(i):
    return ("From: Sender <sender@example.test>\r\nTo: <%s>\r\nSubject: imaplib %d\r\n"
            "Message-ID: <imaplib-%d@e2e.test>\r\n\r\nbody of imaplib message %d\r\n" % (USER, i, i, i)).encode()


def ok(res, what):
    typ, data = res
    eq(typ, "OK", "%s (data %r)" % (what, data))
    return data


def fetch_parts(data):
    """imaplib FETCH data: tuples (envelope, literal) and closing bytes."""
    return [d for d in data if isinstance(d, tuple)]


def main():
    with smtplib.SMTP(HOST, SMTP_PORT, timeout=15) as s:
        for i in (1, 2):
            s.sendmail("sender@example.test", [USER], message(i))

    m = imaplib.IMAP4(HOST, IMAP_PORT, timeout=15)
    check("IMAP4REV1" in m.capabilities, "capabilities %r" % (m.capabilities,))
    try:
        m.login(USER, "wrong password")
        raise AssertionError("bad password accepted")
    except imaplib.IMAP4.error as e:
        check("AUTHENTICATIONFAILED" in str(e), "failure text %r" % str(e))
    ok(m.login(USER, PASSWORD), "LOGIN")
    caps = ok(m.capability(), "CAPABILITY")[0].decode().upper().split()
    for c in ("UIDPLUS", "MOVE", "IDLE", "CONDSTORE", "SPECIAL-USE", "NAMESPACE"):
        check(c in caps, "%s not in %r" % (c, caps))

    boxes = ok(m.list(), "LIST")
    names = sorted(re.match(rb'\((.*?)\) "/" "?([^"]*)"?$', b).group(2).decode() for b in boxes)
    eq(names, sorted(["INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"]), "LIST names")

    eq(ok(m.select("INBOX"), "SELECT"), [b"2"], "EXISTS")
    data = ok(m.fetch("1:*", "(UID FLAGS RFC822.SIZE BODY.PEEK[])"), "FETCH")
    parts = fetch_parts(data)
    eq(len(parts), 2, "FETCH parts")
    for i, (env, lit) in enumerate(parts, 1):
        _, original = strip_trace(lit)
        eq(original, message(i), "message %d" % i)
        size = int(re.search(rb"RFC822.SIZE (\d+)", env).group(1))
        eq(size, len(lit), "RFC822.SIZE of %d" % i)
        check(b"\\Seen" not in env, "PEEK set \\Seen: %r" % env)

    eq(ok(m.search(None, "SUBJECT", '"imaplib 2"'), "SEARCH"), [b"2"], "SEARCH SUBJECT")
    eq(ok(m.search(None, "UNSEEN"), "SEARCH UNSEEN"), [b"1 2"], "SEARCH UNSEEN")
    data = ok(m.store("1", "+FLAGS", "(\\Flagged $Important)"), "STORE")
    check(b"\\Flagged" in data[0] and b"$Important" in data[0], "STORE answer %r" % data)
    eq(ok(m.search(None, "FLAGGED"), "SEARCH FLAGGED"), [b"1"], "SEARCH FLAGGED")
    eq(ok(m.search(None, "KEYWORD", "$Important"), "SEARCH KEYWORD"), [b"1"], "SEARCH KEYWORD")

    # APPEND with flags and a date; UIDPLUS answer.
    when = imaplib.Time2Internaldate(time.mktime((2024, 2, 29, 12, 30, 0, 0, 0, -1)))
    typ, data = m.append("INBOX", "(\\Seen)", when, message(3))
    eq(typ, "OK", "APPEND")
    check(m.untagged_responses.get("APPENDUID") or re.search(rb"APPENDUID \d+ 3", data[0]),
          "APPENDUID in %r" % data)
    ok(m.noop(), "NOOP")
    data = ok(m.fetch("3", "(FLAGS INTERNALDATE)"), "FETCH 3")
    check(b"\\Seen" in data[0], "APPENDed flags %r" % data)
    got = imaplib.Internaldate2tuple(data[0])
    check(got is not None and time.mktime(got) == time.mktime((2024, 2, 29, 12, 30, 0, 0, 0, -1)),
          "INTERNALDATE %r" % data)

    # COPY/UID MOVE with UIDPLUS codes.
    ok(m.create("Kept"), "CREATE")
    typ, data = m.copy("1:2", "Kept")
    eq(typ, "OK", "COPY")
    check(re.search(rb"COPYUID \d+ 1:2 1:2", data[0]), "COPYUID %r" % data)
    m.untagged_responses.pop("EXPUNGE", None)
    typ, data = m.uid("MOVE", "3", "Kept")
    eq(typ, "OK", "UID MOVE %r" % data)
    eq(m.untagged_responses.pop("EXPUNGE", None), [b"3"], "EXPUNGE from UID MOVE")
    st = ok(m.status("Kept", "(MESSAGES UNSEEN)"), "STATUS")
    check(re.search(rb"MESSAGES 3", st[0]) and re.search(rb"UNSEEN 2", st[0]), "STATUS Kept %r" % st)

    # UID FETCH and EXPUNGE.
    data = ok(m.uid("FETCH", "1:*", "(UID FLAGS)"), "UID FETCH")
    eq(len([d for d in data if d]), 2, "two messages left after MOVE: %r" % data)
    ok(m.store("2", "+FLAGS.SILENT", "(\\Deleted)"), "STORE \\Deleted")
    data = ok(m.expunge(), "EXPUNGE")
    eq(data, [b"2"], "EXPUNGE response")
    eq(ok(m.search(None, "ALL"), "SEARCH ALL"), [b"1"], "after EXPUNGE")

    # A mailbox round trip.
    ok(m.create("Tmp/Sub"), "CREATE Tmp/Sub")
    boxes = ok(m.list('""', "Tmp*"), "LIST Tmp*")
    check(len(boxes) == 2 and b"\\HasChildren" in boxes[0], "LIST Tmp*: %r" % boxes)
    ok(m.rename("Tmp", "Tmp2"), "RENAME")
    ok(m.delete("Tmp2/Sub"), "DELETE Tmp2/Sub")
    ok(m.close(), "CLOSE")
    typ, _ = m.logout()
    eq(typ, "BYE", "LOGOUT")


run(main)
