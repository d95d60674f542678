//! Running for real: binding a privileged port as root and then serving as
//! an unprivileged user; refusing root off loopback; systemd readiness.
//!
//! These start the binary themselves (not through `Server`), because they
//! choose the listen addresses, the environment and the data directory's
//! place. The suite runs as root (CI does); the user is Debian's `nobody`.
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ringmail_tests::*;

/// A free port below 1024 on 127.0.0.1 (only root may bind it).
fn privileged_port() -> u16 {
    (700..1000u16)
        .rev()
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("no free port below 1024")
}

/// `ringmail serve` on `data` with every listener on a free loopback port
/// but SMTP on `smtp`; returns the child and its ready line.
fn serve(config: &Path, data: &Path, smtp: &str, env: &[(&str, &Path)]) -> (Child, String) {
    let mut cmd = Command::new(ringmail_bin());
    cmd.args(["serve", "--cores", "2", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data);
    for pair in LOOPBACK_LISTENERS.chunks(2) {
        cmd.arg(pair[0])
            .arg(if pair[0] == "--smtp" { smtp } else { pair[1] });
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if !line.starts_with("ringmail: ready") {
        let _ = child.kill();
        let o = wait_output(child, Duration::from_secs(10));
        panic!(
            "not ready: {line:?}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Keep reading stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    (child, line)
}

fn addr_of(ready: &str, proto: &str) -> SocketAddr {
    let key = format!("{proto}=");
    let v = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&key))
        .unwrap();
    v.split(',').next().unwrap().parse().unwrap()
}

fn status_ids(pid: u32, which: &str) -> Vec<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s
        .lines()
        .find(|l| l.starts_with(&format!("{which}:")))
        .unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect()
}

fn stop(mut child: Child) -> std::process::Output {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.stdout.take();
    wait_output(child, Duration::from_secs(30))
}

#[test]
fn binds_a_privileged_port_as_root_then_serves_as_nobody() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (CI runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    // The server's user must reach its data directory through the tempdir.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("ringmail.toml");
    // The server creates the data directory as nobody, so its account
    // comes from the file (a file has no demo accounts unless it lists them).
    std::fs::write(
        &config,
        "user = \"nobody\"\ngroup = \"nogroup\"\n\
         [[demo_accounts]]\naddress = \"bob@example.test\"\npassword = \"bob-secret\"\n",
    )
    .unwrap();
    let port = privileged_port();
    let smtp = format!("127.0.0.1:{port}");
    let (child, ready) = serve(&config, &data, &smtp, &[]);
    assert_eq!(addr_of(&ready, "smtp").port(), port);
    let nobody = 65534;
    for which in ["Uid", "Gid"] {
        assert_eq!(
            status_ids(child.id(), which),
            vec![nobody; 4],
            "{which} of the server"
        );
    }
    let groups = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let groups = groups
        .lines()
        .find(|l| l.starts_with("Groups:"))
        .unwrap()
        .to_string();
    assert_eq!(
        groups.split_whitespace().skip(1).collect::<Vec<_>>(),
        vec!["65534"],
        "{groups}"
    );
    // The data directory was made for the user, and what it writes is its own.
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), nobody);
    smtp_send(
        addr_of(&ready, "smtp"),
        "carol@remote.test",
        &["bob@example.test"],
        b"Subject: hi\r\n\r\nunprivileged\r\n",
    );
    let got = fetch_all(addr_of(&ready, "pop3"), "bob@example.test", "bob-secret");
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0].1).contains("unprivileged"));
    for entry in std::fs::read_dir(data.join("segments")).unwrap() {
        assert_eq!(entry.unwrap().metadata().unwrap().uid(), nobody);
    }
    assert_eq!(
        std::fs::metadata(data.join("accounts")).unwrap().uid(),
        nobody
    );
    let out = stop(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn root_without_user_is_refused_off_loopback_before_binding() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (CI runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ringmail.toml");
    std::fs::write(&config, "").unwrap();
    let data = dir.path().join("data");
    // Refused before any socket is bound, so no traffic can reach it.
    let data_arg = data.to_str().unwrap();
    let err = serve_refused(&[
        "--config",
        config.to_str().unwrap(),
        "--data",
        data_arg,
        "--smtp",
        "0.0.0.0:0",
    ]);
    assert!(
        err.contains("refusing to run as root with listeners off loopback"),
        "{err}"
    );
    assert!(!data.exists(), "nothing may be created by a refused start");
    // A user that does not exist is an error, not a silent root.
    std::fs::write(&config, "user = \"no-such-user-ringmail\"\n").unwrap();
    let mut args = vec!["--config", config.to_str().unwrap(), "--data", data_arg];
    args.extend(LOOPBACK_LISTENERS);
    let err = serve_refused(&args);
    assert!(
        err.contains("user \"no-such-user-ringmail\" does not exist"),
        "{err}"
    );
}

#[test]
fn tells_systemd_when_ready_and_when_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let config = dir.path().join("ringmail.toml");
    std::fs::write(&config, "").unwrap();
    let data = dir.path().join("data");
    let (child, _ready) = serve(
        &config,
        &data,
        "127.0.0.1:0",
        &[("NOTIFY_SOCKET", &sock_path)],
    );
    // A data directory the server made is its user's alone.
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1 after the ready line");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert!(msg.contains("STATUS=serving on 2 cores"), "{msg:?}");
    let out = stop(child);
    assert!(out.status.success());
    let n = sock.recv(&mut buf).expect("STOPPING=1 on SIGTERM");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
}
