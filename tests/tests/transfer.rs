//! `ringmail export`, `import` and `backup` against a running server, with
//! Python's `mailbox` module writing and reading the archives
//! (py/mail_archives.py) independently of ringmail's code.
use std::path::Path;
use std::process::Command;

use ringmail_tests::*;

fn py(args: &[&str]) -> String {
    let script = workspace_root().join("tests/py/mail_archives.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert_ok(&out, &format!("mail_archives.py {args:?}"));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn cli(s: &Server, args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    let data = s.data.to_str().unwrap().to_string();
    all.push("--data");
    all.push(&data);
    ringmail(&all, "")
}

fn dump(s: &Server, user: &str, pw: &str) -> serde_json::Value {
    serde_json::from_str(&py(&["dump", &s.imap.port().to_string(), user, pw])).unwrap()
}

/// `ringmail import --format FORMAT SRC ACCOUNT` against the running server.
fn import(s: &Server, format: &str, src: &Path, account: &str) -> std::process::Output {
    cli(
        s,
        &["import", "--format", format, src.to_str().unwrap(), account],
    )
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn deliver(s: &Server, to: &str, n: usize) {
    for i in 0..n {
        let msg = format!(
            "Subject: delivered {i}\r\nFrom: a@b.test\r\n\r\nFrom the top {i}\r\n>From quoted\r\n"
        );
        smtp_send(s.smtp, "a@b.test", &[to], msg.as_bytes());
    }
}

#[test]
fn maildir_and_mbox_round_trip_keep_bodies_flags_keywords_folders() {
    let s = Server::options()
        .accounts(&["carol@example.test", "dave@example.test"])
        .start();
    deliver(&s, "alice@example.test", 4);
    py(&[
        "seed",
        &s.imap.port().to_string(),
        "alice@example.test",
        "alice-secret",
    ]);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let o = cli(
        &s,
        &["export", "alice@example.test", "--format", "maildir", dir],
    );
    assert_ok(&o, "export maildir");
    assert!(
        text(&o).contains("exported alice@example.test"),
        "{}",
        text(&o)
    );
    // Python reads what we wrote: folders and flags as Maildir letters.
    let md = out.path().join("alice@example.test");
    let seen: serde_json::Value =
        serde_json::from_str(&py(&["read-maildir", md.to_str().unwrap()])).unwrap();
    assert_eq!(seen["INBOX"].as_array().unwrap().len(), 5, "{seen}");
    assert_eq!(seen["Work.Sub"][0][0], "FSab", "{seen}");
    assert_eq!(seen["Work"][0][0], "D", "{seen}");
    let uidlist = std::fs::read_to_string(md.join("dovecot-uidlist")).unwrap();
    assert!(uidlist.starts_with("3 V"), "{uidlist}");
    let kw = std::fs::read_to_string(md.join(".Work.Sub/dovecot-keywords")).unwrap();
    assert_eq!(kw, "0 $Label1\n1 custom\n");
    // Import into another account: the same mailboxes, flags, keywords,
    // internal dates and bytes.
    let o = import(&s, "maildir", &md, "carol@example.test");
    assert_ok(&o, "import maildir");
    assert!(
        text(&o).contains("7 added, 0 already present, 0 refused"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("UIDs kept"), "{}", text(&o));
    let a = dump(&s, "alice@example.test", "alice-secret");
    let c = dump(&s, "carol@example.test", PASSWORD);
    assert_eq!(a, c, "alice and her copy differ");
    // A rerun adds nothing.
    let o = import(&s, "maildir", &md, "carol@example.test");
    assert_ok(&o, "import maildir again");
    assert!(
        text(&o).contains("0 added, 7 already present"),
        "{}",
        text(&o)
    );
    assert_eq!(dump(&s, "carol@example.test", PASSWORD), a);
    // mbox: bodies, folders, dates and flags survive.
    // Exporting again over the Maildir export is refused.
    let o = cli(
        &s,
        &["export", "alice@example.test", "--format", "mbox", dir],
    );
    assert!(
        !o.status.success() && text(&o).contains("not empty"),
        "{}",
        text(&o)
    );
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let o = cli(&s, &["export", "--all", "--format", "mbox", dir]);
    assert_ok(&o, "export mbox --all");
    assert!(
        text(&o).contains("exported carol@example.test"),
        "{}",
        text(&o)
    );
    let inbox = out.path().join("alice@example.test/INBOX");
    let hashes: serde_json::Value =
        serde_json::from_str(&py(&["read-mbox", inbox.to_str().unwrap()])).unwrap();
    assert_eq!(hashes.as_array().unwrap().len(), 5);
    let raw = std::fs::read_to_string(&inbox).unwrap();
    assert!(
        raw.contains("\n>From the top 0\n>>From quoted\n"),
        "mboxrd quoting: {raw}"
    );
    let o = import(
        &s,
        "mbox",
        &out.path().join("alice@example.test"),
        "dave@example.test",
    );
    assert_ok(&o, "import mbox dir");
    // Flags and keywords (in Status:, X-Status:, X-Keywords: lines),
    // bodies, folders and internal dates.
    let d = dump(&s, "dave@example.test", PASSWORD);
    assert_eq!(a, d, "alice and her copy through mbox differ");
    // A rerun adds nothing: the status lines were taken out again.
    let o = import(
        &s,
        "mbox",
        &out.path().join("alice@example.test"),
        "dave@example.test",
    );
    assert!(text(&o).contains(" 0 added"), "{}", text(&o));
}

#[test]
fn python_written_maildir_and_mbox_import() {
    let s = Server::new();
    let dir = tempfile::tempdir().unwrap();
    let o = cli(
        &s,
        &[
            "export",
            "nobody@example.test",
            "--format",
            "maildir",
            dir.path().to_str().unwrap(),
        ],
    );
    assert!(
        !o.status.success() && text(&o).contains("no account nobody@example.test"),
        "{}",
        text(&o)
    );
    let md = dir.path().join("Maildir");
    py(&["write-maildir", md.to_str().unwrap()]);
    let o = import(&s, "maildir", &md, "bob@example.test");
    assert_ok(&o, "import python maildir");
    assert!(text(&o).contains("5 added"), "{}", text(&o));
    let b = dump(&s, "bob@example.test", "bob-secret");
    assert_eq!(b["INBOX"].as_array().unwrap().len(), 3, "{b}");
    let work = b["Work"].as_array().unwrap();
    assert_eq!(work.len(), 2);
    assert!(
        work.iter()
            .all(|m| m[0] == serde_json::json!(["\\Flagged"])),
        "{b}"
    );
    let flagged: Vec<_> = b["INBOX"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].clone())
        .collect();
    assert!(
        flagged.contains(&serde_json::json!(["\\Answered", "\\Seen"])),
        "{b}"
    );
    // Python's mbox (mboxo quoting) into INBOX.
    let mb = dir.path().join("in.mbox");
    py(&["write-mbox", mb.to_str().unwrap()]);
    let o = import(&s, "mbox", &mb, "alice@example.test");
    assert_ok(&o, "import python mbox");
    assert!(text(&o).contains("3 added"), "{}", text(&o));
    // Exported again and read by Python: the bodies Python wrote (CRLF as LF).
    let out = tempfile::tempdir().unwrap();
    assert_ok(
        &cli(
            &s,
            &[
                "export",
                "alice@example.test",
                "--format",
                "mbox",
                out.path().to_str().unwrap(),
            ],
        ),
        "export",
    );
    let before: serde_json::Value =
        serde_json::from_str(&py(&["read-mbox", mb.to_str().unwrap()])).unwrap();
    let after: serde_json::Value = serde_json::from_str(&py(&[
        "read-mbox",
        out.path()
            .join("alice@example.test/INBOX")
            .to_str()
            .unwrap(),
    ]))
    .unwrap();
    assert_eq!(before, after, "mbox bodies changed on the way through");
    let a = dump(&s, "alice@example.test", "alice-secret");
    let dates: Vec<_> = a["INBOX"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[2].clone())
        .collect();
    assert!(
        dates.contains(&serde_json::json!(" 2-Jan-2024 03:04:05 +0000")),
        "{a}"
    );
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

#[test]
fn dovecot_maildir_keeps_uids_keywords_and_reports_bad_files() {
    let s = Server::options()
        .config("local_domains = [\"example.test\"]\n[limits]\nmessage_size_max = 4096\n")
        .accounts(&["erin@example.test"])
        .start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    // Dovecot's layout (wiki: Maildir format, dovecot-uidlist version 3,
    // dovecot-keywords), written by hand.
    let msg = |n: u32| format!("Subject: dovecot {n}\nMessage-ID: <{n}@x>\n\nbody {n}\n");
    write(&root.join("dovecot-uidlist"), b"3 V1600000000 N40 G0123456789abcdef\n10 :1600000001.M1P1.host,S=40,W=44\n20 :1600000002.M2P1.host,S=40,W=44\n30 W44 :1600000003.M3P1.host,S=40\n");
    write(
        &root.join("dovecot-keywords"),
        b"0 $Forwarded\n1 Work\n3 project-x\n",
    );
    write(
        &root.join("cur/1600000001.M1P1.host,S=40,W=44:2,Sa"),
        msg(1).as_bytes(),
    );
    write(
        &root.join("cur/1600000002.M2P1.host,S=40,W=44:2,FRbd"),
        msg(2).as_bytes(),
    );
    write(
        &root.join("new/1600000003.M3P1.host,S=40"),
        msg(3).as_bytes(),
    );
    // A corrupt file, and one over message_size_max (4096).
    write(
        &root.join("cur/1600000004.M4P1.host:2,S"),
        b"\x00\x01\x02garbage\xff",
    );
    write(
        &root.join("cur/1600000005.M5P1.host:2,S"),
        format!("Subject: big\n\n{}\n", "x".repeat(10_000)).as_bytes(),
    );
    write(
        &root.join(".Lists.Rust/dovecot-uidlist"),
        b"3 V1700000000 N3\n2 :1700000002.M9P9.host,S=30\n",
    );
    write(
        &root.join(".Lists.Rust/cur/1700000002.M9P9.host,S=30:2,T"),
        msg(9).as_bytes(),
    );
    let o = import(&s, "maildir", &root, "erin@example.test");
    let t = text(&o);
    assert!(
        !o.status.success(),
        "refusals make the exit status fail: {t}"
    );
    assert!(t.contains("1600000004.M4P1.host:2,S: not a message"), "{t}");
    assert!(
        t.contains("1600000005.M5P1.host:2,S") && t.contains("over message_size_max"),
        "{t}"
    );
    assert!(t.contains("4 added, 0 already present, 2 refused"), "{t}");
    assert!(t.contains("mailboxes created: Lists/Rust"), "{t}");
    // UIDs and keywords, seen over IMAP.
    let mut c = Client::connect(s.imap);
    c.line();
    c.send(format!("a LOGIN erin@example.test {PASSWORD}\r\n").as_bytes());
    c.line();
    c.send(b"b SELECT INBOX\r\nc UID FETCH 1:* (FLAGS)\r\n");
    let mut lines = Vec::new();
    loop {
        let l = c.line();
        let done = l.starts_with("c ");
        lines.push(l);
        if done {
            break;
        }
    }
    let all = lines.join("\n");
    assert!(
        all.contains("FLAGS (\\Seen \\Recent $Forwarded) UID 10)"),
        "{all}"
    );
    assert!(
        all.contains("FLAGS (\\Answered \\Flagged \\Recent Work project-x) UID 20)"),
        "{all}"
    );
    assert!(all.contains("FLAGS (\\Recent) UID 30)"), "{all}");
    c.send(b"d SELECT Lists/Rust\r\n");
    let mut sel = String::new();
    loop {
        let l = c.line();
        sel.push_str(&l);
        if l.starts_with("d ") {
            break;
        }
    }
    // The UID is kept; the UIDVALIDITY only when above every value the
    // account used (RFC 3501 2.3.1.1), which an old one is not.
    assert!(sel.contains("[UIDNEXT 3]"), "{sel}");
    // Rerun: nothing twice.
    let o = import(&s, "maildir", &root, "erin@example.test");
    assert!(
        text(&o).contains("0 added, 4 already present, 2 refused"),
        "{}",
        text(&o)
    );
}

/// A backup taken while a thread keeps sending mail: a server started on
/// the copy serves every message acknowledged before the backup began,
/// byte for byte, and nothing torn.
#[test]
fn backup_under_load_serves_every_acknowledged_message() {
    let s = Server::new();
    deliver(&s, "alice@example.test", 20);
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let acked = std::sync::Arc::new(AtomicUsize::new(0));
    let smtp = s.smtp;
    let sender = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 5000 {
                let msg = format!("Subject: load {n}\r\n\r\nload body {n}\r\n");
                smtp_send(smtp, "a@b.test", &["bob@example.test"], msg.as_bytes());
                n += 1;
                acked.store(n, Ordering::SeqCst);
            }
            n
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Everything acknowledged before the backup starts.
    let before_alice = dump(&s, "alice@example.test", "alice-secret");
    let before_bob = dump(&s, "bob@example.test", "bob-secret");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy");
    // An export while mail arrives: a snapshot holding at least what was
    // acknowledged before it began, every file whole (Python reads them all).
    let exp = tempfile::tempdir().unwrap();
    let acked_export = acked.load(Ordering::SeqCst);
    let o = cli(
        &s,
        &[
            "export",
            "bob@example.test",
            "--format",
            "maildir",
            exp.path().to_str().unwrap(),
        ],
    );
    assert_ok(&o, "export under load");
    let md = exp.path().join("bob@example.test");
    let seen: serde_json::Value =
        serde_json::from_str(&py(&["read-maildir", md.to_str().unwrap()])).unwrap();
    let exported = seen["INBOX"].as_array().unwrap().len();
    assert!(exported >= acked_export, "{exported} < {acked_export}");
    let uidlist = std::fs::read_to_string(md.join("dovecot-uidlist")).unwrap();
    assert_eq!(uidlist.lines().count(), exported + 1, "{uidlist}");
    let acked_before = acked.load(Ordering::SeqCst);
    let o = cli(&s, &["backup", copy.to_str().unwrap()]);
    assert_ok(&o, "backup");
    let acked_after = acked.load(Ordering::SeqCst);
    eprintln!(
        "backup: {} ({acked_before} load messages acknowledged before, {acked_after} after)",
        text(&o).trim()
    );
    assert!(
        acked_after > acked_before,
        "mail kept being accepted during the backup"
    );
    assert!(text(&o).contains("backup of"), "{}", text(&o));
    // Mail and password hashes: nothing in the copy is open to others,
    // except hard links, which share the live file's mode.
    assert_private(&copy);
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let sent = sender.join().unwrap();
    assert!(sent > 0);
    assert!(std::fs::read_to_string(copy.join("meta"))
        .unwrap()
        .contains("format"));
    // The copy as a server of its own.
    let out = ringmail(&["inspect", "--data", copy.to_str().unwrap()], "");
    assert_ok(&out, "inspect the copy");
    let archive = dir.path().join("copy.tgz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&copy)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let c = Server::options().seed(&archive).start();
    let after_alice = dump(&c, "alice@example.test", "alice-secret");
    assert_eq!(after_alice, before_alice);
    let after_bob = dump(&c, "bob@example.test", "bob-secret");
    let have: std::collections::HashSet<String> = after_bob["INBOX"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[1].as_str().unwrap().to_string())
        .collect();
    for m in before_bob["INBOX"].as_array().unwrap() {
        assert!(
            have.contains(m[1].as_str().unwrap()),
            "message {m} missing from the copy"
        );
    }
}

/// Speak the import protocol on the control socket directly (raw frames,
/// as a hostile or broken client could); returns the server's answers.
fn raw_import(s: &Server, account: &str, frames: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(s.data.join("control.sock")).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    c.write_all(format!("import {account}\n").as_bytes())
        .unwrap();
    c.write_all(frames).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

fn frame(uid: u32, body: &[u8]) -> Vec<u8> {
    let mut f = format!("message {uid} 0 1700000000 {}\n", body.len()).into_bytes();
    f.extend_from_slice(body);
    f
}

#[test]
fn import_refuses_uid_max_and_keeps_uids_ascending() {
    let s = Server::new();
    let mut frames = b"mailbox 0 Hostile\n".to_vec();
    frames.extend(frame(u32::MAX, b"Subject: max\r\n\r\none\r\n"));
    frames.extend(frame(7, b"Subject: seven\r\n\r\ntwo\r\n"));
    frames.extend(frame(3, b"Subject: three\r\n\r\nthree\r\n"));
    frames.extend(frame(0, b"Subject: zero\r\n\r\nfour\r\n"));
    frames.extend(frame(u32::MAX - 1, b"Subject: last\r\n\r\nfive\r\n"));
    frames.extend_from_slice(b"end\n");
    let answers = raw_import(&s, "alice@example.test", &frames);
    let added: Vec<&str> = answers
        .lines()
        .filter(|l| l.starts_with("added "))
        .collect();
    // 4294967295 and 0 are not kept; 3 after 7 would descend: renumbered.
    assert_eq!(
        added,
        [
            "added 1",
            "added 7",
            "added 8",
            "added 9",
            "added 4294967294"
        ],
        "{answers}"
    );
    assert!(answers.ends_with("done\n"), "{answers}");
    // UIDNEXT is now 4294967295: one more message has no UID to take, and
    // is refused without harm to the shard.
    let mut more = b"mailbox 0 Hostile\n".to_vec();
    more.extend(frame(0, b"Subject: over\r\n\r\nsix\r\n"));
    more.extend_from_slice(b"end\n");
    let answers = raw_import(&s, "alice@example.test", &more);
    assert!(answers.contains("no UIDs left"), "{answers}");
    let d = dump(&s, "alice@example.test", "alice-secret");
    assert_eq!(d["Hostile"].as_array().unwrap().len(), 5, "{d}");
}

#[test]
fn export_carries_bodies_that_look_like_errors_and_end_markers() {
    let s = Server::new();
    // 7 * 320000 bytes span over eight 256 KiB chunks; a chunk holds
    // 262144 = 7 * 37449 + 1 bytes, so some chunk starts on `error: `.
    let mut body = b"Subject: errors\r\n\r\n".to_vec();
    body.extend(b"error: ".repeat(320_000));
    body.extend_from_slice(b"\r\nend\r\n");
    let mut frames = b"mailbox 0 INBOX\n".to_vec();
    frames.extend(frame(0, &body));
    frames.extend(frame(0, b"Subject: e2\r\n\r\nend\n"));
    frames.extend_from_slice(b"end\n");
    let answers = raw_import(&s, "alice@example.test", &frames);
    assert_eq!(answers.matches("added ").count(), 2, "{answers}");
    for format in ["maildir", "mbox"] {
        let out = tempfile::tempdir().unwrap();
        let o = cli(
            &s,
            &[
                "export",
                "alice@example.test",
                "--format",
                format,
                out.path().to_str().unwrap(),
            ],
        );
        assert_ok(&o, "export of error-looking bodies");
        assert!(text(&o).contains("2 messages"), "{}", text(&o));
    }
}

#[test]
fn reimport_of_an_export_adds_nothing_even_with_odd_line_ends() {
    let s = Server::new();
    // Stored as sent: a bare LF, a CR CR LF and no final line end, which
    // the LF files of Maildir and mbox cannot give back byte for byte.
    let mut frames = b"mailbox 0 INBOX\n".to_vec();
    frames.extend(frame(0, b"Subject: odd\r\n\r\nbare\nlf and\r\r\nend"));
    frames.extend(frame(0, b"Subject: plain\r\n\r\nplain\r\n"));
    frames.extend_from_slice(b"end\n");
    let answers = raw_import(&s, "alice@example.test", &frames);
    assert_eq!(answers.matches("added ").count(), 2, "{answers}");
    let before = dump(&s, "alice@example.test", "alice-secret");
    for format in ["maildir", "mbox"] {
        let out = tempfile::tempdir().unwrap();
        let o = cli(
            &s,
            &[
                "export",
                "alice@example.test",
                "--format",
                format,
                out.path().to_str().unwrap(),
            ],
        );
        assert_ok(&o, "export");
        let src = out.path().join("alice@example.test");
        let o = import(&s, format, &src, "alice@example.test");
        assert_ok(&o, "re-import");
        assert!(text(&o).contains(" 0 added, "), "{format}: {}", text(&o));
        assert_eq!(dump(&s, "alice@example.test", "alice-secret"), before);
    }
}

/// Every directory under `dir` is 0700 and every file of its own 0600;
/// files hard-linked to the live data directory are reported.
fn assert_private(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700, "{}", dir.display());
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            assert_private(&e.path());
        } else if m.nlink() > 1 {
            eprintln!(
                "hard link {} mode {:o}",
                e.path().display(),
                m.mode() & 0o777
            );
        } else {
            assert_eq!(m.mode() & 0o777, 0o600, "{}", e.path().display());
        }
    }
}

/// A Dovecot (`dovecot -c FILE`) of its own, with no protocols: the auth
/// service that dovecot-lda and doveadm look users up through. Stopped when
/// dropped.
struct Dovecot {
    conf: std::path::PathBuf,
}

impl Dovecot {
    fn run(&self, program: &str, args: &[&str], stdin: &[u8]) {
        use std::io::Write;
        let mut child = Command::new(program)
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = wait_output(child, std::time::Duration::from_secs(60));
        assert_ok(&out, &format!("{program} {args:?}"));
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("dovecot")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .output();
    }
}

/// A Maildir written by Dovecot itself (the LDA that Postfix hands local
/// mail to, and doveadm for folders and flags), imported with its UIDs,
/// flags, keywords, folders and bodies; a rerun adds nothing.
#[test]
fn maildir_written_by_dovecot_imports_exactly() {
    use std::os::unix::fs::PermissionsExt;
    let lda = Path::new("/usr/lib/dovecot/dovecot-lda");
    assert!(
        lda.exists(),
        "dovecot-lda missing: install dovecot-core (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = root.join("home");
    std::fs::create_dir(&home).unwrap();
    // Dovecot never delivers as root: the mail user is nobody.
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let conf = root.join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "base_dir = {r}/run\nstate_dir = {r}/state\nlog_path = {r}/dovecot.log\n\
             ssl = no\nprotocols =\nfirst_valid_uid = 1\n\
             mail_location = maildir:{r}/home/Maildir\n\
             namespace inbox {{\n  inbox = yes\n  separator = /\n}}\n\
             userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home={r}/home\n}}\n\
             passdb {{\n  driver = static\n  args = nopassword=y\n}}\n",
            r = root.display()
        ),
    )
    .unwrap();
    let st = Command::new("dovecot")
        .arg("-c")
        .arg(&conf)
        .status()
        .unwrap();
    assert!(st.success(), "dovecot did not start");
    let dovecot = Dovecot { conf };
    let lda = lda.to_str().unwrap();
    let m1 = b"From: a@b.test\r\nTo: carol@example.test\r\nSubject: one\r\nDate: Mon, 02 Jan 2023 10:00:00 +0000\r\n\r\nhello one\r\n.leading dot\r\n";
    let m2 = b"From: a@b.test\r\nSubject: two\r\n\r\nhello two\r\n";
    let m3 = b"From: carol@example.test\r\nSubject: sent\r\n\r\nI sent this\r\n";
    let m4 = b"From: a@b.test\r\nSubject: archived\r\n\r\nold\r\n";
    dovecot.run(lda, &["-d", "carol", "-f", "a@b.test"], m1);
    dovecot.run(lda, &["-d", "carol", "-f", "a@b.test"], m2);
    dovecot.run(
        "doveadm",
        &["mailbox", "create", "-u", "carol", "Sent", "Archive"],
        b"",
    );
    dovecot.run(lda, &["-d", "carol", "-m", "Sent"], m3);
    dovecot.run("doveadm", &["save", "-u", "carol", "-m", "Archive"], m4);
    dovecot.run(
        "doveadm",
        &[
            "flags",
            "add",
            "-u",
            "carol",
            "\\Seen $Important",
            "mailbox",
            "INBOX",
            "uid",
            "1",
        ],
        b"",
    );
    dovecot.run(
        "doveadm",
        &[
            "flags",
            "add",
            "-u",
            "carol",
            "\\Flagged \\Answered",
            "mailbox",
            "INBOX",
            "uid",
            "2",
        ],
        b"",
    );
    drop(dovecot);
    let maildir = home.join("Maildir");
    let uidlist = std::fs::read_to_string(maildir.join("dovecot-uidlist")).unwrap();
    let uidvalidity: u32 = uidlist
        .split_whitespace()
        .find_map(|w| w.strip_prefix('V'))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no UIDVALIDITY in {uidlist}"));

    let s = Server::options().accounts(&["carol@example.test"]).start();
    let o = import(&s, "maildir", &maildir, "carol@example.test");
    assert_ok(&o, "import of Dovecot's Maildir");
    assert!(text(&o).contains("4 added"), "{}", text(&o));
    let o = import(&s, "maildir", &maildir, "carol@example.test");
    assert_ok(&o, "second import");
    assert!(text(&o).contains("0 added"), "{}", text(&o));

    // Python's imaplib reads it back: UIDs, UIDVALIDITY, flags, keywords,
    // folders, and the bodies Dovecot was given.
    let script = r#"
import imaplib, json, re, sys
m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
m.login('carol@example.test', sys.argv[2])
out = {}
for box in ['INBOX', 'Sent', 'Archive']:
    typ, _ = m.select(box, readonly=True)
    assert typ == 'OK', box
    uv = int(m.response('UIDVALIDITY')[1][0])
    typ, data = m.uid('FETCH', '1:*', '(UID FLAGS BODY.PEEK[])')
    msgs = []
    for i, part in enumerate(data):
        if isinstance(part, tuple):
            tail = data[i + 1] if i + 1 < len(data) and isinstance(data[i + 1], bytes) else b''
            meta = part[0] + b' ' + tail
            uid = int(re.search(rb'UID (\d+)', meta).group(1))
            flags = sorted(f.decode() for f in imaplib.ParseFlags(meta) if f != b'\\Recent')
            msgs.append([uid, flags, part[1].decode()])
    out[box] = [uv, msgs]
m.logout()
print(json.dumps(out))
"#;
    let got = python_code(&format!(
        "import sys\nsys.argv = ['x', '{}', '{}']\n{script}",
        s.imap.port(),
        PASSWORD
    ));
    let got: serde_json::Value = serde_json::from_str(got.trim()).unwrap();
    let body = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    // Dovecot's UIDVALIDITY (its mailbox's creation time) is below the one
    // the account's INBOX already has, so ours stays (RFC 3501 2.3.1.1:
    // a value at or below one the account used might name other messages);
    // the UIDs are Dovecot's.
    assert!(
        got["INBOX"][0].as_u64().unwrap() >= u64::from(uidvalidity),
        "{got}"
    );
    assert_eq!(
        got["INBOX"][1],
        serde_json::json!([
            [1, ["$Important", "\\Seen"], body(m1)],
            [2, ["\\Answered", "\\Flagged"], body(m2)]
        ]),
        "{got}"
    );
    assert_eq!(
        got["Sent"][1],
        serde_json::json!([[1, [], body(m3)]]),
        "{got}"
    );
    assert_eq!(
        got["Archive"][1],
        serde_json::json!([[1, [], body(m4)]]),
        "{got}"
    );
}
