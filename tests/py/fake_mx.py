"""A receiving MX with broken or hostile STARTTLS, for the relay's TLS tests.

Usage: fake_mx.py MODE CERT KEY  (prints "port=N" once listening, then one
JSON line per received message: {"tls": bool, "rcpt": [...], "size": n,
"raw": hex of the DATA octets as they came over the wire, before the
final CRLF.CRLF, still dot-stuffed}).

MODE
  garbage   offers STARTTLS, answers 220, then sends bytes that are no TLS
            record and closes: the client's handshake fails.
  inject    offers STARTTLS and answers "220" together with a forged EHLO
            reply (SIZE 10) in the same write, then does a real handshake: a
            client that kept the injected bytes would take SIZE 10 for the
            capabilities and refuse the message.
  plain     offers no STARTTLS: a plain MX that shows what arrives.
Accepts many connections, one thread each; exits when stdin closes.
"""
import json
import socket
import ssl
import sys
import threading

MODE, CERT, KEY = sys.argv[1], sys.argv[2], sys.argv[3]
OUT = threading.Lock()


def emit(obj):
    with OUT:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


class Lines:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def data(self):
        while b"\r\n.\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        body, self.buf = self.buf.split(b"\r\n.\r\n", 1)
        return body


def serve(conn):
    conn.settimeout(20)
    sock, tls = conn, False
    io = Lines(sock)
    sock.sendall(b"220 fake-mx ESMTP\r\n")
    rcpts = []
    while True:
        line = io.line()
        verb = line.split(b" ")[0].split(b":")[0].upper()
        if verb == b"EHLO":
            caps = [b"fake-mx", b"PIPELINING", b"8BITMIME"]
            if not tls and MODE != "plain":
                caps.append(b"STARTTLS")
            sock.sendall(b"".join(b"250%s%s\r\n" % (b" " if i == len(caps) - 1 else b"-", c) for i, c in enumerate(caps)))
        elif verb == b"STARTTLS" and not tls:
            if MODE == "garbage":
                sock.sendall(b"220 2.0.0 go ahead\r\n")
                sock.sendall(b"this is not a TLS record\r\n" * 4)
                sock.close()
                return
            # The forged reply rides in the same segment as the 220.
            sock.sendall(b"220 2.0.0 go ahead\r\n250-fake-mx\r\n250 SIZE 10\r\n")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(CERT, KEY)
            sock = ctx.wrap_socket(sock, server_side=True)
            io, tls = Lines(sock), True
        elif verb == b"MAIL":
            rcpts = []
            sock.sendall(b"250 2.1.0 ok\r\n")
        elif verb == b"RCPT":
            rcpts.append(line.split(b"<", 1)[1].rstrip(b">").decode())
            sock.sendall(b"250 2.1.5 ok\r\n")
        elif verb == b"DATA":
            sock.sendall(b"354 go\r\n")
            body = io.data()
            emit({"tls": tls, "rcpt": rcpts, "size": len(body), "raw": body.hex()})
            sock.sendall(b"250 2.0.0 queued\r\n")
        elif verb == b"RSET":
            sock.sendall(b"250 2.0.0 ok\r\n")
        elif verb == b"QUIT":
            sock.sendall(b"221 2.0.0 bye\r\n")
            sock.close()
            return
        else:
            sock.sendall(b"500 5.5.2 what\r\n")


def accept(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=lambda c=conn: guarded(c), daemon=True).start()


def guarded(conn):
    try:
        serve(conn)
    except (EOFError, OSError, ssl.SSLError):
        pass


def main():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    emit({"port": listener.getsockname()[1]})
    threading.Thread(target=accept, args=(listener,), daemon=True).start()
    sys.stdin.read()


main()
