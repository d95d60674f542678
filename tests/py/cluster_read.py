"""Read every account of a cluster through every node with imaplib.

Arguments: host, the nodes' IMAP ports (comma-separated), the number of
accounts, the number of messages, the password. Message i went to account
u{i % accounts}; each must be fetched, intact, through every node, and the
bytes a node serves must be the same whichever node relays the session.
"""
import concurrent.futures
import imaplib
import sys


def message(i, accounts):
    k = i % accounts
    body = "".join(f"line {j} of message {i}\r\n" for j in range(i % 7 + 1))
    return (
        f"From: <s@example.org>\r\nTo: <u{k}@example.test>\r\n"
        f"Message-ID: <m{i}@example.org>\r\nSubject: m{i}\r\n\r\n{body}"
    ).encode()


def read(host, port, user, password):
    m = imaplib.IMAP4(host, port)
    m.login(user, password)
    typ, data = m.select("INBOX", readonly=True)
    assert typ == "OK", (user, port, typ, data)
    count = int(data[0])
    got = []
    if count:
        typ, data = m.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK", (user, port, typ)
        got = [part[1] for part in data if isinstance(part, tuple)]
    m.logout()
    assert len(got) == count, (user, port, count, len(got))
    return got


def main():
    host, ports, accounts, messages, password = sys.argv[1:6]
    ports = [int(p) for p in ports.split(",")]
    accounts, messages = int(accounts), int(messages)
    want = {k: {} for k in range(accounts)}
    for i in range(messages):
        want[i % accounts][i] = message(i, accounts)

    def account(k):
        served = None
        for port in ports:
            got = read(host, port, f"u{k}@example.test", password)
            left = dict(want[k])
            for m in got:
                hit = [i for i, w in left.items() if m.endswith(w)]
                assert len(hit) == 1, (k, port, m[:300])
                del left[hit[0]]
            assert not left, (k, port, "missing", sorted(left))
            # The same bytes through every node.
            if served is None:
                served = got
            assert got == served, (k, port)
        return len(served)

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        total = sum(pool.map(account, range(accounts)))
    assert total == messages, total
    print(f"ok sessions={accounts * len(ports)} messages={total * len(ports)}")


main()
