"""Concurrent IMAP sessions on one mailbox, each checking the server's
untagged responses against its own model of the mailbox.

usage: imap_stress.py HOST PORT USER PASSWORD CLIENTS OPS SEED

Every client SELECTs INBOX (a third of them after ENABLE QRESYNC, so they
get VANISHED instead of EXPUNGE, a third after ENABLE IMAP4rev2, so they
get ESEARCH and never RECENT or \\Recent) and runs OPS random commands: APPEND, STORE
and UID STORE of flags and keywords, EXPUNGE, UID EXPUNGE, COPY, UID MOVE
(to Archive and back), FETCH, UID FETCH, SEARCH, UID SEARCH, NOOP. Its
model is the list of UIDs in sequence order (None for a message announced
by EXISTS whose UID it has not learnt yet) and the flags of each UID.
Checked on every response:
- EXISTS never shrinks, and an EXPUNGE names a message the client has;
- a FETCH names a message the client has, and a sequence number keeps
  its UID until an EXPUNGE moves it;
- VANISHED names UIDs the client has (or messages it has not learnt);
- UIDs in sequence order are strictly ascending;
- a STORE answers with the flags it set; SEARCH results are in range;
- UID SEARCH ALL / UID FETCH 1:* agree with the model;
- every tagged response is OK (or NO [EXPUNGEISSUED], RFC 5530).
At the end every client agrees with every other on the mailbox. Prints
"stress ok" and counts.
"""
import random
import re
import socket
import sys
import threading

from common import Mismatch, check, eq, run

HOST, PORT, USER, PASSWORD = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
CLIENTS, OPS, SEED = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])

FLAGS = ["\\Seen", "\\Flagged", "\\Answered", "\\Draft", "$Work", "$Later"]


def uid_set(text):
    out = []
    for part in text.split(","):
        if ":" in part:
            a, b = part.split(":")
            a, b = int(a), int(b)
            out.extend(range(min(a, b), max(a, b) + 1))
        else:
            out.append(int(part))
    return out


