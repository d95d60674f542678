//! A full disk: the data directory is a small tmpfs, so the second segment
//! cannot be allocated. The transaction that needs it gets `452 4.3.1`, the
//! session goes on, the server keeps running, and every message acknowledged
//! before is still there, byte-identical. Needs root (to mount the tmpfs);
//! elsewhere the test says so and passes without checking.
use ringmail_tests::*;

#[test]
fn disk_full_gets_452_and_nothing_stored_is_harmed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("diskfull: skipped, mounting a tmpfs needs root");
        return;
    }
    let probe = tempfile::tempdir().unwrap();
    if !mount_tmpfs(probe.path(), 1) {
        eprintln!("diskfull: skipped, this machine refuses a tmpfs mount");
        return;
    }
    let _ = std::process::Command::new("umount")
        .arg(probe.path())
        .status();
    // One core: one 64 MiB segment fits in 100 MiB, the second does not.
    let server = Server::options().cores(1).tmpfs(100).start();
    let (mut c, _) = smtp_connect(server.smtp);
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let mut msg =
            format!("Subject: fill {i}\r\nMessage-ID: <fill{i}@e2e.test>\r\n\r\n").into_bytes();
        for _ in 0..(1 << 20) / 78 {
            msg.extend_from_slice(format!("{:076}\r\n", i).as_bytes());
        }
        c.cmd("MAIL FROM:<filler@example.test>").expect(250, None);
        c.cmd("RCPT TO:<bob@example.test>").expect(250, None);
        c.cmd("DATA").expect(354, None);
        c.send(&dot_stuff(&msg));
        let r = c.reply();
        if r.code == 250 {
            accepted.push(msg);
        } else {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the disk never filled up");
    r.expect(452, Some("4.3.1"));
    assert!(
        accepted.len() >= 40,
        "only {} messages fit before the disk filled",
        accepted.len()
    );
    // The session goes on.
    c.cmd("RSET").expect(250, None);
    c.cmd("NOOP").expect(250, None);
    // Everything acknowledged is there, byte-identical.
    let mut pop = Pop3::login(server.pop3, "bob@example.test", "bob-secret");
    let stat = pop.ok("STAT");
    let count: usize = stat.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(count, accepted.len(), "STAT: {stat}");
    for n in [1, accepted.len()] {
        let stored = pop.retr(n);
        assert_eq!(strip_trace(&stored).1, &accepted[n - 1][..], "message {n}");
    }
    pop.ok("QUIT");
    assert!(server.is_running());
}
