//! IMAP4rev2 (RFC 9051) and BINARY (RFC 3516) end to end: ENABLE
//! IMAP4rev2 and what it changes (no \Recent or RECENT, ESEARCH answers,
//! SELECT's LIST response, UTF-8 mailbox names shared with IMAP4rev1
//! sessions through modified UTF-7), FETCH BINARY / BINARY.SIZE, APPEND of a
//! literal8, raw exchanges and Python imaplib.
#![allow(dead_code)] // each file uses part of the shared helpers

include!("support/imap.rs");

fn msg_plain(subject: &str) -> Vec<u8> {
    format!("From: <a@example.test>\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n")
        .into_bytes()
}

#[test]
fn capabilities_and_enable() {
    let s = Server::options().accounts(&["rev2@example.test"]).start();
    let mut c = Imap::connect(s.imap);
    let caps = c.ok("CAPABILITY").with_prefix("CAPABILITY")[0].clone();
    assert!(caps.contains(" IMAP4rev1 IMAP4rev2 "), "{caps}");
    c.ok(&format!("LOGIN rev2@example.test {}", quote(PASSWORD)));
    let caps = c.ok("CAPABILITY").with_prefix("CAPABILITY")[0].clone();
    for cap in [
        "IMAP4rev2",
        "BINARY",
        "ENABLE",
        "LIST-EXTENDED",
        "LIST-STATUS",
        "ESEARCH",
        "UIDPLUS",
        "MOVE",
        "UNSELECT",
        "SASL-IR",
        "NAMESPACE",
        "IDLE",
        "SPECIAL-USE",
        "STATUS=SIZE",
        "LITERAL+",
        "SEARCHRES",
    ] {
        assert!(caps.split(' ').any(|c| c == cap), "{cap} missing: {caps}");
    }
    let r = c.ok("ENABLE IMAP4rev2");
    assert_eq!(r.lines(), vec!["* ENABLED IMAP4rev2"]);
    // Enabling twice lists nothing new (RFC 5161 3.2).
    let r = c.ok("ENABLE IMAP4rev2");
    assert_eq!(r.lines(), vec!["* ENABLED"]);
}

