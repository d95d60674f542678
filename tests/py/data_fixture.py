"""Fill a server with the data-directory fixture's content, or describe what
a server holds, for tests/tests/upgrade.rs.

Usage:
  data_fixture.py populate PHASE SMTP_PORT IMAP_PORT PASSWORD
      PHASE 1: mail for alice and bob, a folder, a copy, flags, an expunge;
      PHASE 2 (after a restart): more mail, keywords, a rename.
  data_fixture.py dump IMAP_PORT PASSWORD
      Prints JSON: for each account and mailbox (LIST order sorted), its
      UIDVALIDITY, UIDNEXT and messages (UID, flags sorted, internal date,
      the stored bytes in hex), through imaplib only.
"""
import imaplib
import json
import re
import smtplib
import sys

ACCOUNTS = ["alice@example.test", "bob@example.test"]


def message(n, to, extra=""):
    # Fixed bytes: the fixture's bodies are compared byte for byte.
    return (
        "From: carol@remote.test\r\n"
        "To: %s\r\n"
        "Subject: fixture message %d\r\n"
        "Date: Sun, 6 Dec 2026 12:%02d:00 +0000\r\n"
        "Message-ID: <fixture-%d@remote.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Body of message %d.\r\n"
        ".a line that starts with a dot\r\n"
        "caf\xc3\xa9 and a long line %s\r\n%s"
        % (to, n, n, n, n, "x" * 300, extra)
    ).encode("latin-1")


def send(smtp_port, n, rcpts):
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.sendmail("carol@remote.test", rcpts, message(n, ", ".join(rcpts)))


def imap(port, user, pw):
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login(user, pw)
    return m


def ok(r):
    typ, data = r
    assert typ == "OK", (typ, data)
    return data


def populate(phase, smtp_port, imap_port, pw):
    alice, bob = ACCOUNTS
    if phase == 1:
        for n in range(1, 5):
            send(smtp_port, n, [alice])
        send(smtp_port, 5, [alice, bob])
        send(smtp_port, 6, [bob])
        m = imap(imap_port, alice, pw)
        ok(m.create('"Old mail"'))
        ok(m.create("Projects/2026"))
        ok(m.select("INBOX"))
        ok(m.uid("COPY", "1:2", '"Old mail"'))
        ok(m.uid("STORE", "2", "+FLAGS", "(\\Seen \\Flagged)"))
        ok(m.uid("STORE", "3", "+FLAGS", "(\\Deleted)"))
        ok(m.expunge())
        ok(m.subscribe('"Old mail"'))
        m.logout()
    else:
        send(smtp_port, 7, [alice])
        send(smtp_port, 8, [bob])
        m = imap(imap_port, alice, pw)
        ok(m.select("INBOX"))
        ok(m.uid("STORE", "4", "+FLAGS", "(\\Answered $Fixture)"))
        ok(m.uid("MOVE", "5", "Projects/2026"))
        ok(m.rename('"Old mail"', '"Old mail 2025"'))
        ok(m.append("Projects/2026", "(\\Seen)", '"06-Dec-2026 12:30:00 +0000"', message(9, alice)))
        m.logout()
        m = imap(imap_port, bob, pw)
        ok(m.select("INBOX"))
        ok(m.uid("STORE", "1:*", "+FLAGS", "(\\Seen)"))
        m.logout()


def dump(imap_port, pw):
    out = {}
    for user in ACCOUNTS:
        m = imap(imap_port, user, pw)
        names = []
        for line in ok(m.list()):
            # (flags) "/" "name"  or  (flags) "/" name
            name = re.match(rb'\([^)]*\) (?:"[^"]*"|NIL) (.*)$', line).group(1)
            names.append(name.decode().strip('"'))
        boxes = {}
        for name in sorted(names):
            quoted = '"%s"' % name
            typ, _ = m.select(quoted, readonly=True)
            assert typ == "OK", (name, typ)
            status = ok(m.status(quoted, "(UIDVALIDITY UIDNEXT MESSAGES MAILBOXID)"))[0].decode()
            nums = dict(re.findall(r"(UIDVALIDITY|UIDNEXT|MESSAGES) (\d+)", status))
            mailboxid = re.search(r"MAILBOXID \(([\w-]+)\)", status).group(1)
            msgs = []
            if int(nums["MESSAGES"]) > 0:
                data = ok(m.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE EMAILID BODY.PEEK[])"))
                for item in data:
                    if not isinstance(item, tuple):
                        continue
                    head = item[0].decode()
                    uid = int(re.search(r"UID (\d+)", head).group(1))
                    flags = sorted(re.search(r"FLAGS \(([^)]*)\)", head).group(1).split())
                    date = re.search(r'INTERNALDATE "([^"]*)"', head).group(1)
                    emailid = re.search(r"EMAILID \(([\w-]+)\)", head).group(1)
                    msgs.append({"uid": uid, "flags": flags, "internaldate": date, "emailid": emailid,
                                 "hex": item[1].hex()})
            boxes[name] = {
                "uidvalidity": int(nums["UIDVALIDITY"]),
                "uidnext": int(nums["UIDNEXT"]),
                "mailboxid": mailboxid,
                "messages": sorted(msgs, key=lambda x: x["uid"]),
            }
        m.logout()
        out[user] = boxes
    print(json.dumps(out, indent=1, sort_keys=True))


if sys.argv[1] == "populate":
    populate(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
else:
    dump(int(sys.argv[2]), sys.argv[3])
