//! Upgrades: a data directory written by today's format must stay readable by
//! every later build, and an older build must refuse a newer directory.
//!
//! `tests/fixtures/data-format-N.tar.gz` is a data directory written by the
//! first build of format N (two accounts, folders, flags, keywords, an
//! expunge, a rename, a move, an APPEND; a clean stop with checkpoints,
//! then more records after them and a kill -9), and `data-format-N.json`
//! is what Python's imaplib read from it then. Format 1 is the first with
//! a version line; format 2 added Message and Link records with the
//! EMAILID (and checkpoints of format 5), and its dump has the MAILBOXIDs
//! and EMAILIDs. Any change to the on-disk format must keep
//! every `a_format_N_directory_opens_...` passing (by reading the old
//! layout or migrating it).
//!
//! To write the current format's fixture (only when a new format gets its
//! own fixture): `RINGMAIL_WRITE_FIXTURE=1 cargo test -p ringmail-tests
//! --test upgrade writer`.
use std::path::{Path, PathBuf};

use ringmail_tests::*;
use serde_json::Value;

const ACCOUNTS: [&str; 2] = ["alice@example.test", "bob@example.test"];
/// The data directory format today's build writes (`storage::DATA_FORMAT`).
const FORMAT: u32 = 2;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn populate(server: &Server, phase: u8) {
    run_python(
        "data_fixture.py",
        &[
            "populate".into(),
            phase.to_string(),
            server.smtp.port().to_string(),
            server.imap.port().to_string(),
            PASSWORD.into(),
        ],
    );
}

/// What imaplib reads from the server, without `\Recent` (a per-session
/// claim kept in memory, so every message is recent after a restart).
fn dump(server: &Server) -> Value {
    let out = run_python(
        "data_fixture.py",
        &[
            "dump".into(),
            server.imap.port().to_string(),
            PASSWORD.into(),
        ],
    );
    let mut v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    for boxes in v.as_object_mut().unwrap().values_mut() {
        for b in boxes.as_object_mut().unwrap().values_mut() {
            for m in b["messages"].as_array_mut().unwrap() {
                m["flags"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|f| f != "\\Recent");
            }
        }
    }
    v
}

/// A dump without the OBJECTID values (RFC 8474), which format 1's
/// fixture, written before them, does not have.
fn without_ids(v: &Value) -> Value {
    let mut v = v.clone();
    for boxes in v.as_object_mut().unwrap().values_mut() {
        for b in boxes.as_object_mut().unwrap().values_mut() {
            b.as_object_mut().unwrap().remove("mailboxid");
            for m in b["messages"].as_array_mut().unwrap() {
                m.as_object_mut().unwrap().remove("emailid");
            }
        }
    }
    v
}