#[test]
fn rev2_session_semantics_beside_a_rev1_session() {
    let user = "sem@example.test";
    let s = Server::options().accounts(&[user]).start();
    let mut old = Imap::login(s.imap, user, PASSWORD);
    for i in 1..=3 {
        old.append_ok(
            "INBOX",
            if i == 1 { "\\Seen" } else { "" },
            None,
            &msg_plain(&format!("m{i}")),
        );
    }
    let mut c = Imap::login(s.imap, user, PASSWORD);
    c.ok("ENABLE IMAP4rev2");
    // RFC 9051 6.3.2: FLAGS, EXISTS, LIST, and the OK codes; no RECENT,
    // no [UNSEEN].
    let r = c.select("inbox");
    let lines = r.lines();
    assert!(lines.contains(&"* 3 EXISTS".to_string()), "{lines:?}");
    assert!(
        lines.contains(&"* LIST () \"/\" INBOX".to_string()),
        "{lines:?}"
    );
    assert!(r.with_prefix("OK [UIDVALIDITY").len() == 1, "{lines:?}");
    assert!(r.with_prefix("OK [UIDNEXT 4]").len() == 1, "{lines:?}");
    assert!(r.with_prefix("OK [PERMANENTFLAGS").len() == 1, "{lines:?}");
    assert!(r.with_prefix("FLAGS").len() == 1, "{lines:?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("RECENT") || l.contains("UNSEEN")),
        "{lines:?}"
    );
    // No \Recent in FLAGS, although this session holds the recent claim.
    let f = c.ok("FETCH 1:* FLAGS");
    assert!(!f.lines().iter().any(|l| l.contains("\\Recent")), "{f:?}");
    // SEARCH answers ESEARCH (RFC 9051 6.4.4, 7.3.4).
    let r = c.ok("SEARCH UNSEEN");
    assert_eq!(r.lines().len(), 1, "{r:?}");
    assert!(r.lines()[0].starts_with("* ESEARCH (TAG \"t"), "{r:?}");
    assert!(r.lines()[0].ends_with("\") ALL 2:3"), "{r:?}");
    let r = c.ok("UID SEARCH ALL");
    assert_eq!(r.lines().len(), 1);
    assert!(r.lines()[0].ends_with(") UID ALL 1:3"), "{r:?}");
    let r = c.ok("SEARCH DELETED");
    assert_eq!(r.lines().len(), 1);
    assert!(
        r.lines()[0].ends_with(")"),
        "no ALL when nothing matched: {r:?}"
    );
    // RECENT and NEW match nothing (RFC 9051 has no \Recent); OLD all.
    for key in ["RECENT", "NEW"] {
        let r = c.ok(&format!("SEARCH {key}"));
        assert!(r.lines()[0].ends_with(")"), "{r:?}");
    }
    let r = c.ok("SEARCH OLD");
    assert!(r.lines()[0].ends_with(") ALL 1:3"), "{r:?}");
    // ... and STATUS has no RECENT item (RFC 9051 section 9).
    assert!(c.cmd("STATUS INBOX (RECENT)").status.starts_with("BAD"));
    assert!(c
        .cmd("LIST \"\" INBOX RETURN (STATUS (RECENT))")
        .status
        .starts_with("BAD"));
    // A delivery is announced without RECENT.
    old.append_ok("INBOX", "", None, &msg_plain("m4"));
    let r = c.ok("NOOP");
    assert_eq!(r.lines(), vec!["* 4 EXISTS"]);
    // The rev1 session keeps its RECENT and SEARCH.
    let r = old.select("INBOX");
    assert!(r.count("RECENT").is_some(), "{r:?}");
    assert_eq!(old.ok("SEARCH UNSEEN").search(), vec![2, 3, 4]);
}