class Client:
    def __init__(self, n, rng, qresync, rev2=False):
        self.n = n
        self.rng = rng
        self.qresync = qresync
        self.rev2 = rev2
        self.sock = socket.create_connection((HOST, PORT), timeout=30)
        self.buf = b""
        self.tagn = 0
        self.uids = []
        self.flags = {}
        self.exists_seen = 0
        self.counts = {}
        self.line()  # greeting

    def fail(self, msg):
        raise Mismatch("client %d: %s (model %r)" % (self.n, msg, self.uids[:40]))

    def line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                self.fail("connection closed")
            self.buf += data
        i = self.buf.index(b"\r\n")
        line, self.buf = self.buf[:i], self.buf[i + 2:]
        return line

    def response(self):
        """One response, literals inline (as b'{n}' + data)."""
        out = b""
        while True:
            line = self.line()
            out += line
            m = re.search(rb"\{(\d+)\+?\}$", line)
            if not m:
                return out
            n = int(m.group(1))
            while len(self.buf) < n:
                data = self.sock.recv(65536)
                if not data:
                    self.fail("closed in a literal")
                self.buf += data
            out += b"\r\n" + self.buf[:n]
            self.buf = self.buf[n:]

    def command(self, text, literal=None):
        self.tagn += 1
        tag = "c%d.%d" % (self.n, self.tagn)
        if literal is None:
            self.sock.sendall(("%s %s\r\n" % (tag, text)).encode())
        else:
            self.sock.sendall(("%s %s {%d+}\r\n" % (tag, text, len(literal))).encode() + literal + b"\r\n")
        untagged = []
        while True:
            r = self.response()
            if r.startswith(b"* "):
                self.untagged(r)
                untagged.append(r)
            elif r.startswith(tag.encode() + b" "):
                status = r[len(tag) + 1:].decode(errors="replace")
                word = text.split(" ")[0] if not text.startswith("UID") else " ".join(text.split(" ")[:2])
                self.counts[word] = self.counts.get(word, 0) + 1
                # RFC 5530: a message expunged by another session meanwhile.
                if status.startswith("NO [EXPUNGEISSUED]"):
                    self.counts["EXPUNGEISSUED"] = self.counts.get("EXPUNGEISSUED", 0) + 1
                elif not status.startswith("OK"):
                    self.fail("%r answered %r" % (text, status))
                self.check_order()
                return untagged, status
            else:
                self.fail("unexpected %r" % r[:200])

    def check_order(self):
        known = [u for u in self.uids if u is not None]
        if any(a >= b for a, b in zip(known, known[1:])):
            self.fail("UIDs not strictly ascending")

    def untagged(self, r):
        text = r.decode("utf-8", errors="replace")
        m = re.match(r"\* (\d+) (EXISTS|EXPUNGE|FETCH|RECENT)\b(.*)", text, re.S)
        if self.rev2 and (text.startswith("* SEARCH") or (m and m.group(2) == "RECENT")
                          or (m and "\\Recent" in m.group(3))):
            self.fail("IMAP4rev1 response after ENABLE IMAP4rev2: %r" % text[:200])
        if m:
            n, what, rest = int(m.group(1)), m.group(2), m.group(3)
            if what == "EXISTS":
                if n < len(self.uids):
                    self.fail("EXISTS %d shrinks below %d" % (n, len(self.uids)))
                self.uids.extend([None] * (n - len(self.uids)))
            elif what == "EXPUNGE":
                if self.qresync:
                    self.fail("EXPUNGE after ENABLE QRESYNC")
                if not 1 <= n <= len(self.uids):
                    self.fail("EXPUNGE %d of %d" % (n, len(self.uids)))
                u = self.uids.pop(n - 1)
                self.flags.pop(u, None)
            elif what == "FETCH":
                if not 1 <= n <= len(self.uids):
                    self.fail("FETCH %d of %d: %r" % (n, len(self.uids), text[:200]))
                mu = re.search(r"\bUID (\d+)", rest)
                if mu:
                    u = int(mu.group(1))
                    have = self.uids[n - 1]
                    if have is not None and have != u:
                        self.fail("seq %d was UID %d, now FETCH says %d" % (n, have, u))
                    self.uids[n - 1] = u
                mf = re.search(r"\bFLAGS \(([^)]*)\)", rest)
                if mf and self.uids[n - 1] is not None:
                    self.flags[self.uids[n - 1]] = set(mf.group(1).split()) - {"\\Recent"}
            return
        m = re.match(r"\* VANISHED (\(EARLIER\) )?([0-9:,]+)$", text)
        if m:
            if not self.qresync:
                self.fail("VANISHED without QRESYNC")
            if m.group(1):
                self.fail("VANISHED (EARLIER) unasked")
            for u in uid_set(m.group(2)):
                if u in self.uids:
                    self.uids.remove(u)
                    self.flags.pop(u, None)
                    continue
                # A message whose UID the client has not learnt: the unknown
                # entry between the known UIDs around u.
                lo = max([i for i, x in enumerate(self.uids) if x is not None and x < u] or [-1])
                hi = min([i for i, x in enumerate(self.uids) if x is not None and x > u] or [len(self.uids)])
                gap = [i for i in range(lo + 1, hi) if self.uids[i] is None]
                if not gap:
                    self.fail("VANISHED %d, which the client does not have" % u)
                del self.uids[gap[0]]

    def search(self, untagged):
        """The numbers of a SEARCH answer: `* SEARCH n...` or, for IMAP4rev2,
        `* ESEARCH (TAG "t") [UID] ALL set`."""
        found = []
        for r in untagged:
            t = r.decode()
            if t.startswith("* SEARCH"):
                found += [int(x) for x in t.split()[2:]]
            elif t.startswith("* ESEARCH"):
                m = re.search(r" ALL ([0-9:,]+)", t)
                if m:
                    found += uid_set(m.group(1))
        return found

    def learn(self):
        """FETCH the UIDs not known yet; a message expunged meanwhile has no
        FETCH, and the NOOP that follows reports it."""
        for _ in range(5):
            if None not in self.uids:
                return
            self.command("FETCH 1:* (UID FLAGS)")
            if None in self.uids:
                self.command("NOOP")
        if None in self.uids:
            self.fail("UIDs still unknown after FETCH and NOOP")

    def step(self):
        rng = self.rng
        n = len(self.uids)
        op = rng.randrange(13)
        flag = rng.choice(FLAGS)
        if op == 0 or n < 3:
            msg = ("From: <s%d@example.test>\r\nSubject: stress %d.%d\r\n\r\nbody\r\n"
                   % (self.n, self.n, self.tagn)).encode()
            self.command("APPEND INBOX (%s)" % rng.choice(["", "\\Seen", "$Work"]), msg)
        elif op == 1:
            seq = rng.randint(1, n)
            mode = rng.choice(["+", "-"])
            # A keyword only this client touches must come back as stored;
            # a shared flag may be changed by another session meanwhile.
            own = rng.random() < 0.5
            if own:
                flag = "$C%d" % self.n
            untagged, _ = self.command("STORE %d %sFLAGS (%s)" % (seq, mode, flag))
            mine = [r for r in untagged if r.startswith(b"* %d FETCH" % seq)]
            # The last FETCH of the message is the STORE's own (none for a
            # message expunged meanwhile).
            if own and mine and (flag.encode() in mine[-1]) != (mode == "+"):
                # Only a flag update from before the STORE: the message must
                # have been expunged meanwhile, which the next NOOP tells.
                u = self.uids[seq - 1]
                self.command("NOOP")
                if u in self.uids:
                    self.fail("STORE %sFLAGS %s answered %r" % (mode, flag, mine[-1]))
        elif op == 2:
            self.learn()
            if self.uids:
                u = rng.choice(self.uids)
                self.command("UID STORE %d +FLAGS.SILENT (\\Deleted)" % u)
        elif op == 3 and rng.random() < 0.5:
            self.command("EXPUNGE")
        elif op == 4:
            self.learn()
            if self.uids:
                u = rng.choice(self.uids)
                self.command("UID EXPUNGE %d" % u)
        elif op == 5:
            self.command("COPY %d Archive" % rng.randint(1, n))
        elif op == 6:
            self.learn()
            if self.uids:
                self.command("UID MOVE %d Archive" % rng.choice(self.uids))
        elif op == 7:
            untagged, _ = self.command("SEARCH UNSEEN")
            for x in self.search(untagged):
                if not 1 <= x <= len(self.uids):
                    self.fail("SEARCH %s of %d" % (x, len(self.uids)))
        elif op == 8:
            self.learn()
            untagged, _ = self.command("UID SEARCH ALL")
            found = self.search(untagged)
            if None not in self.uids:
                eq(found, self.uids, "client %d: UID SEARCH ALL against the model" % self.n)
        elif op == 9:
            self.command("FETCH %d:* (FLAGS)" % rng.randint(1, n))
        elif op == 10:
            self.command("NOOP")
        elif op == 11:
            # Bring a message back from Archive (new UID in INBOX).
            self.uids, self.flags = [], {}
            self.command("SELECT Archive")
            self.learn()
            if self.uids:
                self.command("MOVE %d INBOX" % rng.randint(1, len(self.uids)))
            self.select()
        else:
            self.learn()

    def select(self):
        self.uids, self.flags = [], {}
        self.command("SELECT INBOX")
        self.learn()

    def start(self):
        self.command('LOGIN "%s" "%s"' % (USER, PASSWORD))
        if self.qresync:
            self.command("ENABLE QRESYNC")
        if self.rev2:
            self.command("ENABLE IMAP4rev2")
        self.select()


def main():
    clients = [Client(i, random.Random(SEED * 100 + i), i % 3 == 1, i % 3 == 2)
               for i in range(CLIENTS)]
    for c in clients:
        c.start()
    errors = []

    def work(c):
        try:
            for _ in range(OPS):
                c.step()
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
        check(not t.is_alive(), "a client hung")
    if errors:
        raise errors[0]
    # Quiet now: everyone must see the same mailbox.
    views = []
    for c in clients:
        c.command("NOOP")
        c.learn()
        untagged, _ = c.command("UID FETCH 1:* (UID FLAGS)")
        c.learn()
        views.append((list(c.uids), {u: sorted(c.flags.get(u, ())) for u in c.uids}))
    for i, v in enumerate(views[1:], 1):
        eq(v[0], views[0][0], "client %d and client 0: UIDs" % i)
        eq(v[1], views[0][1], "client %d and client 0: flags" % i)
    total = {}
    for c in clients:
        for k, v in c.counts.items():
            total[k] = total.get(k, 0) + v
        c.command("LOGOUT")
    print("stress ok: %d messages; %s" % (len(views[0][0]), sorted(total.items())))


run(main)
