"""APPEND one message of about SIZE octets with imaplib (synchronizing literal).

Usage: imaplib_append.py PORT USER PASSWORD SIZE; prints "ok".
"""
import imaplib
import sys

port, user, pw, size = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
line = b"line of text for imaplib .........................\r\n"
body = b"From: a@b.test\r\nSubject: imaplib\r\n\r\n" + line * (size // len(line))
m = imaplib.IMAP4("127.0.0.1", port)
m.login(user, pw)
typ, data = m.append("INBOX", None, None, body)
assert typ == "OK", (typ, data)
m.logout()
print("ok")