#[test]
fn utf8_mailbox_names_meet_modified_utf7() {
    let user = "names@example.test";
    let s = Server::options().accounts(&[user]).start();
    let mut v1 = Imap::login(s.imap, user, PASSWORD);
    let mut v2 = Imap::login(s.imap, user, PASSWORD);
    v2.ok("ENABLE IMAP4rev2");

    // A rev1 client's modified UTF-7 name is UTF-8 to a rev2 client.
    v1.ok("CREATE Entw&APw-rfe");
    let l = v2.ok("LIST \"\" \"Entw*\"");
    assert_eq!(
        l.lines(),
        vec!["* LIST (\\HasNoChildren) \"/\" \"Entwürfe\""],
        "{l:?}"
    );
    let l = v2.ok("LIST \"\" \"*rfe\"");
    assert_eq!(l.lines().len(), 1, "{l:?}");
    // ... and a rev2 client's UTF-8 name is modified UTF-7 to rev1.
    v2.ok("CREATE \"台北/日本語\"");
    let l = v1.ok("LIST \"\" \"&U,BTFw-*\"");
    assert_eq!(
        l.lines(),
        vec![
            "* LIST (\\HasChildren) \"/\" &U,BTFw-",
            "* LIST (\\HasNoChildren) \"/\" &U,BTFw-/&ZeVnLIqe-",
        ],
        "{l:?}"
    );
    // `&` is itself to rev2 and `&-` to rev1.
    v2.ok("CREATE \"R&D\"");
    assert_eq!(
        v1.ok("LIST \"\" R*").lines(),
        vec!["* LIST (\\HasNoChildren) \"/\" R&-D"]
    );
    assert_eq!(
        v2.ok("LIST \"\" R*").lines(),
        vec!["* LIST (\\HasNoChildren) \"/\" R&D"]
    );

    // Every command that names a mailbox takes the UTF-8 form.
    let (_, uid) = v2.append_ok("Entwürfe", "", None, &msg_plain("draft"));
    assert_eq!(uid, 1);
    let st = v2.ok("STATUS \"Entwürfe\" (MESSAGES)");
    assert_eq!(st.lines(), vec!["* STATUS \"Entwürfe\" (MESSAGES 1)"]);
    let r = v2.select("Entwürfe");
    assert!(
        r.lines()
            .contains(&"* LIST () \"/\" \"Entwürfe\"".to_string()),
        "{r:?}"
    );
    v2.ok("COPY 1 \"台北/日本語\"");
    v2.ok("SUBSCRIBE \"台北/日本語\"");
    let l = v2.ok("LSUB \"\" \"台北/*\"");
    assert_eq!(l.lines(), vec!["* LSUB () \"/\" \"台北/日本語\""]);
    let l = v1.ok("LSUB \"\" *");
    assert_eq!(l.lines(), vec!["* LSUB () \"/\" &U,BTFw-/&ZeVnLIqe-"]);
    let l = v2.ok("LIST (SUBSCRIBED) \"\" \"*\" RETURN (STATUS (MESSAGES))");
    assert!(
        l.lines()
            .contains(&"* STATUS \"台北/日本語\" (MESSAGES 1)".to_string()),
        "{l:?}"
    );
    v2.ok("RENAME \"台北/日本語\" \"Ünïcödé\"");
    assert_eq!(
        v1.ok("STATUS &ANw-n&AO8-c&APY-d&AOk- (MESSAGES)").lines(),
        vec!["* STATUS &ANw-n&AO8-c&APY-d&AOk- (MESSAGES 1)"]
    );
    v2.ok("DELETE \"Ünïcödé\"");
    assert!(v1.ok("LIST \"\" &ANw-*").lines().is_empty());

    // A rev1 client must use modified UTF-7: 8-bit and invalid forms are
    // refused for new names (RFC 3501 5.1.3).
    for bad in ["\"Entwürfe2\"", "a&b", "&AGE-", "&Jjo"] {
        let r = v1.cmd(&format!("CREATE {bad}"));
        assert!(r.status.starts_with("NO"), "{bad}: {r:?}");
    }
    let r = v1.cmd("RENAME Entw&APw-rfe \"Entwürfe3\"");
    assert!(r.status.starts_with("NO"), "{r:?}");
    // Names must be Net-Unicode (RFC 9051 5.1, RFC 5198): no control
    // characters hidden in modified UTF-7 or sent as UTF-8, only NFC.
    for bad in ["a&AAA-b", "c&AA0ACg-d", "R&AH8-D"] {
        let r = v1.cmd(&format!("CREATE {bad}"));
        assert!(r.status.starts_with("NO"), "{bad}: {r:?}");
    }
    for bad in ["\"é\x01x\"", "\"Entwu\u{308}rfe\"", "\"a\u{2028}b\""] {
        let r = v2.cmd(&format!("CREATE {bad}"));
        assert!(r.status.starts_with("NO"), "{bad}: {r:?}");
    }
    // An existing name is ALREADYEXISTS, in either form.
    assert!(v2
        .cmd("CREATE \"Entwürfe\"")
        .status
        .starts_with("NO [ALREADYEXISTS]"));
    assert!(v1
        .cmd("CREATE Entw&APw-rfe")
        .status
        .starts_with("NO [ALREADYEXISTS]"));
}

/// A multipart message with a quoted-printable part, a base64 part holding
/// binary octets (NUL among them), and a part in an encoding nobody knows.
fn multipart() -> (Vec<u8>, Vec<u8>) {
    let binary: Vec<u8> = (0u8..=255).chain([0, 0, 13, 10, 0]).collect();
    let b64 = b64(&binary);
    let b64_lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let msg = format!(
        "From: <a@example.test>\r\nSubject: parts\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n\
         Gr=C3=BC=C3=9Fe, a long line that is =\r\nsoft-broken.\r\n\
         --b\r\nContent-Type: application/octet-stream\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n\
         --b\r\nContent-Type: application/octet-stream\r\n\
         Content-Transfer-Encoding: x-unknown\r\n\r\nwhatever\r\n\
         --b--\r\n",
        b64_lines.join("\r\n")
    );
    (msg.into_bytes(), binary)
}

