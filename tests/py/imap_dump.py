"""Write every message of INBOX, as IMAP FETCH BODY.PEEK[] returns it, to DIR/UID.eml.

Usage: imap_dump.py PORT USER PASSWORD DIR; prints the count.
"""
import imaplib
import os
import sys

port, user, pw, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
m = imaplib.IMAP4("127.0.0.1", port)
m.login(user, pw)
m.select("INBOX", readonly=True)
typ, data = m.uid("SEARCH", None, "ALL")
assert typ == "OK", (typ, data)
uids = data[0].split()
for uid in uids:
    typ, data = m.uid("FETCH", uid, "(BODY.PEEK[])")
    assert typ == "OK", (typ, data)
    with open(os.path.join(out, uid.decode() + ".eml"), "wb") as f:
        f.write(data[0][1])
m.logout()
print(len(uids))
