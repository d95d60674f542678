//! OBJECTID (RFC 8474) end to end: MAILBOXID from CREATE, SELECT, STATUS
//! and LIST-STATUS, stable across RENAME and new after DELETE + CREATE;
//! EMAILID from FETCH, kept by COPY and MOVE, found by SEARCH, the same
//! after kill -9, a clean restart, and a restart on another number of
//! cores; THREADID NIL. Raw exchanges plus Python imaplib.
#![allow(dead_code)] // each file uses part of the shared helpers

include!("support/imap.rs");

fn msg(subject: &str) -> Vec<u8> {
    format!("From: <a@example.test>\r\nSubject: {subject}\r\n\r\nbody {subject}\r\n").into_bytes()
}

/// The `(id)` after `key` in a line: `... MAILBOXID (F00..) ...`.
#[track_caller]
fn id_after(line: &str, key: &str) -> String {
    let at = line
        .find(&format!("{key} ("))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"));
    let rest = &line[at + key.len() + 2..];
    rest[..rest.find(')').unwrap()].to_string()
}

#[track_caller]
fn mailbox_id(c: &mut Imap, name: &str) -> String {
    let r = c.ok(&format!("STATUS {name} (MAILBOXID)"));
    id_after(&r.lines()[0], "MAILBOXID")
}

/// EMAILID of every message of the selected mailbox, in sequence order.
#[track_caller]
fn email_ids(c: &mut Imap) -> Vec<String> {
    let r = c.ok("FETCH 1:* (EMAILID THREADID)");
    r.lines()
        .iter()
        .map(|l| {
            assert!(l.contains("THREADID NIL"), "{l}");
            id_after(l, "EMAILID")
        })
        .collect()
}

#[test]
fn mailbox_ids() {
    let user = "mbid@example.test";
    let s = Server::options().accounts(&[user]).start();
    let mut c = Imap::login(s.imap, user, PASSWORD);
    let caps = c.ok("CAPABILITY").lines()[0].clone();
    assert!(caps.split(' ').any(|w| w == "OBJECTID"), "{caps}");
    let r = c.ok("CREATE Projects");
    let created = id_after(&r.status, "MAILBOXID");
    // RFC 8474 section 7: 1*255 of ALPHA / DIGIT / "_" / "-".
    assert!(created
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'));
    assert_eq!(mailbox_id(&mut c, "Projects"), created);
    let sel = c.select("Projects");
    let line = sel.with_prefix("OK [MAILBOXID")[0].clone();
    assert_eq!(id_after(&line, "MAILBOXID"), created);
    // Every mailbox has its own.
    let inbox = mailbox_id(&mut c, "INBOX");
    assert_ne!(inbox, created);
    // RENAME keeps it (RFC 8474 4.2); a new mailbox of the old name gets a new one.
    c.ok("RENAME Projects Done");
    assert_eq!(mailbox_id(&mut c, "Done"), created);
    let again = id_after(&c.ok("CREATE Projects").status, "MAILBOXID");
    assert_ne!(again, created);
    c.ok("DELETE Projects");
    let third = id_after(&c.ok("CREATE Projects").status, "MAILBOXID");
    assert!(third != again && third != created);
    // LIST-STATUS carries it too.
    let l = c.ok("LIST \"\" \"Done\" RETURN (STATUS (MAILBOXID MESSAGES))");
    assert_eq!(
        l.lines()[1],
        format!("* STATUS Done (MAILBOXID ({created}) MESSAGES 0)")
    );
}

#[test]
fn email_ids_follow_messages_across_copy_move_and_restarts() {
    let user = "emid@example.test";
    let mut s = Server::options().accounts(&[user]).start();
    let mut c = Imap::login(s.imap, user, PASSWORD);
    for i in 1..=3 {
        c.append_ok("INBOX", "", None, &msg(&format!("m{i}")));
    }
    c.select("INBOX");
    let ids = email_ids(&mut c);
    assert_eq!(ids.len(), 3);
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    // RFC 8474 5.1: a copy or a moved message keeps the EMAILID.
    c.ok("COPY 1 Archive");
    c.ok("MOVE 2 Archive");
    c.ok("SELECT Archive");
    assert_eq!(email_ids(&mut c), vec![ids[0].clone(), ids[1].clone()]);
    // SEARCH EMAILID finds it, in whichever mailbox it is.
    assert_eq!(
        c.ok(&format!("UID SEARCH EMAILID {}", ids[1])).search(),
        vec![2]
    );
    c.ok("SELECT INBOX");
    assert_eq!(
        c.ok(&format!("SEARCH EMAILID {}", ids[2])).search(),
        vec![2]
    );
    assert!(c.ok("SEARCH EMAILID Mffffffffff").search().is_empty());
    assert!(c.ok("SEARCH EMAILID not-ours_1").search().is_empty());
    assert!(c.ok("SEARCH THREADID T1").search().is_empty());
    assert!(c.cmd("SEARCH EMAILID M1+2").status.starts_with("BAD"));
    let inbox_id = mailbox_id(&mut c, "INBOX");
    c.ok("LOGOUT");

    // Through kill -9 (the log is replayed), a clean stop (a checkpoint),
    // and a start on two cores (buckets move between shards).
    for step in 0..3 {
        match step {
            0 => {
                s.kill9();
                s.restart();
            }
            1 => {
                s.terminate();
                s.restart();
            }
            _ => {
                s.terminate();
                s.restart_with_cores(2);
            }
        }
        let mut c = Imap::login(s.imap, user, PASSWORD);
        c.select("INBOX");
        assert_eq!(
            email_ids(&mut c),
            vec![ids[0].clone(), ids[2].clone()],
            "step {step}"
        );
        c.select("Archive");
        assert_eq!(
            email_ids(&mut c),
            vec![ids[0].clone(), ids[1].clone()],
            "step {step}"
        );
        assert_eq!(mailbox_id(&mut c, "INBOX"), inbox_id, "step {step}");
        c.ok("LOGOUT");
    }

    // New mail after the restarts gets an id no message had.
    smtp_send(s.smtp, "x@example.test", &[user], &msg("m4"));
    let out = python_code(&format!(
        r#"
import imaplib, re
M = imaplib.IMAP4("127.0.0.1", {port})
M.login("{user}", "{password}")
typ, caps = M.capability()
assert b"OBJECTID" in caps[0].split(), caps
M.select("INBOX")
typ, data = M.fetch("1:*", "(EMAILID)")
assert typ == "OK", (typ, data)
ids = [re.search(rb"EMAILID \((\w+)\)", d).group(1).decode() for d in data]
print("ids=" + ",".join(ids))
M.logout()
"#,
        port = s.imap.port(),
        user = user,
        password = PASSWORD,
    ));
    let line = out.lines().find(|l| l.starts_with("ids=")).unwrap();
    let now: Vec<&str> = line["ids=".len()..].split(',').collect();
    assert_eq!(now.len(), 3, "{out}");
    assert_eq!((now[0], now[1]), (ids[0].as_str(), ids[2].as_str()));
    assert!(
        !ids.iter().any(|i| i == now[2]),
        "{now:?} reuses one of {ids:?}"
    );
}