#[test]
fn fetch_binary_decodes_parts() {
    let user = "bin@example.test";
    let s = Server::options().accounts(&[user]).start();
    let mut c = Imap::login(s.imap, user, PASSWORD);
    let (msg, binary) = multipart();
    c.append_ok("INBOX", "", None, &msg);
    c.select("INBOX");
    // Quoted-printable undone, as a plain literal (no NUL).
    let f = c.fetch("FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])");
    let text = "Grüße, a long line that is soft-broken.".as_bytes();
    assert_eq!(f[0].get("BINARY[1]").unwrap().bytes(), text);
    assert_eq!(f[0].get("BINARY.SIZE[1]").unwrap().num(), text.len() as u64);
    // Base64 undone; the NULs make it a literal8 (RFC 3516 4.2).
    let r = c.ok("FETCH 1 (BINARY.PEEK[2])");
    let raw = &r.untagged[0];
    let head = format!("* 1 FETCH (BINARY[2] ~{{{}}}\r\n", binary.len());
    assert!(raw.starts_with(head.as_bytes()), "{:?}", text_of(raw));
    assert_eq!(&raw[head.len()..head.len() + binary.len()], &binary[..]);
    let f = c.fetch("FETCH 1 (BINARY.SIZE[2] BINARY.PEEK[2]<253.4>)");
    assert_eq!(
        f[0].get("BINARY.SIZE[2]").unwrap().num(),
        binary.len() as u64
    );
    assert_eq!(
        f[0].get("BINARY[2]<253>").unwrap().bytes(),
        &[253, 254, 255, 0]
    );
    // BINARY[] is the whole message; a part that isn't there is empty.
    let f = c.fetch("FETCH 1 (BINARY.PEEK[] BINARY.PEEK[9] BINARY.SIZE[])");
    assert_eq!(f[0].get("BINARY[]").unwrap().bytes(), &msg[..]);
    assert_eq!(f[0].get("BINARY[9]").unwrap().bytes(), b"");
    assert_eq!(f[0].get("BINARY.SIZE[]").unwrap().num(), msg.len() as u64);
    // An encoding that cannot be undone: NO [UNKNOWN-CTE] (RFC 3516 4.1),
    // with no FETCH response and, without .PEEK, no \Seen either.
    for cmd in [
        "FETCH 1 (BINARY.PEEK[3])",
        "FETCH 1 (FLAGS BINARY[3])",
        "FETCH 1 BINARY.SIZE[3]",
    ] {
        let r = c.cmd(cmd);
        assert!(r.status.starts_with("NO [UNKNOWN-CTE]"), "{r:?}");
        assert!(r.untagged.is_empty(), "{r:?}");
    }
    assert!(!c.ok("FETCH 1 FLAGS").lines()[0].contains("\\Seen"));
    // BINARY without .PEEK sets \Seen, like BODY[].
    let f = c.fetch("FETCH 1 (BINARY[1])");
    let flags = format!("{:?}", f[0].get("FLAGS"));
    assert!(flags.contains("Seen"), "{flags}");
    // Grammar: part numbers only.
    for bad in [
        "FETCH 1 BINARY[1.MIME]",
        "FETCH 1 BINARY[TEXT]",
        "FETCH 1 BINARY.SIZE[1]<0.1>",
    ] {
        assert!(c.cmd(bad).status.starts_with("BAD"), "{bad}");
    }
}