/// The parts of a dump that do not depend on when it was written: mailbox
/// names, UIDs, flags, and bodies without the server's trace headers.
fn shape(v: &Value) -> Value {
    let mut v = without_ids(v);
    for boxes in v.as_object_mut().unwrap().values_mut() {
        for b in boxes.as_object_mut().unwrap().values_mut() {
            b.as_object_mut().unwrap().remove("uidvalidity");
            for m in b["messages"].as_array_mut().unwrap() {
                let raw = hex(m["hex"].as_str().unwrap());
                let body = if raw.starts_with(b"Return-Path:") {
                    strip_trace(&raw).1.to_vec()
                } else {
                    raw
                };
                m["hex"] = Value::String(String::from_utf8_lossy(&body).into_owned());
                let appended = m["internaldate"] == "06-Dec-2026 12:30:00 +0000";
                if !appended {
                    m.as_object_mut().unwrap().remove("internaldate");
                }
            }
        }
    }
    v
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Today's build writes what the fixture describes (so the fixture stays a
/// fair sample of the format); with RINGMAIL_WRITE_FIXTURE=1 it also writes
/// the fixture.
#[test]
fn writer_produces_the_fixture_layout() {
    let mut server = Server::options().accounts(&ACCOUNTS).start();
    populate(&server, 1);
    // A clean stop writes checkpoints; phase 2's records come after them,
    // and kill -9 leaves them to be replayed from the segments.
    server.terminate();
    server.restart();
    populate(&server, 2);
    server.kill9();
    let copy = tempfile::tempdir().unwrap();
    let archive = copy.path().join("data.tar.gz");
    // -S: the preallocated, never-written tails of segments stay holes.
    let st = std::process::Command::new("tar")
        .arg("-cSzf")
        .arg(&archive)
        .arg("-C")
        .arg(&server.data)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    server.restart();
    let got = dump(&server);
    if std::env::var_os("RINGMAIL_WRITE_FIXTURE").is_some() {
        std::fs::create_dir_all(fixtures()).unwrap();
        std::fs::copy(
            &archive,
            fixtures().join(format!("data-format-{FORMAT}.tar.gz")),
        )
        .unwrap();
        std::fs::write(
            fixtures().join(format!("data-format-{FORMAT}.json")),
            serde_json::to_string_pretty(&got).unwrap() + "\n",
        )
        .unwrap();
        eprintln!("fixture written to {}", fixtures().display());
    }
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("data-format-1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(shape(&got), shape(&want));
    // Sanity of the sample itself: folders, flags and keywords made it.
    let alice = &got["alice@example.test"];
    assert_eq!(
        alice["Old mail 2025"]["messages"].as_array().unwrap().len(),
        2
    );
    assert_eq!(
        alice["Projects/2026"]["messages"].as_array().unwrap().len(),
        2
    );
    let inbox: Vec<&Value> = alice["INBOX"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(
        inbox
            .iter()
            .map(|m| m["uid"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 4, 6]
    );
    assert_eq!(
        inbox[2]["flags"],
        serde_json::json!(["$Fixture", "\\Answered"])
    );
}

#[test]
fn a_format_1_directory_opens_with_every_message_flag_and_uid() {
    opens_with_every_message_flag_and_uid(1);
}

#[test]
fn a_format_2_directory_opens_with_every_message_flag_and_uid() {
    opens_with_every_message_flag_and_uid(2);
}

fn opens_with_every_message_flag_and_uid(format: u32) {
    let fixture = fixtures().join(format!("data-format-{format}.tar.gz"));
    let mut server = Server::options().seed(&fixture).start();
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("data-format-{format}.json"))).unwrap(),
    )
    .unwrap();
    // Byte for byte, UIDVALIDITY and internal dates included, and from
    // format 2 on the MAILBOXIDs and EMAILIDs as they were.
    let got = dump(&server);
    if format == 1 {
        assert_eq!(without_ids(&got), want);
    } else {
        assert_eq!(got, want);
    }
    // The start raised the directory to today's format.
    let meta = std::fs::read_to_string(server.data.join("meta")).unwrap();
    assert!(meta.contains(&format!("format = {FORMAT}")), "{meta}");
    // The directory goes on taking mail: a new message gets the next UID,
    // and a clean stop and start keep old and new.
    smtp_send(
        server.smtp,
        "carol@remote.test",
        &["bob@example.test"],
        b"Subject: after the upgrade\r\n\r\nnew\r\n",
    );
    server.terminate();
    server.restart();
    let after = dump(&server);
    let bob_before = got["bob@example.test"]["INBOX"]["messages"]
        .as_array()
        .unwrap();
    let bob_after = after["bob@example.test"]["INBOX"]["messages"]
        .as_array()
        .unwrap();
    assert_eq!(bob_after.len(), bob_before.len() + 1);
    assert_eq!(&bob_after[..bob_before.len()], &bob_before[..]);
    assert_eq!(
        bob_after.last().unwrap()["uid"].as_u64().unwrap(),
        want["bob@example.test"]["INBOX"]["uidnext"]
            .as_u64()
            .unwrap()
    );
    // The ids given at the upgrade (format 1) or kept (format 2) stay.
    assert_eq!(after["alice@example.test"], got["alice@example.test"]);
}

/// `ringmail serve` on `data`, expected to fail: its stderr.
fn serve_fails(data: &Path) -> String {
    let mut args = vec!["--cores", "2", "--data", data.to_str().unwrap()];
    args.extend(LOOPBACK_LISTENERS);
    serve_refused(&args)
}

#[test]
fn an_older_build_refuses_a_newer_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixtures().join("data-format-1.tar.gz"))
        .arg("-C")
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success());
    // A newer data format in the meta file: refused before anything is
    // written, and `inspect` refuses too.
    let meta = std::fs::read_to_string(data.join("meta")).unwrap();
    let newer = meta.replace("format = 1", &format!("format = {}", FORMAT + 1));
    assert_ne!(meta, newer);
    std::fs::write(data.join("meta"), &newer).unwrap();
    let err = serve_fails(&data);
    assert!(
        err.contains(&format!(
            "has format {}, newer than this ringmail",
            FORMAT + 1
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(data.join("meta")).unwrap(), newer);
    let out = ringmail(&["inspect", "--data", data.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("newer than this ringmail"));
    std::fs::write(data.join("meta"), &meta).unwrap();
    // A checkpoint of a newer version (its header's version word).
    let ckpt = std::fs::read_dir(data.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .expect("the fixture has checkpoints");
    let original = std::fs::read(&ckpt).unwrap();
    let mut bytes = original.clone();
    bytes[4..8].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&ckpt, &bytes).unwrap();
    let err = serve_fails(&data);
    assert!(
        err.contains("checkpoint format 99 is not supported"),
        "{err}"
    );
    std::fs::write(&ckpt, &original).unwrap();
    // A segment of a newer layout.
    let seg = std::fs::read_dir(data.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let original = std::fs::read(&seg).unwrap();
    let mut bytes = original.clone();
    bytes[..8].copy_from_slice(b"RMSEG002");
    std::fs::write(&seg, &bytes).unwrap();
    let err = serve_fails(&data);
    assert!(err.contains("segment format 2 is newer"), "{err}");
}
