"""TLS end-to-end checks with Python's own clients (ssl + smtplib/imaplib/poplib).

usage: tls_clients.py MODE CAFILE ARGS...

Every connection verifies the server's certificate against CAFILE and the
name "localhost" (one of the names in ringmail's self-signed certificate).
"""
import imaplib
import poplib
import smtplib
import socket
import ssl
import sys
import time
from email.message import EmailMessage

from common import check, eq, run

HOST = "localhost"


def ctx(cafile):
    c = ssl.create_default_context(cafile=cafile)
    c.check_hostname = True
    return c


def message(subject, to):
    m = EmailMessage()
    m["From"] = "alice@example.test"
    m["To"] = to
    m["Subject"] = subject
    m.set_content("sent over TLS: " + subject)
    return m


def smtp(cafile, smtp_port, submissions_port, submission_port, user, password):
    """STARTTLS on port 25-style listener and on submission, implicit TLS on submissions."""
    c = ctx(cafile)
    # smtp listener: STARTTLS, then mail without AUTH to a local user.
    with smtplib.SMTP(HOST, int(smtp_port), timeout=20) as s:
        s.ehlo("client.test")
        check(s.has_extn("starttls"), "STARTTLS not offered: %r" % s.esmtp_features)
        check(not s.has_extn("auth"), "AUTH offered before TLS: %r" % s.esmtp_features)
        s.starttls(context=c)
        check(s.sock.version() in ("TLSv1.3", "TLSv1.2"), "version %r" % s.sock.version())
        s.ehlo("client.test")
        check(not s.has_extn("starttls"), "STARTTLS offered again inside TLS")
        check(s.has_extn("auth"), "AUTH not offered under TLS: %r" % s.esmtp_features)
        s.send_message(message("starttls-smtp", "bob@example.test"))
    # submission: MAIL before TLS is refused, then STARTTLS + AUTH LOGIN.
    with smtplib.SMTP(HOST, int(submission_port), timeout=20) as s:
        s.ehlo("client.test")
        code, text = s.mail("alice@example.test")
        eq(code, 530, "MAIL before STARTTLS on submission: %r" % text)
        check(b"STARTTLS" in text, "530 text %r" % text)
        s.rset()
        s.starttls(context=c)
        s.ehlo("client.test")
        s.login(user, password)
        s.send_message(message("starttls-submission", "bob@example.test"))
    # submissions: implicit TLS, AUTH PLAIN.
    with smtplib.SMTP_SSL(HOST, int(submissions_port), context=c, timeout=20) as s:
        s.ehlo("client.test")
        check(not s.has_extn("starttls"), "STARTTLS offered on implicit TLS")
        s.login(user, password)
        s.send_message(message("implicit-submissions", "bob@example.test"))
    print("ok")


def readers(cafile, imap_port, imaps_port, pop3_port, pop3s_port, users, password, want):
    """Every user logs in over IMAPS and POP3S (accounts on both shards) and
    sees `want` messages; the message bodies are the same over both."""
    c = ctx(cafile)
    want = int(want)
    for user in users.split(","):
        m = imaplib.IMAP4_SSL(HOST, int(imaps_port), ssl_context=c, timeout=20)
        m.login(user, password)
        typ, data = m.select("INBOX")
        eq(typ, "OK", "SELECT")
        eq(int(data[0]), want, "%s: messages over IMAPS" % user)
        imap_bodies = []
        for i in range(1, want + 1):
            typ, d = m.fetch(str(i), "(BODY.PEEK[])")
            imap_bodies.append(d[0][1])
            # The trace header, for the Rust side to check.
            head = d[0][1].split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
            print("RECEIVED %s %d %s" % (user, i, " ".join(head.split())))
        m.logout()
        p = poplib.POP3_SSL(HOST, int(pop3s_port), context=c, timeout=20)
        p.user(user)
        p.pass_(password)
        count, _ = p.stat()
        eq(count, want, "%s: messages over POP3S" % user)
        for i in range(1, want + 1):
            _, lines, _ = p.retr(i)
            eq(b"\r\n".join(lines) + b"\r\n", imap_bodies[i - 1], "%s message %d POP3S vs IMAPS" % (user, i))
        p.quit()
    print("ok")


