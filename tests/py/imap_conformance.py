"""IMAP conformance cases with imaplib.

usage: imap_conformance.py CASE HOST IMAP_PORT USER PASSWORD

Each case logs in, works in mailboxes of its own and checks every answer.
"""
import imaplib
import re
import sys

from common import check, eq, run

CASE, HOST, IMAP_PORT, USER, PASSWORD = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]


def ok(res, what):
    typ, data = res
    eq(typ, "OK", "%s (data %r)" % (what, data))
    return data


def message(subject, headers=""):
    return ("From: <a@example.test>\r\nTo: <%s>\r\n%sSubject: %s\r\n\r\nbody\r\n" % (USER, headers, subject)).encode()


def connect():
    m = imaplib.IMAP4(HOST, IMAP_PORT, timeout=15)
    ok(m.login(USER, PASSWORD), "LOGIN")
    return m


def status(m, box, item):
    data = ok(m.status(box, "(%s)" % item), "STATUS")
    return int(re.search(rb"%s (\d+)" % item.encode(), data[0]).group(1))


def examine_recent():
    m = connect()
    ok(m.create("PyBox"), "CREATE")
    for i in (1, 2):
        ok(m.append("PyBox", None, None, message("py %d" % i)), "APPEND")
    eq(ok(m.select("PyBox", readonly=True), "EXAMINE"), [b"2"], "EXISTS")
    eq(m.response("RECENT"), ("RECENT", [b"2"]), "RECENT after EXAMINE")
    ok(m.close(), "CLOSE")
    eq(status(m, "PyBox", "RECENT"), 2, "STATUS RECENT after EXAMINE")
    ok(m.select("PyBox"), "SELECT")
    eq(m.response("RECENT"), ("RECENT", [b"2"]), "RECENT of the first SELECT")
    ok(m.close(), "CLOSE")
    eq(status(m, "PyBox", "RECENT"), 0, "STATUS RECENT after SELECT")
    m.logout()


def id_maximal():
    imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED", "LOGOUT"))
    m = imaplib.IMAP4(HOST, IMAP_PORT, timeout=15)
    pairs = " ".join('"%s%02d" "%s"' % ("f" * 28, i, "v" * 1024) for i in range(30))
    typ, data = m._simple_command("ID", "(%s)" % pairs)
    eq(typ, "OK", "maximal ID before login")
    typ, data = m._untagged_response(typ, data, "ID")
    check(data and b'"name" "ringmail"' in data[0], "ID answer %r" % data)
    ok(m.login(USER, PASSWORD), "LOGIN after ID")
    m.logout()


def command(m, name, *args):
    """Send a command imaplib has no method for; (status, untagged data)."""
    typ, data = m._simple_command(name, *args)
    return m._untagged_response(typ, data, name)


def list_extended():
    m = connect()
    for box in ("PyFoo", "PyFoo/Bar", "PyFoo/Baz", "PyMoo"):
        ok(m.create(box), "CREATE " + box)
    ok(m.subscribe("PyFoo/Baz"), "SUBSCRIBE")
    for args in (("(bogus)", '""', '""'), ("(RECURSIVEMATCH)", '""', '"Py%"'),
                 ("(REMOTE RECURSIVEMATCH)", '""', '"Py%"'), ('""', '"Py%"', "RETURN", "(bogus)")):
        try:
            command(m, "LIST", *args)
            raise AssertionError("LIST %r accepted" % (args,))
        except imaplib.IMAP4.error as e:
            check("BAD" in str(e) or "rror" in str(e), "LIST %r: %s" % (args, e))
    typ, data = command(m, "LIST", "(SUBSCRIBED RECURSIVEMATCH)", '""', '"Py%"')
    eq(typ, "OK", "LIST RECURSIVEMATCH")
    eq(data, [b'(\\HasChildren) "/" PyFoo ("CHILDINFO" ("SUBSCRIBED"))'], "CHILDINFO of PyFoo")
    typ, data = command(m, "LIST", '""', '(PyMoo "PyFoo/%")')
    eq(sorted(d.split(b" ")[-1] for d in data), [b"PyFoo/Bar", b"PyFoo/Baz", b"PyMoo"], "several patterns")
    m.logout()


def condstore():
    m = connect()
    ok(m.select("Cond"), "SELECT")
    typ, data = m.fetch("1", "(MODSEQ)")
    eq(typ, "OK", "FETCH MODSEQ")
    check(b"MODSEQ (" in data[0], "FETCH data %r" % data)
    highest = m.untagged_responses.get("HIGHESTMODSEQ")
    check(highest is not None, "no HIGHESTMODSEQ code after the first FETCH MODSEQ: %r" % m.untagged_responses)
    typ, data = m.search(None, r'2:3 MODSEQ "/flags/\\seen" all 1')
    eq(typ, "OK", "SEARCH MODSEQ with entry")
    check(data[0].startswith(b"2 3 (MODSEQ "), "SEARCH data %r" % data)
    m.logout()


def search_cfws():
    m = connect()
    ok(m.select("Addr"), "SELECT")
    typ, data = m.search(None, "FROM", "user-from@domain.org")
    eq(typ, "OK", "SEARCH FROM")
    eq(data, [b"1 2 3 4 5"], "SEARCH FROM over every address form")
    typ, data = m.uid("SEARCH", "CC", '"user-cc@domain.org"')
    eq(len(data[0].split()), 5, "UID SEARCH CC")
    m.logout()


def keywords_announced():
    a, b = connect(), connect()
    ok(a.select("Kw"), "SELECT a")
    ok(b.select("Kw"), "SELECT b")
    ok(b.store("7", "+FLAGS", "($PyLabel)"), "STORE b")
    typ, data = a.fetch("7", "(FLAGS)")
    eq(typ, "OK", "FETCH a")
    check(b"$PyLabel" in data[0], "FETCH data %r" % data)
    flags = a.untagged_responses.get("FLAGS") or []
    check(any(b"$PyLabel" in f for f in flags), "no FLAGS naming $PyLabel before the FETCH: %r" % (flags,))
    a.logout()
    b.logout()


CASES = {f.__name__: f for f in [examine_recent, id_maximal, list_extended, condstore, search_cfws, keywords_announced]}


if __name__ == "__main__":
    run(CASES[CASE])
