"""Shared helpers for the e2e client scripts (Python standard library only).

Every check raises Mismatch with a clear message; run() turns that into a
non-zero exit status for the Rust test that started the script.
"""
import sys
import traceback


class Mismatch(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Mismatch(msg)


def eq(got, want, what):
    if got != want:
        if isinstance(got, (bytes, bytearray)) and isinstance(want, (bytes, bytearray)):
            at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise Mismatch("%s: differ at byte %d (got %d bytes, want %d)\n got: %r\nwant: %r"
                           % (what, at, len(got), len(want), bytes(got[max(0, at - 60):at + 60]),
                              bytes(want[max(0, at - 60):at + 60])))
        raise Mismatch("%s: got %r, want %r" % (what, got, want))


def strip_trace(stored):
    """Split the server's Return-Path and Received header off a stored message."""
    lines = stored.split(b"\r\n")
    check(lines[0].startswith(b"Return-Path: <") and lines[0].endswith(b">"),
          "first line is not Return-Path: %r" % lines[0][:200])
    check(lines[1].startswith(b"Received: "), "second line is not Received: %r" % lines[1][:200])
    i = 2
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[:i]) + b"\r\n", b"\r\n".join(lines[i:])


def joined(lines):
    """poplib returns un-stuffed lines without CRLF; rebuild the octets."""
    return b"".join(l + b"\r\n" for l in lines)


def run(main):
    try:
        main()
    except Mismatch as e:
        print("MISMATCH: %s" % e, file=sys.stderr)
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        sys.exit(2)
    print("ok")