#[test]
fn append_literal8_keeps_binary_content() {
    let user = "lit8@example.test";
    let s = Server::options().accounts(&[user]).start();
    let mut c = Imap::login(s.imap, user, PASSWORD);
    let msg = b"From: <a@example.test>\r\nSubject: nul\r\n\r\na\0b\r\n".to_vec();
    // A plain literal may not hold NUL (RFC 3501 4.3).
    let r = c.append("INBOX", "", None, &msg);
    assert!(r.status.starts_with("NO"), "{r:?}");
    // A literal8 may, synchronizing or not.
    let t = c.tag();
    let mut cmd = format!("{t} APPEND INBOX ~{{{}}}\r\n", msg.len()).into_bytes();
    c.send(&cmd);
    assert!(c.line().starts_with('+'));
    c.send(&[&msg[..], b"\r\n"].concat());
    let r = c.until(&t);
    assert_eq!(appenduid(&r.status).1, 1);
    cmd = format!("APPEND INBOX (\\Seen) ~{{{}+}}\r\n", msg.len()).into_bytes();
    cmd.extend_from_slice(&msg);
    let r = c.cmd_bytes(&cmd);
    assert_eq!(appenduid(&r.status).1, 2);
    c.select("INBOX");
    // BINARY[] gives the octets back as they came; BODY[] cannot carry a
    // NUL and shows a space in its place, at the same offsets.
    let r = c.ok("FETCH 1:2 (BINARY.PEEK[])");
    let head = format!("* 1 FETCH (BINARY[] ~{{{}}}\r\n", msg.len());
    assert!(r.untagged[0].starts_with(head.as_bytes()), "{r:?}");
    assert_eq!(&r.untagged[0][head.len()..head.len() + msg.len()], &msg[..]);
    let f = c.fetch("FETCH 2 (BODY.PEEK[] RFC822.SIZE)");
    let body = f[0].get("BODY[]").unwrap().bytes().to_vec();
    assert_eq!(body.len(), msg.len());
    assert_eq!(
        body,
        msg.iter()
            .map(|&b| if b == 0 { b' ' } else { b })
            .collect::<Vec<u8>>()
    );
    // A literal8 is only for APPEND's message.
    let r = c.cmd_bytes(b"SEARCH BODY ~{1+}\r\nx");
    assert!(r.status.starts_with("BAD"), "{r:?}");
    c.ok("NOOP");
}

#[test]
fn python_imaplib_speaks_rev2() {
    let user = "pyrev2@example.test";
    let s = Server::options().accounts(&[user]).start();
    let (msg, _) = multipart();
    let mut c = Imap::login(s.imap, user, PASSWORD);
    c.append_ok("INBOX", "", None, &msg);
    c.ok("LOGOUT");
    let out = python_code(&format!(
        r#"
import imaplib
M = imaplib.IMAP4("127.0.0.1", {port})
assert "IMAP4REV2" in M.capabilities, M.capabilities
M.login("{user}", "{password}")
typ, data = M.enable("IMAP4rev2")
assert typ == "OK", (typ, data)
# Names go out in UTF-8 from here on.
M._encoding = "utf-8"
typ, data = M.create('"Entwürfe/台北"')
assert typ == "OK", (typ, data)
typ, data = M.list('""', '"Entw*"')
assert data == ['(\\HasChildren) "/" "Entwürfe"'.encode(), '(\\HasNoChildren) "/" "Entwürfe/台北"'.encode()], data
typ, data = M.select("INBOX")
assert typ == "OK" and data == [b"1"], (typ, data)
assert "RECENT" not in M.untagged_responses, M.untagged_responses
typ, data = M.search(None, "ALL")
esearch = M.untagged_responses.get("ESEARCH")
assert esearch and esearch[-1].endswith(b"ALL 1"), (typ, data, esearch)
typ, data = M.fetch("1", "(BINARY.PEEK[1] BINARY.SIZE[2])")
assert typ == "OK", (typ, data)
assert data[0][1] == "Grüße, a long line that is soft-broken.".encode(), data
assert b"BINARY.SIZE[2] 261" in data[1], data
typ, data = M.copy("1", '"Entwürfe/台北"')
assert typ == "OK", (typ, data)
typ, data = M.status('"Entwürfe/台北"', "(MESSAGES)")
assert data == ['"Entwürfe/台北" (MESSAGES 1)'.encode()], data
M.logout()
print("rev2 ok")
"#,
        port = s.imap.port(),
        user = user,
        password = PASSWORD,
    ));
    assert!(out.contains("rev2 ok"), "{out}");
}