def starttls_readers(cafile, imap_port, pop3_port, user, password, want):
    """IMAP STARTTLS and POP3 STLS with credentials refused before TLS."""
    c = ctx(cafile)
    want = int(want)
    m = imaplib.IMAP4(HOST, int(imap_port), timeout=20)
    caps = m.capabilities
    check("STARTTLS" in caps and "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps, "IMAP caps before TLS: %r" % (caps,))
    typ, data = m._simple_command("LOGIN", user, password)
    check(typ == "NO" and b"PRIVACYREQUIRED" in data[0], "LOGIN before TLS: %r %r" % (typ, data))
    m.starttls(ssl_context=c)
    caps = m.capabilities
    check("STARTTLS" not in caps and "LOGINDISABLED" not in caps and "AUTH=PLAIN" in caps, "IMAP caps inside TLS: %r" % (caps,))
    m.login(user, password)
    typ, data = m.select("INBOX")
    eq(int(data[0]), want, "messages over IMAP STARTTLS")
    m.logout()

    p = poplib.POP3(HOST, int(pop3_port), timeout=20)
    caps = p.capa()
    check("STLS" in caps and "USER" not in caps, "POP3 CAPA before TLS: %r" % caps)
    try:
        p.user(user)
        raise AssertionError("USER accepted before STLS")
    except poplib.error_proto as e:
        check(b"[AUTH]" in e.args[0], "USER before STLS: %r" % e.args[0])
    p.stls(context=c)
    caps = p.capa()
    check("STLS" not in caps and "USER" in caps, "POP3 CAPA inside TLS: %r" % caps)
    p.user(user)
    p.pass_(password)
    eq(p.stat()[0], want, "messages over POP3 STLS")
    p.quit()


def handshakes(cafile, port, n):
    """n implicit-TLS handshakes at once (threads), each followed by EHLO."""
    import concurrent.futures
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    c = ctx(cafile)
    n = int(n)
    socks = []
    t0 = time.time()
    # Open every TCP connection first, then run the handshakes together.
    for _ in range(n):
        socks.append(socket.create_connection(("127.0.0.1", int(port)), timeout=30))

    def one(sock):
        t = c.wrap_socket(sock, server_hostname=HOST)
        t.sendall(b"EHLO x\r\n")
        data = b""
        while b"\r\n250 " not in data and not data.startswith(b"250 "):
            chunk = t.recv(4096)
            if not chunk:
                raise RuntimeError("closed: %r" % data)
            data += chunk
        return t

    with concurrent.futures.ThreadPoolExecutor(max_workers=64) as ex:
        done = list(ex.map(one, socks))
    for t in done:
        t.close()
    print("ok %d handshakes in %.2fs" % (len(done), time.time() - t0))


def old_versions(port):
    """TLS 1.0 and 1.1 get a protocol_version alert from the server."""
    for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE
        try:
            c.set_ciphers("ALL:@SECLEVEL=0")
            c.minimum_version = v
            c.maximum_version = v
        except (ValueError, ssl.SSLError) as e:
            print("skip %s: client cannot offer it (%s)" % (v, e))
            continue
        sock = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
        try:
            c.wrap_socket(sock).close()
        except ssl.SSLError as e:
            text = str(e)
            if "NO_PROTOCOLS_AVAILABLE" in text or "UNSUPPORTED_PROTOCOL" in text:
                print("skip %s: client-side refusal (%s)" % (v, text))
                continue
            check("PROTOCOL_VERSION" in text or "alert" in text.lower(), "%s: unexpected error %s" % (v, text))
            print("refused %s: %s" % (v, text))
            continue
        raise AssertionError("%s handshake succeeded" % v)
    print("ok")


def injection(cafile, port, proto):
    """Plaintext pipelined after STARTTLS/STLS must never run inside TLS."""
    c = ctx(cafile)
    sock = socket.create_connection((HOST, int(port)), timeout=20)
    f = sock.makefile("rb")
    greeting = f.readline()
    if proto == "smtp":
        check(greeting.startswith(b"220 "), "greeting %r" % greeting)
        sock.sendall(b"EHLO c\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        sock.sendall(b"STARTTLS\r\nNOOP injected\r\n")
        line = f.readline()
        check(line.startswith(b"220 "), "STARTTLS reply %r" % line)
        first_cmd, want = b"NOOP\r\n", b"250 2.0.0 Ok\r\n"
    elif proto == "imap":
        sock.sendall(b"a STARTTLS\r\nb NOOP\r\n")
        line = f.readline()
        check(line.startswith(b"a OK"), "STARTTLS reply %r" % line)
        first_cmd, want = b"c NOOP\r\n", b"c OK"
    else:
        sock.sendall(b"STLS\r\nNOOP\r\n")
        line = f.readline()
        check(line.startswith(b"+OK"), "STLS reply %r" % line)
        first_cmd, want = b"CAPA\r\n", b"+OK"
    t = c.wrap_socket(sock, server_hostname=HOST)
    t.sendall(first_cmd)
    tf = t.makefile("rb")
    line = tf.readline()
    check(line.startswith(want), "first reply inside TLS is %r, want %r (the injected command ran?)" % (line, want))
    # The second STARTTLS is refused.
    if proto == "smtp":
        t.sendall(b"STARTTLS\r\n")
        line = tf.readline()
        check(line.startswith(b"503 "), "second STARTTLS: %r" % line)
    elif proto == "imap":
        t.sendall(b"d STARTTLS\r\n")
        line = tf.readline()
        check(line.startswith(b"d BAD") or line.startswith(b"d NO"), "second STARTTLS: %r" % line)
    else:
        while line.rstrip() != b".":
            line = tf.readline()
        t.sendall(b"STLS\r\n")
        line = tf.readline()
        check(line.startswith(b"-ERR"), "second STLS: %r" % line)
    t.close()
    print("ok")


def boundaries(cafile, port, proto, user, password):
    """The transport's buffering across STARTTLS at every byte boundary.

    The pipelined input (commands, the upgrade command, then a command a
    man in the middle would inject) is sent as two writes split at every
    byte position, 30 ms apart. Whatever the split, the commands before the
    upgrade are answered in order, the upgrade is accepted, and the injected
    command never runs: either it arrived with the upgrade and was
    discarded (the handshake then succeeds and a probe inside TLS shows the
    state is fresh), or it arrived after the go-ahead, where it is no TLS
    record and the handshake fails.
    """
    c = ctx(cafile)
    if proto == "smtp":
        before, upgrade = b"EHLO c\r\nNOOP\r\n", b"STARTTLS\r\n"
        injected = b"MAIL FROM:<evil@example.org>\r\n"
        # RCPT without MAIL: 503 unless the injected MAIL ran.
        probe, want = b"EHLO d\r\nRCPT TO:<%s>\r\n" % user.encode(), b"503 "
    elif proto == "imap":
        before, upgrade = b"a NOOP\r\nb CAPABILITY\r\n", b"c STARTTLS\r\n"
        injected = b"x LOGIN %s %s\r\n" % (user.encode(), password.encode())
        probe, want = b"d SELECT INBOX\r\n", b"d BAD"
    else:
        before, upgrade = b"CAPA\r\nNOOP\r\n", b"STLS\r\n"
        injected = b"USER %s\r\n" % user.encode()
        probe, want = b"PASS %s\r\n" % password.encode(), b"-ERR"
    data = before + upgrade + injected
    outcomes = {"fresh": 0, "refused": 0}
    for k in range(len(data) + 1):
        sock = socket.create_connection((HOST, int(port)), timeout=20)
        f = sock.makefile("rb")
        f.readline()  # greeting
        sock.sendall(data[:k])
        time.sleep(0.03)
        sock.sendall(data[k:])
        # Replies up to and including the go-ahead.
        go = None
        for _ in range(100):
            line = f.readline()
            check(line, "split %d: closed before the go-ahead" % k)
            if proto == "smtp" and line.startswith(b"220 "):
                go = line
            elif proto == "imap" and line.startswith(b"c "):
                check(line.startswith(b"c OK"), "split %d: STARTTLS reply %r" % (k, line))
                go = line
            elif proto == "pop3" and line.startswith(b"+OK Begin TLS"):
                go = line
            if go:
                break
        check(go, "split %d: no go-ahead" % k)
        try:
            t = c.wrap_socket(sock, server_hostname=HOST)
        except (ssl.SSLError, OSError):
            # The injected bytes came after the go-ahead: not TLS.
            check(k > len(before) + len(upgrade) - 1, "split %d: handshake failed although nothing followed" % k)
            outcomes["refused"] += 1
            sock.close()
            continue
        tf = t.makefile("rb")
        t.sendall(probe)
        if proto == "smtp":
            while not tf.readline().startswith(b"250 "):
                pass
        line = tf.readline()
        while proto == "imap" and line.startswith(b"* "):
            line = tf.readline()
        check(line.startswith(want), "split %d: probe inside TLS got %r, want %r (the injected command ran)" % (k, line, want))
        outcomes["fresh"] += 1
        t.close()
    check(outcomes["fresh"] > 0, "no split ended in a working TLS session: %r" % outcomes)
    print("ok", outcomes)


def hold(cafile, port, n, flag_file, done_file):
    """Open n implicit-TLS SMTP sessions, print the certificate fingerprint,
    wait until flag_file exists, then check every session still answers NOOP
    and that a new session sees a different certificate."""
    import hashlib
    import os
    c = ssl.create_default_context(cafile=cafile)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    n = int(n)
    sessions = []
    for _ in range(n):
        t = c.wrap_socket(socket.create_connection(("127.0.0.1", int(port)), timeout=20), server_hostname=HOST)
        f = t.makefile("rb")
        check(f.readline().startswith(b"220 "), "greeting")
        sessions.append((t, f))
    first = hashlib.sha256(sessions[0][0].getpeercert(binary_form=True)).hexdigest()
    print("fingerprint", first, flush=True)
    deadline = time.time() + 60
    while not os.path.exists(flag_file):
        check(time.time() < deadline, "flag file never appeared")
        time.sleep(0.05)
    for t, f in sessions:
        t.sendall(b"NOOP\r\n")
        line = f.readline()
        check(line.startswith(b"250 "), "session dropped by the reload: %r" % line)
    t = c.wrap_socket(socket.create_connection(("127.0.0.1", int(port)), timeout=20), server_hostname=HOST)
    after = hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()
    t.close()
    for s, _ in sessions:
        s.close()
    print("after", after)
    with open(done_file, "w") as fh:
        fh.write(after)


MODES = {
    "smtp": smtp,
    "readers": readers,
    "starttls_readers": starttls_readers,
    "handshakes": handshakes,
    "old_versions": old_versions,
    "injection": injection,
    "boundaries": boundaries,
    "hold": hold,
}

if __name__ == "__main__":
    run(lambda: MODES[sys.argv[1]](*sys.argv[2:]))
