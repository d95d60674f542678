"""Maildir and mbox archives written and read by Python's own `mailbox`
module, independently of ringmail's code, and IMAP dumps to compare
accounts (tests/tests/transfer.rs).

  mail_archives.py seed PORT USER PASS          folders, flags, keywords over IMAP
  mail_archives.py dump PORT USER PASS          JSON: mailbox -> [[flags], sha256, date]
  mail_archives.py write-maildir DIR            3 messages in INBOX, 2 in folder Work
  mail_archives.py write-mbox FILE              3 messages, one with From-lines in its body
  mail_archives.py read-maildir DIR             JSON: folder -> sorted [flags, sha256 of LF body]
  mail_archives.py read-mbox FILE               JSON: [sha256 of body]
"""
import hashlib
import imaplib
import json
import mailbox
import os
import sys

from common import run


def body(i, extra=""):
    return ("From: sender%d@example.org\nTo: someone@example.test\nSubject: message %d\n"
            "Date: Mon, 1 Jan 2024 10:00:0%d +0000\n\nline one of %d\n%s"
            "From the middle of a line? no, at its start.\n>From quoted once\nend\n" % (i, i, i % 10, i, extra))


def seed(port, user, pw):
    m = imaplib.IMAP4("127.0.0.1", int(port))
    m.login(user, pw)
    m.create("Work/Sub")
    m.append("Work/Sub", r"(\Seen \Flagged $Label1 custom)", None,
             body(1).replace("\n", "\r\n").encode())
    m.append("Work", r"(\Draft)", None, body(2).replace("\n", "\r\n").encode())
    m.append("INBOX", r"(\Answered \Deleted)", imaplib.Time2Internaldate(1700000000),
             body(3).replace("\n", "\r\n").encode())
    m.logout()


def dump(port, user, pw):
    m = imaplib.IMAP4("127.0.0.1", int(port))
    m.login(user, pw)
    out = {}
    typ, lines = m.list()
    for line in lines:
        name = line.decode().rsplit(' "/" ', 1)[1].strip('"')
        m.select('"%s"' % name, readonly=True)
        typ, data = m.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
        msgs = []
        for part in data:
            if not isinstance(part, tuple):
                continue
            meta = part[0].decode()
            flags = sorted(f for f in imaplib.ParseFlags(part[0]) if f != b"\\Recent")
            date = meta.split('INTERNALDATE "')[1].split('"')[0]
            msgs.append([[f.decode() for f in flags], hashlib.sha256(part[1]).hexdigest(), date])
        out[name] = sorted(msgs, key=lambda x: x[1])
    m.logout()
    print(json.dumps(out, sort_keys=True))


def write_maildir(d):
    md = mailbox.Maildir(d, create=True)
    for i in range(3):
        msg = mailbox.MaildirMessage(body(i))
        if i == 1:
            msg.set_subdir("cur")
            msg.set_flags("RS")
        md.add(msg)
    work = md.add_folder("Work")
    for i in range(3, 5):
        msg = mailbox.MaildirMessage(body(i))
        msg.set_subdir("cur")
        msg.set_flags("F")
        work.add(msg)
    md.close()


def write_mbox(path):
    mb = mailbox.mbox(path, create=True)
    for i in range(3):
        msg = mailbox.mboxMessage(body(i, "From here a line that mboxo quotes\n"))
        msg.set_from("sender%d@example.org" % i, (2024, 1, 2 + i, 3, 4, 5, 0, 0, 0))
        mb.add(msg)
    mb.flush()
    mb.close()


def read_maildir(d):
    md = mailbox.Maildir(d, create=False)
    out = {}
    for name in [""] + md.list_folders():
        box = md if name == "" else md.get_folder(name)
        out[name or "INBOX"] = sorted(
            [msg.get_flags(), hashlib.sha256(msg.as_bytes()).hexdigest()] for msg in box)
    print(json.dumps(out, sort_keys=True))


def read_mbox(path):
    mb = mailbox.mbox(path, create=False)
    print(json.dumps([hashlib.sha256(msg.as_bytes()).hexdigest() for msg in mb]))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"seed": seed, "dump": dump, "write-maildir": write_maildir, "write-mbox": write_mbox,
     "read-maildir": read_maildir, "read-mbox": read_mbox}[cmd](*args)


if __name__ == "__main__":
    run(main)
