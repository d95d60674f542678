#!/usr/bin/env python3
"""Writes the benchmark corpora in this directory (deterministic; run once,
the outputs are committed). Usage: python3 bench/corpus/generate.py"""
import base64, os, random

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(20261126)

def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)

# --- SMTP: 40 sessions as a client would send them ---------------------------
helos = ["mail-yw1-f172.google.com", "mx01.outbound.example.net", "[192.0.2.15]",
         "smtp.mailer.example.com", "[IPv6:2001:db8::25]", "relay-7.eu-west.example.org"]
senders = ["bounces+4412-ab9f-{n}u=example.test@em1234.mailer.example.com",
           "newsletter@lists.example.org", "", "alice.smith@example.com",
           "SRS0=hA9x=QK=example.net=bob@forwarder.example.com"]
lines = []
for s in range(40):
    lines.append(("EHLO " if s % 7 else "HELO ") + helos[s % len(helos)])
    for m in range(rng.randint(1, 3)):
        snd = senders[(s + m) % len(senders)].format(n=rng.randint(0, 999))
        size = rng.choice([2048, 4096, 6211, 48213, 1048576, 31337])
        params = rng.choice([f" SIZE={size}", f" SIZE={size} BODY=8BITMIME",
                             f" BODY=7BIT SIZE={size}", f" SIZE={size} BODY=8BITMIME SMTPUTF8", ""])
        verb = "MAIL FROM:" if m % 4 else "mail from:"
        lines.append(f"{verb}<{snd}>{params}")
        for r in range(rng.choice([1, 1, 1, 2, 5])):
            rcpt = rng.choice(["{n}u@example.test", "user{n}+tag@example.test",
                               "Postmaster", "first.last.{n}@Example.Test"]).format(n=rng.randint(0, 9999))
            lines.append(f"RCPT TO:<{rcpt}>")
        if m % 3 == 2:
            n = rng.randint(1, 3)
            for c in range(n - 1):
                lines.append(f"BDAT 65536")
            lines.append(f"BDAT {rng.randint(1, 65536)} LAST")
        else:
            lines.append("DATA")
        if rng.random() < 0.3:
            lines.append("RSET")
        if rng.random() < 0.1:
            lines.append("NOOP")
    lines.append("QUIT")
write("smtp-commands.txt", ("\r\n".join(lines) + "\r\n").encode())

# --- IMAP: what a desktop client sends over a session ------------------------
cmds = []
tag = 0
def c(text, literal=None):
    global tag
    tag += 1
    t = f"a{tag:04d}"
    if literal is None:
        cmds.append(f"{t} {text}\r\n".encode())
    else:
        cmds.append(f"{t} {text} {{{len(literal)}}}\r\n".encode() + literal + b"\r\n")
for s in range(10):
    c(f'LOGIN "{s}u@example.test" "bench"')
    c("CAPABILITY")
    c("SELECT INBOX" if s % 2 else 'SELECT "INBOX" (CONDSTORE)')
    lo = rng.randint(1, 500)
    c(f"UID FETCH {lo}:{lo + 49} (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])")
    c(f"UID FETCH {lo + 3} (BODYSTRUCTURE)")
    c(f"UID FETCH {lo + 3} (BODY.PEEK[1.MIME] BODY.PEEK[1]<0.2048>)")
    c(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {rng.randint(100, 90000)})")
    c(f"UID STORE {lo + 3} +FLAGS (\\Seen)")
    c(f"UID STORE {lo}:{lo + 9},{lo + 20} +FLAGS.SILENT (\\Flagged $Important)")
    c('UID SEARCH UNSEEN')
    c('UID SEARCH OR (FROM "alice" SINCE 1-Nov-2026) NOT (OR SEEN DELETED) SUBJECT "invoice"')
    c('UID SEARCH CHARSET UTF-8 OR OR TO "bob@example.test" CC "bob@example.test" NOT HEADER "List-Id" "" 1:1000')
    c('STATUS "Sent" (MESSAGES UNSEEN UIDNEXT UIDVALIDITY)')
    msg = (b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
           b"Subject: draft " + str(s).encode() + b"\r\nMessage-ID: <d" + str(s).encode() +
           b"@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" +
           b"".join(b"Line %d of the draft, long enough to look like prose.\r\n" % i for i in range(40)))
    c('APPEND "Drafts" (\\Draft \\Seen) "26-Nov-2026 15:43:52 +0000"', msg)
    c("NOOP")
    c("LOGOUT")
write("imap-commands.txt", b"".join(cmds))

# --- A nested multipart message, as a phone or webmail client sends it -------
def b64(n):
    data = bytes(rng.getrandbits(8) for _ in range(n))
    s = base64.b64encode(data).decode()
    return "\r\n".join(s[i:i + 76] for i in range(0, len(s), 76))
prose = ("Hello team, attached is the plan for next week. Let's meet at the cafe "
         "at noon and go over the numbers; bring the printouts.")
qp = "\r\n".join([prose[:70] + "=", prose[70:] + " Caf=C3=A9 =E2=80=94 ok?"] * 20)
html = "\r\n".join(f"<p>{prose} <b>{i}</b></p>" for i in range(30))
parts = f"""From: =?utf-8?q?Am=C3=A9lie?= Dupont <amelie@example.com>
To: Bob <bob@example.test>, "Carol, C." <carol@example.test>
Cc: team@lists.example.org
Subject: =?utf-8?q?Caf=C3=A9?= plans and the =?utf-8?b?cmVwb3J0?=
Date: Thu, 26 Nov 2026 15:43:52 +0100
Message-ID: <CAF3x8nested.1@mail.example.com>
In-Reply-To: <prev-42@example.test>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="=_outer_0001"

This is a multi-part message in MIME format.
--=_outer_0001
Content-Type: multipart/alternative; boundary="=_alt_0002"

--=_alt_0002
Content-Type: text/plain; charset=utf-8; format=flowed
Content-Transfer-Encoding: quoted-printable

{qp}
--=_alt_0002
Content-Type: multipart/related; boundary="=_rel_0003"; type="text/html"

--=_rel_0003
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 7bit

<html><body>
{html}
<img src="cid:logo@example.com">
</body></html>
--=_rel_0003
Content-Type: image/png; name="logo.png"
Content-Transfer-Encoding: base64
Content-ID: <logo@example.com>
Content-Disposition: inline; filename="logo.png"

{b64(3000)}
--=_rel_0003--
--=_alt_0002--
--=_outer_0001
Content-Type: application/pdf; name="plan.pdf"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="plan.pdf"; size=12000
Content-Language: en

{b64(12000)}
--=_outer_0001
Content-Type: message/rfc822
Content-Description: forwarded message

From: Dave <dave@example.com>
To: amelie@example.com
Subject: original numbers
Date: Wed, 25 Nov 2026 09:12:00 +0000
Message-ID: <orig-7@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="fwd"

--fwd
Content-Type: text/plain; charset=us-ascii

The numbers are in the sheet.
Dave
--fwd
Content-Type: text/csv; charset=us-ascii; name="numbers.csv"
Content-Disposition: attachment; filename="numbers.csv"

{chr(10).join(f"row{i},{i * 7},{i * 13}" for i in range(60))}
--fwd--
--=_outer_0001--
"""
write("nested-multipart.eml", parts.replace("\r\n", "\n").replace("\n", "\r\n").encode())
