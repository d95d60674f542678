"""QUOTA (RFC 9208) with imaplib and smtplib.

usage: quota.py HOST SMTP_PORT IMAP_PORT USER PASSWORD LIMIT PHASE

USER has a storage limit of LIMIT octets and an empty INBOX.
PHASE "fill": delivers over SMTP until RCPT is refused with 452 4.2.2,
checks GETQUOTAROOT/GETQUOTA after each message, APPEND and COPY refused
with [OVERQUOTA], MOVE allowed, STATUS DELETED/DELETED-STORAGE/SIZE, and
that an expunge makes room again (the next RCPT is accepted). Prints the
usage in KiB on the last line.
PHASE "check:N": after a restart, GETQUOTA must report N KiB used.
"""
import imaplib
import re
import smtplib
import sys

from common import check, eq, run

HOST, SMTP_PORT, IMAP_PORT, USER, PASSWORD, LIMIT, PHASE = (
    sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6]),
    sys.argv[7])


def message(i, size=1500):
    head = ("From: <sender@example.test>\r\nTo: <%s>\r\nSubject: quota %d\r\n"
            "Message-ID: <quota-%d@e2e.test>\r\n\r\n" % (USER, i, i)).encode()
    line = b"x" * 70 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def ok(res, what):
    typ, data = res
    eq(typ, "OK", "%s (data %r)" % (what, data))
    return data


def quota(imap):
    """(used KiB, limit KiB) from GETQUOTAROOT INBOX, checking the root line."""
    typ, data = imap.getquotaroot("INBOX")
    eq(typ, "OK", "GETQUOTAROOT (data %r)" % (data,))
    roots, quotas = data
    eq([r.decode() for r in roots], ['INBOX ""'], "QUOTAROOT")
    m = re.fullmatch(rb'"" \(STORAGE (\d+) (\d+)\)', quotas[0])
    check(m, "QUOTA line %r" % quotas)
    typ, data = imap.getquota('""')
    eq(typ, "OK", "GETQUOTA")
    eq(data[0], quotas[0], "GETQUOTA and GETQUOTAROOT agree")
    return int(m.group(1)), int(m.group(2))


def send(i):
    """Deliver message i; the RCPT reply code (250 when delivered)."""
    s = smtplib.SMTP(HOST, SMTP_PORT, timeout=30)
    try:
        s.ehlo("client.test")
        s.mail("sender@example.test")
        code, text = s.rcpt(USER)
        if code == 250:
            code2, text2 = s.data(message(i))
            eq(code2, 250, "DATA reply %r" % text2)
        else:
            s.rset()
            check(text.startswith(b"4.2.2"), "over-quota RCPT text %r" % text)
        return code
    finally:
        s.quit()


def fill():
    imap = imaplib.IMAP4(HOST, IMAP_PORT)
    imap.login(USER, PASSWORD)
    caps = ok(imap.capability(), "CAPABILITY")[0].split()
    for c in (b"QUOTA", b"QUOTA=RES-STORAGE", b"STATUS=SIZE"):
        check(c in caps, "capability %s missing from %r" % (c, caps))
    used, limit = quota(imap)
    eq((used, limit), (0, LIMIT // 1024), "empty account")
    delivered = 0
    for i in range(1, 100):
        code = send(i)
        if code != 250:
            eq(code, 452, "RCPT over quota")
            break
        delivered += 1
        used, _ = quota(imap)
    check(delivered > 0, "nothing delivered before the limit")
    used, _ = quota(imap)
    check(used * 1024 >= LIMIT - 1024, "refused at %d KiB of %d" % (used, LIMIT // 1024))
    # APPEND and COPY would pass the limit: NO [OVERQUOTA].
    typ, data = imap.append("INBOX", None, None, message(500, 3000))
    eq(typ, "NO", "APPEND over quota")
    check(b"[OVERQUOTA]" in data[0], "APPEND code %r" % data)
    ok(imap.select("INBOX"), "SELECT")
    typ, data = imap.copy("1", "Archive")
    eq(typ, "NO", "COPY over quota")
    check(b"[OVERQUOTA]" in data[0], "COPY code %r" % data)
    # MOVE stays within the account's one quota root.
    ok(imap._simple_command("MOVE", "1", "Archive"), "MOVE")
    eq(quota(imap)[0], used, "MOVE changes no usage")
    typ, data = imap.status("Archive", "(MESSAGES SIZE DELETED DELETED-STORAGE)")
    eq(typ, "OK", "STATUS")
    m = re.search(rb"MESSAGES 1 SIZE (\d+) DELETED 0 DELETED-STORAGE 0", data[0])
    check(m, "STATUS Archive %r" % data)
    ok(imap.select("Archive"), "SELECT Archive")
    ok(imap.store("1", "+FLAGS", "(\\Deleted)"), "STORE")
    typ, data = imap.status("Archive", "(DELETED DELETED-STORAGE)")
    check(re.search(rb"DELETED 1 DELETED-STORAGE %s\)" % m.group(1), data[0]),
          "STATUS after \\Deleted %r" % data)
    ok(imap.expunge(), "EXPUNGE")
    after, _ = quota(imap)
    check(after < used, "expunge frees room: %d -> %d KiB" % (used, after))
    eq(send(1000), 250, "RCPT after the expunge")
    # SETQUOTA is the administrator's.
    typ, data = imap._simple_command("SETQUOTA", '""', "(STORAGE 99999)")
    eq(typ, "NO", "SETQUOTA")
    imap.logout()
    imap = imaplib.IMAP4(HOST, IMAP_PORT)
    imap.login(USER, PASSWORD)
    print(quota(imap)[0])
    imap.logout()


def check_after_restart(want):
    imap = imaplib.IMAP4(HOST, IMAP_PORT)
    imap.login(USER, PASSWORD)
    eq(quota(imap)[0], want, "usage after a restart")
    imap.logout()


def main():
    if PHASE == "fill":
        fill()
    else:
        check_after_restart(int(PHASE.split(":")[1]))


run(main)
