"""An authenticated client sends as its own account only (smtplib, submission port).

usage: sender_ownership.py HOST SUBMISSION_PORT

alice@example.test (password alice-secret) owns alice, alice+tag and the
alias postmaster@example.test; bob@example.test is someone else, and
boss@example.test may send as anyone.
"""
import smtplib
import sys

from common import check, eq, run

HOST, PORT = sys.argv[1], int(sys.argv[2])


def session(user, password):
    s = smtplib.SMTP(HOST, PORT, timeout=30)
    s.ehlo("client.test")
    s.login(user, password)
    return s


def message(sender):
    return ("From: %s\r\nTo: bob@example.test\r\nSubject: ownership\r\n\r\nbody\r\n" % sender).encode()


def main():
    s = session("alice@example.test", "alice-secret")
    # MAIL FROM that is not alice's: 553 5.7.1, and the session goes on.
    try:
        s.sendmail("bob@example.test", ["bob@example.test"], message("alice@example.test"))
        raise AssertionError("MAIL FROM bob accepted for alice")
    except smtplib.SMTPSenderRefused as e:
        eq(e.smtp_code, 553, "MAIL FROM another account")
        check(e.smtp_error.startswith(b"5.7.1"), "enhanced code: %r" % e.smtp_error)
    try:
        s.sendmail("someone@elsewhere.test", ["bob@example.test"], message("alice@example.test"))
        raise AssertionError("MAIL FROM a foreign address accepted")
    except smtplib.SMTPSenderRefused as e:
        eq(e.smtp_code, 553, "MAIL FROM a foreign domain")
    # MAIL FROM alice, but From: bob: refused at the end of data.
    try:
        s.sendmail("alice@example.test", ["bob@example.test"], message("Bob <bob@example.test>"))
        raise AssertionError("From: bob accepted for alice")
    except smtplib.SMTPDataError as e:
        eq(e.smtp_code, 553, "From: another account")
        check(e.smtp_error.startswith(b"5.7.1"), "enhanced code: %r" % e.smtp_error)
    # Hers: the account, a +detail, an alias, and the null reverse path.
    s.sendmail("alice@example.test", ["bob@example.test"], message("Alice <alice@example.test>"))
    s.sendmail("alice+lists@example.test", ["bob@example.test"], message("alice+lists@example.test"))
    s.sendmail("postmaster@example.test", ["bob@example.test"], message("postmaster@example.test"))
    s.sendmail("", ["bob@example.test"], message("alice@example.test"))
    s.quit()
    # An account allowed to send as anyone.
    s = session("boss@example.test", "boss-secret")
    s.sendmail("bob@example.test", ["bob@example.test"], message("Bob <bob@example.test>"))
    s.quit()


run(main)