/// Anonymous resident memory of a process (not the mapped segments).
fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// A message whose second part is `size` octets of binary data (NULs
/// included) in base64.
fn attachment(i: usize, size: usize) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..size).map(|j| ((j * 7 + i) % 251) as u8).collect();
    let b64 = b64(&data);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let msg = format!(
        "From: <a@example.test>\r\nSubject: big {i}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --b\r\nContent-Type: application/octet-stream\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        lines.join("\r\n")
    );
    (msg.into_bytes(), data)
}

/// Attack test: a FETCH of many large BINARY parts must not hold them all
/// decoded in memory; each is decoded while it is written.
#[test]
fn binary_fetch_of_a_large_mailbox_stays_bounded() {
    let user = "binbig@example.test";
    let s = Server::options().accounts(&[user]).start();
    let mut c = Imap::login(s.imap, user, PASSWORD);
    const N: usize = 12;
    const SIZE: usize = 1536 * 1024;
    for i in 0..N {
        c.append_ok("INBOX", "", None, &attachment(i, SIZE).0);
    }
    // A large message with NULs, APPENDed as a literal8.
    let nul: Vec<u8> = [&b"Subject: nul\r\n\r\n"[..], &vec![0u8; 100_000], b"\r\n"].concat();
    let mut cmd = format!("APPEND INBOX ~{{{}+}}\r\n", nul.len()).into_bytes();
    cmd.extend_from_slice(&nul);
    assert!(c.cmd_bytes(&cmd).status.starts_with("OK"));
    c.select("INBOX");
    let pid = s.pid().expect("server pid");
    let before = rss_anon(pid);
    let t = c.tag();
    c.send(format!("{t} FETCH 1:{N} (BINARY.PEEK[2])\r\n").as_bytes());
    let mut seen = 0;
    loop {
        let r = c.response();
        if r.starts_with(t.as_bytes()) {
            assert!(
                r.starts_with(format!("{t} OK").as_bytes()),
                "{}",
                text_of(&r)
            );
            break;
        }
        let head = format!("* {} FETCH (BINARY[2] ~{{{SIZE}}}\r\n", seen + 1);
        assert!(r.starts_with(head.as_bytes()), "{}", text_of(&r));
        assert_eq!(
            &r[head.len()..head.len() + SIZE],
            &attachment(seen, SIZE).1[..]
        );
        seen += 1;
    }
    assert_eq!(seen, N);
    let grown = rss_anon(pid).saturating_sub(before);
    // All of them decoded at once would be 18 MiB.
    assert!(grown < 8 << 20, "anonymous memory grew by {grown} octets");
    // A partial range of a decoded part, and the NUL message both ways.
    let f = c.fetch("FETCH 3 (BINARY.PEEK[2]<1000000.5000>)");
    assert_eq!(
        f[0].get("BINARY[2]<1000000>").unwrap().bytes(),
        &attachment(2, SIZE).1[1_000_000..1_005_000]
    );
    let f = c.fetch(&format!("FETCH {} (BINARY.PEEK[] BODY.PEEK[])", N + 1));
    assert_eq!(f[0].get("BINARY[]").unwrap().bytes(), &nul[..]);
    let spaced: Vec<u8> = nul.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
    assert_eq!(f[0].get("BODY[]").unwrap().bytes(), &spaced[..]);
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}
