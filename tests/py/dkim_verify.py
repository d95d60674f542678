"""Check every DKIM-Signature of a message with dkimpy, an independent verifier.

usage: dkim_verify.py MESSAGE_FILE NAME=TXT [NAME=TXT ...]

The DNS answers come from the arguments (NAME like s._domainkey.a.test.).
Prints one line per signature: "INDEX ALGORITHM SELECTOR pass|fail".
Run with Debian's python3 (python3-dkim, python3-nacl for ed25519).
"""
import sys

import dkim

msg = open(sys.argv[1], "rb").read()
records = {}
for arg in sys.argv[2:]:
    name, txt = arg.split("=", 1)
    records[name.rstrip(".").lower()] = txt.encode()


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.rstrip(".").lower())


d = dkim.DKIM(msg)
sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
if not sigs:
    print("no signature")
for i, sig in enumerate(sigs):
    tags = dict(t.strip().split(b"=", 1) for t in sig.split(b";") if b"=" in t)
    try:
        ok = d.verify(idx=i, dnsfunc=dnsfunc)
    except dkim.ValidationError:
        # dkimpy reports some failures (a body hash mismatch) by raising.
        ok = False
    print(i, tags.get(b"a", b"?").decode(), tags.get(b"s", b"?").decode(), "pass" if ok else "fail")
