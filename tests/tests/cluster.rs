//! Cluster mode, first slice: nodes join through a real etcd (started here
//! on its own ports), `ringmail cluster rebalance` spreads the buckets, a
//! node killed with -9 leaves within its lease, comes back, a second
//! process cannot take a live node's id, and a paused node stops
//! acknowledging mail once its lease has lapsed; mail through any node,
//! sessions relayed, failover under load, and retries stored once.
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringmail_tests::*;

struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A single-member etcd on free loopback ports; None (test skipped) when
/// etcd is not installed outside CI (`.ci/run` installs etcd-server).
fn etcd() -> Option<Etcd> {
    etcd_with("http", &[])
}

/// [`etcd`] on `scheme` (http or https) for clients, with more arguments.
fn etcd_with(scheme: &str, args: &[String]) -> Option<Etcd> {
    let bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(bin) = bin else {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd is not installed (Debian: etcd-server)"
        );
        eprintln!("skipped: etcd is not installed (Debian: etcd-server)");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let url = format!("{scheme}://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(bin)
        .args(["--name", "t", "--data-dir"])
        .arg(dir.path().join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("t={peer_url}")])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting etcd");
    let e = Etcd {
        child,
        _dir: dir,
        url,
    };
    let addr: SocketAddr = format!("127.0.0.1:{client}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "etcd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(e)
}

/// Lease of the test nodes: a killed node is gone within seconds.
const TEST_LEASE_SECS: u64 = 3;

fn node_config(etcd: &Etcd, cluster: &str, node: &str) -> String {
    node_config_leased(etcd, cluster, node, TEST_LEASE_SECS)
}

fn node_config_leased(etcd: &Etcd, cluster: &str, node: &str, lease_secs: u64) -> String {
    format!(
        "[cluster]\nname = \"{cluster}\"\nnode = \"{node}\"\netcd = [\"{}\"]\ninternal = \"127.0.0.1:{}\"\nlease_ttl_secs = {lease_secs}\n",
        etcd.url,
        free_port()
    )
}

/// The node's internal listener (`[cluster] internal`).
fn internal_of(server: &Server) -> SocketAddr {
    let config = std::fs::read_to_string(server.config_path.as_ref().unwrap()).unwrap();
    config
        .lines()
        .find_map(|l| l.strip_prefix("internal = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .parse()
        .unwrap()
}

fn cluster_cmd(server: &Server, args: &[&str]) -> String {
    let config = server.config_path.as_ref().expect("a config file");
    let mut all = vec!["cluster"];
    all.extend_from_slice(args);
    let config = config.to_str().unwrap();
    all.extend_from_slice(&["--config", config]);
    let out = ringmail(&all, "");
    assert_ok(&out, &format!("ringmail {}", all.join(" ")));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Poll `cluster status` until `want` holds (at most `limit`); the time it took.
fn wait_status(server: &Server, limit: Duration, want: impl Fn(&str) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let s = cluster_cmd(server, &["status"]);
        if want(&s) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "status never became as expected:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait (up to `limit`) until `survivor` sees `live` live nodes and none
/// the map still names that is gone: a failover is done. How long it took.
fn wait_failed_over(survivor: &Server, live: usize, limit: Duration) -> Duration {
    let want = format!("{live} live node(s)");
    wait_status(survivor, limit, |s| {
        s.contains(&want) && !s.contains("gone")
    })
}

/// (primary, replica) counts of `node` in a status text.
fn counts(status: &str, node: &str) -> (usize, usize) {
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("node {node} ")))
        .unwrap_or_else(|| panic!("no line for {node}:\n{status}"));
    let num = |key: &str| -> usize {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap()
            .parse()
            .unwrap()
    };
    (num("primary="), num("replica="))
}

#[test]
fn nodes_join_rebalance_leave_and_come_back() {
    let Some(etcd) = etcd() else { return };
    let name = format!("t{}", std::process::id());
    let mut nodes: Vec<Server> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| {
            Server::options()
                .cores(1)
                .config(&node_config(&etcd, &name, n))
                .start()
        })
        .collect();
    let s = cluster_cmd(&nodes[0], &["status"]);
    assert!(s.contains("3 live node(s)"), "{s}");
    assert!(s.contains("placement none"), "{s}");

    let dry = cluster_cmd(&nodes[0], &["rebalance", "--dry-run"]);
    assert!(dry.contains("dry run"), "{dry}");
    assert!(cluster_cmd(&nodes[1], &["status"]).contains("placement none"));
    let r = cluster_cmd(&nodes[0], &["rebalance"]);
    assert!(r.contains("256 primaries and 256 replicas change"), "{r}");
    let s = cluster_cmd(&nodes[2], &["status"]);
    for n in ["n1", "n2", "n3"] {
        let (p, rep) = counts(&s, n);
        assert!((85..=86).contains(&p) && (85..=86).contains(&rep), "{s}");
    }
    assert!(cluster_cmd(&nodes[0], &["rebalance"]).contains("placement unchanged"));

    // A second process cannot take a live node's id (it waits out one lease
    // in case the holder is its own dead predecessor, then gives up).
    let other = tempfile::tempdir().unwrap();
    let config = nodes[0].config_path.clone().unwrap();
    let out = wait_output(
        Command::new(ringmail_bin())
            .args(["serve", "--config", config.to_str().unwrap(), "--data"])
            .arg(other.path())
            .args(["--cores", "1"])
            .args(LOOPBACK_LISTENERS)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second n1 started");
    assert!(err.contains("is held by a live member"), "{err}");

    // kill -9: the member key goes with the lease (3 s here), and the
    // smallest live node moves n3's buckets to their replicas by itself.
    nodes[2].kill9();
    let took = wait_failed_over(&nodes[0], 2, Duration::from_secs(10));
    eprintln!("failover of a killed node took {took:?} (lease 3 s)");
    assert!(nodes[0].stderr_text().contains("cluster: failover"));
    let r = cluster_cmd(&nodes[1], &["rebalance"]);
    assert!(r.contains("placement unchanged"), "{r}");
    // Each of its buckets went to its replica (however unbalanced that
    // leaves the two: any other node would serve the bucket before it had
    // its mail), and has the other node as replica.
    let s = cluster_cmd(&nodes[0], &["status"]);
    let (p1, r1) = counts(&s, "n1");
    let (p2, r2) = counts(&s, "n2");
    assert!(p1 + p2 == 256 && r1 == p2 && r2 == p1, "{s}");
    assert!(!s.contains("gone"), "{s}");

    // It comes back under its id.
    nodes[2].restart();
    wait_status(&nodes[0], Duration::from_secs(10), |s| {
        s.contains("3 live node(s)")
    });
    // Even at once after a kill -9: it waits out its old lease first.
    nodes[2].kill9();
    nodes[2].restart();
    wait_status(&nodes[0], Duration::from_secs(10), |s| {
        s.contains("3 live node(s)")
    });
    // Live primaries stay where they are (moving one means copying its
    // mail first): it becomes a replica only...
    let r = cluster_cmd(&nodes[0], &["rebalance"]);
    assert!(r.contains("3 live nodes; 0 primaries"), "{r}");
    let s = cluster_cmd(&nodes[0], &["status"]);
    let (p, rep) = counts(&s, "n3");
    assert!(p == 0 && (85..=86).contains(&rep), "{s}");
    // ...unless primaries are moved on purpose.
    let r = cluster_cmd(&nodes[0], &["rebalance", "--move-primaries"]);
    assert!(r.contains("3 live nodes"), "{r}");
    let s = cluster_cmd(&nodes[0], &["status"]);
    for n in ["n1", "n2", "n3"] {
        let (p, rep) = counts(&s, n);
        assert!((85..=86).contains(&p) && (85..=86).contains(&rep), "{s}");
    }
    // A drained node gives its buckets to their replicas and takes none,
    // even at a rebalance, until the drain is undone.
    let d = cluster_cmd(&nodes[0], &["drain", "n3"]);
    assert!(d.contains("n3 drained"), "{d}");
    cluster_cmd(&nodes[0], &["rebalance"]);
    let s = cluster_cmd(&nodes[0], &["status"]);
    assert!(s.contains("3 live node(s)"), "{s}");
    assert!(s.contains("primary=0 replica=0 drained"), "{s}");
    let (p1, r1) = counts(&s, "n1");
    let (p2, r2) = counts(&s, "n2");
    assert!(p1 + p2 == 256 && r1 == p2 && r2 == p1, "{s}");
    cluster_cmd(&nodes[0], &["drain", "n3", "--undo"]);
    cluster_cmd(&nodes[0], &["rebalance"]);
    let s = cluster_cmd(&nodes[0], &["status"]);
    let (p, rep) = counts(&s, "n3");
    assert!(
        p == 0 && (85..=86).contains(&rep) && !s.contains("drained"),
        "{s}"
    );

    // A clean stop revokes the lease: the node is gone at once, well
    // before its lease (3 s) could run out.
    nodes[1].terminate();
    wait_status(&nodes[0], Duration::from_millis(1500), |s| {
        s.contains("2 live node(s)")
    });
    assert!(nodes[1].stderr_text().contains("left the cluster"));
}

#[test]
fn a_paused_node_stops_acknowledging_once_its_lease_lapsed() {
    let Some(etcd) = etcd() else { return };
    let name = format!("p{}", std::process::id());
    let server = Server::options()
        .cores(1)
        .accounts(&["carol@example.test"])
        .config(&node_config(&etcd, &name, "solo"))
        .start();
    smtp_send(
        server.smtp,
        "a@example.org",
        &["carol@example.test"],
        b"Subject: one\r\n\r\nbefore\r\n",
    );

    // A transaction up to the last line of data, then the process stops
    // for longer than its lease; the final dot arrives while it is stopped.
    let (mut c, _) = smtp_connect(server.smtp);
    c.cmd("EHLO client.example.org").expect(250, None);
    c.cmd("MAIL FROM:<a@example.org>").expect(250, None);
    c.cmd("RCPT TO:<carol@example.test>").expect(250, None);
    c.cmd("DATA").expect(354, None);
    c.send(b"Subject: two\r\n\r\nduring the pause\r\n");
    let pid = server.pid().unwrap() as libc::pid_t;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(4500));
    c.send(b".\r\n");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    c.reply().expect(451, Some("4.3.0"));

    // It joins again with a new lease and acknowledges again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        c.cmd("MAIL FROM:<a@example.org>").expect(250, None);
        c.cmd("RCPT TO:<carol@example.test>").expect(250, None);
        c.cmd("DATA").expect(354, None);
        c.send(b"Subject: three\r\n\r\nafter\r\n.\r\n");
        let r = c.reply();
        if r.code == 250 {
            break;
        }
        r.expect(451, Some("4.3.0"));
        assert!(Instant::now() < deadline, "never acknowledged again");
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = cluster_cmd(&server, &["status"]);
    assert!(
        s.contains("1 live node(s)") && s.contains("node solo"),
        "{s}"
    );
}

/// Wait until every node logged the bucket map of `version` (from `rebalance`).
fn wait_map(nodes: &[Server], rebalance_out: &str) {
    let version = rebalance_out
        .split("placement version=")
        .nth(1)
        .unwrap_or_else(|| panic!("no version in {rebalance_out}"))
        .trim();
    let want = format!("version=Some({version})");
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in nodes {
        while !n.stderr_text().contains(&want) {
            assert!(Instant::now() < deadline, "a node never saw map {version}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Nodes `ids` of a new cluster, each with `accounts`, and a bucket map
/// over them that every node has seen.
fn mapped_cluster(etcd: &Etcd, prefix: &str, ids: &[&str], accounts: &[String]) -> Vec<Server> {
    mapped_cluster_with(etcd, prefix, ids, accounts, "")
}

/// [`mapped_cluster`] with more configuration for every node.
fn mapped_cluster_with(
    etcd: &Etcd,
    prefix: &str,
    ids: &[&str],
    accounts: &[String],
    extra: &str,
) -> Vec<Server> {
    mapped_cluster_leased(etcd, prefix, ids, accounts, TEST_LEASE_SECS, 1, extra)
}

/// [`mapped_cluster_with`] with another lease and `cores` per node.
fn mapped_cluster_leased(
    etcd: &Etcd,
    prefix: &str,
    ids: &[&str],
    accounts: &[String],
    lease_secs: u64,
    cores: usize,
    extra: &str,
) -> Vec<Server> {
    let name = format!("{prefix}{}", std::process::id());
    let nodes: Vec<Server> = ids
        .iter()
        .map(|n| {
            let config = node_config_leased(etcd, &name, n, lease_secs);
            Server::options()
                .cores(cores)
                .accounts(accounts)
                .config(&format!("{config}{extra}"))
                .start()
        })
        .collect();
    let r = cluster_cmd(&nodes[0], &["rebalance"]);
    wait_map(&nodes, &r);
    nodes
}

/// A new node `id` of the cluster `prefix` (as [`mapped_cluster`] names
/// it), one core, with `accounts`, pausing `pause_ms` before each account
/// a bucket copy stores.
fn join_paced(etcd: &Etcd, prefix: &str, id: &str, accounts: &[String], pause_ms: u64) -> Server {
    let name = format!("{prefix}{}", std::process::id());
    Server::options()
        .cores(1)
        .accounts(accounts)
        .config(&format!(
            "{}copy_pause_ms = {pause_ms}\n",
            node_config(etcd, &name, id)
        ))
        .start()
}

/// A message of the 10,000 the big test sends (the same as
/// `py/cluster_read.py` expects): message `i` goes to account `i % n`.
fn big_message(i: usize, n: usize) -> String {
    let body: String = (0..i % 7 + 1)
        .map(|j| format!("line {j} of message {i}\r\n"))
        .collect();
    format!(
        "From: <s@example.org>\r\nTo: <u{}@example.test>\r\nMessage-ID: <m{i}@example.org>\r\nSubject: m{i}\r\n\r\n{body}",
        i % n
    )
}

#[test]
fn mail_sent_to_any_node_is_stored_on_the_buckets_primary() {
    let Some(etcd) = etcd() else { return };
    const ACCOUNTS: usize = 1000;
    const MESSAGES: usize = 10_000;
    let accounts: Vec<String> = (0..ACCOUNTS)
        .map(|i| format!("u{i}@example.test"))
        .collect();
    let ids = ["n1", "n2", "n3"];
    let nodes = mapped_cluster(&etcd, "m", &ids, &accounts);

    // 10,000 messages, each to one account, round-robin through the three
    // nodes: message i through node i % 3, four connections per node.
    let sent = Instant::now();
    let senders: Vec<_> = (0..12)
        .map(|t| {
            let (addr, accts) = (nodes[t % 3].smtp, accounts.clone());
            std::thread::spawn(move || {
                let (mut c, _) = smtp_connect(addr);
                for i in (t..MESSAGES).step_by(12) {
                    let r = smtp_transaction(
                        &mut c,
                        "s@example.org",
                        &[&accts[i % ACCOUNTS]],
                        big_message(i, ACCOUNTS).as_bytes(),
                        Transfer::Data,
                    )
                    .unwrap_or_else(|e| panic!("message {i}: {e}"));
                    assert_eq!(r.code, 250, "message {i}: {r:?}");
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    eprintln!(
        "{MESSAGES} messages through three nodes in {:?}",
        sent.elapsed()
    );

    // Every message, read with Python's imaplib through every node (the
    // others relay the session to the primary), intact and byte-identical
    // whichever node serves it.
    let read = Instant::now();
    let ports = nodes
        .iter()
        .map(|n| n.imap.port().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = run_python(
        "cluster_read.py",
        &[
            "127.0.0.1".into(),
            ports,
            ACCOUNTS.to_string(),
            MESSAGES.to_string(),
            PASSWORD.into(),
        ],
    );
    assert!(out.contains("ok sessions=3000 messages=30000"), "{out}");
    eprintln!("read through every node in {:?}", read.elapsed());

    // Where each message was stored, and its trace: the first accounts
    // through POP3 on the node they were sent through.
    let index = |id: &str| ids.iter().position(|i| *i == id).unwrap();
    let placed: Vec<(usize, usize)> = locate(&nodes[0], &accounts)
        .iter()
        .map(|(p, r)| (index(p), index(r)))
        .collect();
    let mut copies = [0usize; 3];
    for &(at, rep) in &placed {
        assert_ne!(at, rep);
        copies[at] += MESSAGES / ACCOUNTS;
        copies[rep] += MESSAGES / ACCOUNTS;
    }
    for (k, account) in accounts.iter().enumerate().take(30) {
        let at = placed[k].0;
        let mut p = Pop3::login(nodes[k % 3].pop3, account, PASSWORD);
        let (count, _) = p.stat();
        assert_eq!(count, MESSAGES / ACCOUNTS, "{account}");
        for n in 1..=count {
            let m = p.retr(n);
            let text = String::from_utf8_lossy(&m);
            let i: usize = text
                .split("Message-ID: <m")
                .nth(1)
                .and_then(|r| r.split('@').next())
                .and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("{text}"));
            assert!(m.ends_with(big_message(i, ACCOUNTS).as_bytes()), "{text}");
            assert!(
                text.starts_with("Return-Path: <s@example.org>\r\n"),
                "{text}"
            );
            // One Received: when the node it was sent through is its
            // primary, two when handed over, that hop over TLS.
            let hops = if at == i % 3 { 1 } else { 2 };
            assert_eq!(text.matches("Received: ").count(), hops, "{text}");
            assert_eq!(text.matches(" with ESMTPS id ").count(), hops - 1, "{text}");
        }
        p.ok("QUIT");
    }
    assert!(copies.iter().all(|&n| n > 0), "{copies:?}");

    // Stored twice, on the primary and on the replica: count what each
    // data directory holds. All nodes stop at once (kill -9, well within
    // the lease): a node that stops alone would have its buckets copied to
    // the others (runtime/catchup.rs) before they stop.
    let mut nodes = nodes;
    for node in &mut nodes {
        node.kill9();
    }
    for (j, node) in nodes.into_iter().enumerate() {
        let out = ringmail(
            &[
                "inspect",
                "--data",
                node.data.to_str().unwrap(),
                "--count-only",
            ],
            "",
        );
        assert_ok(&out, "inspect");
        let stored: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(stored, copies[j], "node {}", ids[j]);
    }
}

/// The id of the node that is `account`'s primary (`ringmail cluster locate`).
fn primary_of(server: &Server, account: &str) -> String {
    locate(server, &[account])[0].0.clone()
}

fn replica_of(server: &Server, account: &str) -> String {
    locate(server, &[account])[0].1.clone()
}

/// (primary, replica) of each account, from one `ringmail cluster locate`.
fn locate<S: AsRef<str>>(server: &Server, accounts: &[S]) -> Vec<(String, String)> {
    let mut args = vec!["locate"];
    args.extend(accounts.iter().map(|a| a.as_ref()));
    let loc = cluster_cmd(server, &args);
    let role = |l: &str, role: &str| {
        l.strip_prefix(role)
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("{loc}"))
            .to_string()
    };
    let lines: Vec<&str> = loc.lines().collect();
    assert_eq!(lines.len(), 3 * accounts.len(), "{loc}");
    lines
        .chunks(3)
        .zip(accounts)
        .map(|(block, a)| {
            assert!(
                block[0].starts_with(&format!("account {} ", a.as_ref())),
                "{loc}"
            );
            (role(block[1], "primary "), role(block[2], "replica "))
        })
        .collect()
}

/// Python's imaplib through a node that is not the account's primary:
/// plain IMAP and IMAPS, the messages, and IDLE hearing of a delivery made
/// through the third node.
const IMAP_SCRIPT: &str = r#"
import imaplib, socket, ssl, sys
host, port, tls_port, user, pw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
m = imaplib.IMAP4(host, port)
m.login(user, pw)
# A NO from the account's node comes back as such.
typ, _ = m.select("Nope")
assert typ == "NO", typ
typ, data = m.select("INBOX")
assert typ == "OK" and data[0] == b"3", (typ, data)
typ, data = m.fetch("1", "(BODY.PEEK[])")
assert typ == "OK" and data[0][1].endswith(b"\r\nfirst\r\n"), data
tag = m._new_tag()
m.send(tag + b" IDLE\r\n")
assert m.readline().startswith(b"+"), "no continuation"
print("idling", flush=True)
m.sock.settimeout(15)
line = m.readline()
while not line.endswith(b"EXISTS\r\n"):
    line = m.readline()
assert line == b"* 4 EXISTS\r\n", line
m.send(b"DONE\r\n")
while not m.readline().startswith(tag + b" OK"):
    pass
m.logout()
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = imaplib.IMAP4_SSL(host, tls_port, ssl_context=ctx)
s.login(user, pw)
typ, data = s.select("INBOX", readonly=True)
assert typ == "OK" and data[0] == b"4", data
try:
    s.login(user, pw)
except imaplib.IMAP4.error:
    pass
s.logout()
print("done", flush=True)
"#;

#[test]
fn sessions_through_any_node_reach_the_accounts_node() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..12).map(|i| format!("v{i}@example.test")).collect();
    let ids = ["n1", "n2", "n3"];
    let limits = "[limits]\nmessage_size_max = 20000\n";
    let nodes = mapped_cluster_with(&etcd, "s", &ids, &accounts, limits);
    // An account whose primary is n1: sessions go through n2, mail through n3.
    let account = accounts
        .iter()
        .find(|a| primary_of(&nodes[0], a) == "n1")
        .expect("some account on n1")
        .clone();
    let (home, via, mail) = (&nodes[0], &nodes[1], &nodes[2]);
    let msg = |body: &str| format!("Subject: {body}\r\n\r\n{body}\r\n");
    for body in ["first", "second", "third"] {
        smtp_send(
            mail.smtp,
            "s@example.org",
            &[&account],
            msg(body).as_bytes(),
        );
    }

    // The internal listener takes no mail in the clear, even from a member's address.
    let internal = internal_of(home);
    let (mut plain, _) = smtp_connect(internal);
    plain
        .cmd("MAIL FROM:<s@example.org>")
        .expect(530, Some("5.7.0"));
    // Nor hands out buckets (runtime/catchup.rs) to anyone but a member
    // that presented its certificate.
    plain.cmd("EHLO stranger.example.test").expect(250, None);
    let reply = plain.cmd("XSYNC 0 0,1,2");
    assert_eq!(reply.code / 100, 5, "{reply:?}");
    plain.cmd("NOOP").expect(250, None);
    // Nor over TLS from a member's address without a member's certificate
    // (Python's smtplib: none at all, then one of its own).
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_cert(dir.path(), "stranger", "stranger.example.test");
    let out = python_code(&format!(
        r#"
import smtplib, ssl
for chain in [None, ({cert:?}, {key:?})]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if chain:
        ctx.load_cert_chain(*chain)
    s = smtplib.SMTP("{ip}", {port}, timeout=10)
    s.ehlo("stranger.example.test")
    s.starttls(context=ctx)
    try:
        code, text = s.ehlo("stranger.example.test")
        print("answer", code, text.decode())
        code, text = s.mail("s@example.org")
        print("answer", code, text.decode())
    except (smtplib.SMTPServerDisconnected, ssl.SSLError, OSError) as e:
        print("closed", type(e).__name__)
"#,
        cert = cert.to_str().unwrap(),
        key = key.to_str().unwrap(),
        ip = internal.ip(),
        port = internal.port(),
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("closed"), "{out}");
    assert!(
        lines[1].starts_with("answer 421 4.7.0 Not a member") || lines[1].starts_with("closed"),
        "{out}"
    );
    assert!(!out.contains("answer 250"), "{out}");
    assert!(home
        .stderr_text()
        .contains("the client certificate is no member's"));
    // A message just under the size limit is handed over too (the
    // hand-over adds header fields the receiving node allows for).
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(19_900));
    assert!(big.len() < 20_000);
    let (mut c, _) = smtp_connect(mail.smtp);
    let r = smtp_transaction(
        &mut c,
        "s@example.org",
        &[&account],
        big.as_bytes(),
        Transfer::Data,
    )
    .unwrap();
    r.expect(250, None);
    // POP3 through n2: the messages are n1's.
    let mut p = Pop3::login(via.pop3, &account, PASSWORD);
    assert_eq!(p.stat().0, 4);
    assert!(p.retr(2).ends_with(msg("second").as_bytes()));
    p.ok("DELE 4");
    p.ok("QUIT");
    // A client that half-closes after QUIT still gets every answer.
    let mut raw = TcpStream::connect(via.pop3).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let script = format!("USER {account}\r\nPASS {PASSWORD}\r\nSTAT\r\nQUIT\r\n");
    std::io::Write::write_all(&mut raw, script.as_bytes()).unwrap();
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    let mut all = String::new();
    std::io::Read::read_to_string(&mut raw, &mut all).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 5, "{all}");
    assert!(lines.iter().all(|l| l.starts_with("+OK")), "{all}");
    assert!(lines[3].starts_with("+OK 3 "), "STAT: {all}");
    // A wrong password is refused by n2 itself.
    let mut bad = Pop3::connect(via.pop3);
    bad.ok(&format!("USER {account}"));
    assert!(bad.cmd("PASS wrong").starts_with("-ERR"));

    // IMAP through n2 with Python's imaplib, IDLE included.
    let mut py = Command::new("python3")
        .args(["-c", IMAP_SCRIPT, "127.0.0.1"])
        .arg(via.imap.port().to_string())
        .arg(via.imaps.port().to_string())
        .args([account.as_str(), PASSWORD])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = std::io::BufReader::new(py.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    if first.trim() != "idling" {
        let _ = py.wait();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut py.stderr.take().unwrap(), &mut err).unwrap();
        panic!("python: {first}\n{err}\nserver: {}", via.stderr_tail(20));
    }
    smtp_send(
        mail.smtp,
        "s@example.org",
        &[&account],
        msg("fourth").as_bytes(),
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = py.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut py.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        status.success() && rest.contains("done"),
        "python: {rest}\n{err}"
    );

    // The sessions were relayed, not served from n2's own (empty) store.
    assert!(via
        .stderr_text()
        .contains("session relayed to the account's node"));
    let mut direct = Pop3::login(home.pop3, &account, PASSWORD);
    assert_eq!(direct.stat().0, 4);
}

/// One message through `addr`; true for a 250, false for a temporary
/// failure (451, or the connection refused or cut).
fn try_send(addr: SocketAddr, rcpt: &str, message: &[u8]) -> bool {
    let Ok(mut c) = ringmail_tests::Client::try_connect(addr) else {
        return false;
    };
    c.set_read_timeout(Duration::from_secs(30));
    let Ok(greeting) = c.try_reply() else {
        return false;
    };
    if greeting.code != 220 || c.try_send(b"EHLO load.example.org\r\n").is_err() {
        return false;
    }
    if !c.try_reply().is_ok_and(|r| r.code == 250) {
        return false;
    }
    match smtp_transaction(&mut c, "s@example.org", &[rcpt], message, Transfer::Data) {
        Ok(r) if r.code == 250 => true,
        Ok(r) => {
            assert_eq!(r.code / 100, 4, "a permanent failure: {r:?}");
            false
        }
        Err(_) => false,
    }
}

/// Messages sent on a thread while a test does something to the cluster.
struct Load {
    /// Messages acknowledged so far (the range's start included).
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Ends with the number of sends that were retried.
    thread: std::thread::JoinHandle<usize>,
}

impl Load {
    /// Wait until `n` messages are acknowledged.
    fn wait_for(&self, n: usize) {
        while self.sent.load(std::sync::atomic::Ordering::Acquire) < n {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Send `message(i)` for each i of `range` to account `i % accounts`,
/// alternately through the two `senders`; a message refused (451, or a
/// connection refused or cut) is sent again until it is acknowledged,
/// within 40 s.
fn keep_sending(
    senders: [SocketAddr; 2],
    accounts: &[String],
    range: std::ops::Range<usize>,
    message: fn(usize) -> String,
) -> Load {
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(range.start));
    let progress = sent.clone();
    let accounts = accounts.to_vec();
    let thread = std::thread::spawn(move || {
        let mut retries = 0;
        for i in range {
            let deadline = Instant::now() + Duration::from_secs(40);
            while !try_send(
                senders[i % 2],
                &accounts[i % accounts.len()],
                message(i).as_bytes(),
            ) {
                assert!(Instant::now() < deadline, "message {i} never acknowledged");
                retries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            progress.store(i + 1, std::sync::atomic::Ordering::Release);
        }
        retries
    });
    Load { sent, thread }
}

#[test]
fn a_primary_killed_under_load_fails_over_and_loses_nothing_acknowledged() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..20).map(|i| format!("w{i}@example.test")).collect();
    let ids = ["n1", "n2", "n3"];
    let mut nodes = mapped_cluster(&etcd, "f", &ids, &accounts);
    let message =
        |i: usize| format!("Message-ID: <f{i}@example.org>\r\nSubject: f{i}\r\n\r\nload {i}\r\n");

    // Senders keep going through n1 and n2 while n3 is killed.
    let load = keep_sending([nodes[0].smtp, nodes[1].smtp], &accounts, 0..240, message);
    load.wait_for(60);
    let killed = Instant::now();
    nodes[2].kill9();
    let took = wait_failed_over(&nodes[0], 2, Duration::from_secs(15));
    let retries = load.thread.join().unwrap();
    eprintln!(
        "failover after kill -9 took {took:?} (lease 3 s); {retries} sends were retried; all acknowledged {:?} after the kill",
        killed.elapsed()
    );

    // Every acknowledged message is readable through either node, once.
    for (k, account) in accounts.iter().enumerate() {
        let mut p = Pop3::login(nodes[k % 2].pop3, account, PASSWORD);
        let (count, _) = p.stat();
        let mut seen = std::collections::HashMap::new();
        for n in 1..=count {
            let m = String::from_utf8_lossy(&p.retr(n)).into_owned();
            let id = m
                .split("Message-ID: <f")
                .nth(1)
                .and_then(|r| r.split('@').next())
                .unwrap_or_else(|| panic!("{m}"))
                .parse::<usize>()
                .unwrap();
            *seen.entry(id).or_insert(0) += 1;
        }
        for i in (0..240).filter(|i| i % accounts.len() == k) {
            assert_eq!(seen.get(&i), Some(&1), "{account}: message {i} ({seen:?})");
        }
        assert_eq!(count, 12, "{account}: {seen:?}");
    }

    // The killed node comes back and rejoins.
    nodes[2].restart();
    wait_status(&nodes[0], Duration::from_secs(15), |s| {
        s.contains("3 live node(s)")
    });
}

/// The send of one message that is sent through `addr`: the reply code of
/// its end of data.
fn send_code(addr: SocketAddr, rcpts: &[&str], message: &[u8]) -> u16 {
    let (mut c, _) = smtp_connect(addr);
    smtp_transaction(&mut c, "s@example.org", rcpts, message, Transfer::Data)
        .unwrap_or_else(|e| panic!("sending: {e}"))
        .code
}

/// A hand-over that fails after another node took its share: the client
/// gets 451 and sends the message again; the node (and its replica) that
/// already hold it store it once (`[cluster] duplicate_window_secs`), the
/// others take theirs. A message that only looks alike (another
/// Message-ID, or none) is stored every time.
#[test]
fn a_message_sent_again_after_a_partial_failure_is_stored_once() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..30).map(|i| format!("d{i}@example.test")).collect();
    let ids = ["n1", "n2", "n3"];
    let mut nodes = mapped_cluster(&etcd, "d", &ids, &accounts);
    // a: primary n2, replica n1 (both stay); b: primary n3 (killed).
    let a = accounts
        .iter()
        .find(|a| primary_of(&nodes[0], a) == "n2" && replica_of(&nodes[0], a) == "n1")
        .expect("an account on n2 with its replica on n1")
        .clone();
    let b = accounts
        .iter()
        .find(|b| primary_of(&nodes[0], b) == "n3")
        .expect("an account on n3")
        .clone();

    let message = b"From: <s@example.org>\r\nMessage-ID: <again@example.org>\r\nSubject: again\r\n\r\nsent twice\r\n";
    nodes[2].kill9();
    // n2 takes a's share (and n1 its copy), n3 is gone: 451 for the whole.
    assert_eq!(send_code(nodes[0].smtp, &[&a, &b], message), 451);
    wait_failed_over(&nodes[0], 2, Duration::from_secs(15));
    assert_eq!(send_code(nodes[0].smtp, &[&a, &b], message), 250);
    // The same again through the other node: stored once still.
    assert_eq!(send_code(nodes[1].smtp, &[&a, &b], message), 250);

    for (account, node) in [(&a, 0), (&a, 1), (&b, 0), (&b, 1)] {
        let mut p = Pop3::login(nodes[node].pop3, account, PASSWORD);
        assert_eq!(p.stat().0, 1, "{account} through node {node}");
        assert!(p.retr(1).ends_with(b"\r\nsent twice\r\n"));
        p.ok("QUIT");
    }
    assert!(nodes[1]
        .stderr_text()
        .contains("event=\"duplicate_suppressed\""));
    assert!(nodes[0]
        .stderr_text()
        .contains("event=\"duplicate_suppressed\""));

    // Alike but not the same: another Message-ID, or none, is new mail.
    let other = b"From: <s@example.org>\r\nMessage-ID: <other@example.org>\r\nSubject: again\r\n\r\nsent twice\r\n";
    let no_id = b"From: <s@example.org>\r\nSubject: again\r\n\r\nsent twice\r\n";
    for m in [&other[..], &no_id[..], &no_id[..]] {
        assert_eq!(send_code(nodes[0].smtp, &[&a], m), 250);
    }
    let mut p = Pop3::login(nodes[1].pop3, &a, PASSWORD);
    assert_eq!(p.stat().0, 4);
}

/// An IMAP session logged in to `account` through `addr`, in IDLE on INBOX.
fn idling(addr: SocketAddr, account: &str) -> Client {
    let mut c = Client::connect(addr);
    c.set_read_timeout(Duration::from_secs(30));
    assert!(c.line().starts_with("* OK"));
    c.send(format!("a LOGIN {account} {PASSWORD}\r\nb SELECT INBOX\r\nc IDLE\r\n").as_bytes());
    loop {
        let l = c.line();
        assert!(!l.starts_with("a NO") && !l.starts_with("b NO"), "{l}");
        if l.starts_with("+ ") {
            return c;
        }
    }
}

/// Wait for the `* BYE` that ends an IDLE, reading past what the IDLE
/// reports meanwhile (EXISTS of new mail); then the connection closes.
fn bye_of(c: &mut Client) -> String {
    loop {
        let l = c.line();
        if l.starts_with("* BYE") {
            let end = c.try_read_line();
            assert!(
                end.as_ref().is_err_and(|e| matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                )),
                "still open after BYE: {end:?}"
            );
            return l;
        }
        assert!(l.starts_with("* ") && !l.starts_with("* NO"), "{l}");
    }
}

/// `ringmail cluster drain` while mail keeps arriving: the drained node's
/// buckets go to their replicas, which hold every acknowledged message;
/// the sessions of the moved accounts end with BYE (served there, and
/// relayed through another node), and a new connection reaches the new
/// primary; nothing acknowledged is lost or stored twice.
#[test]
fn a_drain_under_load_moves_accounts_and_their_sessions() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..20).map(|i| format!("r{i}@example.test")).collect();
    let ids = ["n1", "n2", "n3"];
    let nodes = mapped_cluster(&etcd, "r", &ids, &accounts);
    let moving = accounts
        .iter()
        .find(|a| primary_of(&nodes[0], a) == "n3")
        .expect("an account on n3")
        .clone();
    let message =
        |i: usize| format!("Message-ID: <r{i}@example.org>\r\nSubject: r{i}\r\n\r\nload {i}\r\n");
    for i in 0..40 {
        let rcpt = &accounts[i % accounts.len()];
        assert!(try_send(nodes[i % 3].smtp, rcpt, message(i).as_bytes()));
    }

    // Sessions of an account n3 serves: on n3 itself, relayed through n1,
    // and a POP3 session on n3.
    let mut local = idling(nodes[2].imap, &moving);
    let mut relayed = idling(nodes[0].imap, &moving);
    let mut pop = Pop3::login(nodes[2].pop3, &moving, PASSWORD);
    assert_eq!(pop.stat().0, 2);

    // Senders keep going through n1 and n2 while n3 is drained.
    let load = keep_sending([nodes[0].smtp, nodes[1].smtp], &accounts, 40..240, message);
    load.wait_for(100);
    let out = cluster_cmd(&nodes[0], &["drain", "n3"]);
    assert!(out.contains("n3 drained"), "{out}");
    let drained = Instant::now();
    for c in [&mut local, &mut relayed] {
        let bye = bye_of(c);
        assert!(
            bye.contains("[UNAVAILABLE]") && bye.contains("moved"),
            "{bye}"
        );
    }
    eprintln!("sessions ended {:?} after the drain", drained.elapsed());
    // Sent as the session ended; a client reads it as the answer to its
    // next command.
    let r = pop.c.line();
    assert!(
        r.starts_with("-ERR [SYS/TEMP]") && r.contains("moved"),
        "{r}"
    );
    load.thread.join().unwrap();
    assert_ne!(primary_of(&nodes[0], &moving), "n3");
    let status = cluster_cmd(&nodes[0], &["status"]);
    assert_eq!(counts(&status, "n3"), (0, 0), "{status}");

    // Every message, once, through every node (n3 relays now too).
    for (k, account) in accounts.iter().enumerate() {
        for node in &nodes {
            let mut p = Pop3::login(node.pop3, account, PASSWORD);
            let (count, _) = p.stat();
            let mut seen = std::collections::BTreeMap::new();
            for n in 1..=count {
                let m = String::from_utf8_lossy(&p.retr(n)).into_owned();
                let i: usize = m
                    .split("Subject: r")
                    .nth(1)
                    .and_then(|r| r.split("\r\n").next())
                    .and_then(|i| i.parse().ok())
                    .unwrap_or_else(|| panic!("{m}"));
                *seen.entry(i).or_insert(0) += 1;
            }
            let want: std::collections::BTreeMap<usize, i32> = (0..240)
                .filter(|i| i % accounts.len() == k)
                .map(|i| (i, 1))
                .collect();
            assert_eq!(seen, want, "{account} through {}", node.pop3);
            p.ok("QUIT");
        }
    }
}

/// Log in to `account` over IMAP through `addr` from the loopback address
/// `from`; the tagged answer.
fn imap_login_from(
    from: std::net::Ipv4Addr,
    addr: SocketAddr,
    account: &str,
    pw: &str,
) -> (Client, String) {
    let mut c = Client::from_stream(connect_from(from, addr));
    let greeting = c.line();
    assert!(greeting.starts_with("* OK"), "{from}: {greeting}");
    c.send(format!("a LOGIN {account} {pw}\r\n").as_bytes());
    loop {
        let l = c.line();
        if l.starts_with("a ") {
            return (c, l);
        }
    }
}

/// The account's node sees every session relayed to it coming from the
/// relaying node's address: that address is not held to the per-address
/// connection cap, nor counted, banned or locked out by failed logins
/// there (its clients are throttled by their own addresses where they
/// connect).
#[test]
fn relayed_sessions_are_not_capped_or_banned_by_the_relaying_address() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..20).map(|i| format!("c{i}@example.test")).collect();
    let ids = ["n1", "n2"];
    let extra = "[limits]\nconnections_per_address_max = 2\n[auth_throttle]\nban_after_failures = 2\naccount_lock_after_failures = 2\nfailure_delay_ms = 10\nfailure_delay_max_ms = 50\n";
    let nodes = mapped_cluster_with(&etcd, "c", &ids, &accounts, extra);
    let on_n2: Vec<&String> = accounts
        .iter()
        .filter(|a| primary_of(&nodes[0], a) == "n2")
        .take(2)
        .collect();
    assert_eq!(on_n2.len(), 2);

    // Four clients, each from its own address, through n1: n2 holds four
    // sessions from n1's address, twice its per-address cap.
    let mut held = Vec::new();
    for i in 0..4u8 {
        let from = std::net::Ipv4Addr::new(127, 0, 0, 10 + i);
        let (c, answer) = imap_login_from(from, nodes[0].imap, on_n2[0], PASSWORD);
        assert!(answer.starts_with("a OK"), "client {i}: {answer}");
        held.push(c);
    }
    // The cap still holds for a client's own address.
    let from = std::net::Ipv4Addr::new(127, 0, 0, 20);
    let _one = imap_login_from(from, nodes[1].imap, on_n2[1], PASSWORD);
    let _two = imap_login_from(from, nodes[1].imap, on_n2[1], PASSWORD);
    let mut third = Client::from_stream(connect_from(from, nodes[1].imap));
    assert!(third.line().starts_with("* BYE"), "over the cap");

    // The password changed on n2 only: logins relayed there fail, again
    // and again, past n2's ban and lock thresholds; n1's address is not
    // banned for it, and the other account still logs in through n1.
    let out = ringmail(
        &[
            "account",
            "passwd",
            on_n2[0],
            "--data",
            nodes[1].data.to_str().unwrap(),
        ],
        "changed-on-n2\n",
    );
    assert_ok(&out, "account passwd");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut refused, mut attempt) = (0, 0);
    while refused < 4 {
        // Each attempt from an address of its own (n1 caps them too).
        attempt += 1;
        let from = std::net::Ipv4Addr::new(127, 0, 1, attempt);
        let (_, answer) = imap_login_from(from, nodes[0].imap, on_n2[0], PASSWORD);
        if answer.starts_with("a NO") {
            refused += 1;
        } else {
            // n2 has not reloaded its account file yet.
            assert!(Instant::now() < deadline, "{answer}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let from = std::net::Ipv4Addr::new(127, 0, 0, 40);
    let (_, answer) = imap_login_from(from, nodes[0].imap, on_n2[1], PASSWORD);
    assert!(answer.starts_with("a OK"), "{answer}");
    // The account that kept failing there is locked there, though.
    assert!(nodes[1].stderr_text().contains("refuse_locked_account"));
    let (_, answer) = imap_login_from(from, nodes[0].imap, on_n2[0], "changed-on-n2");
    // n1 still has the old password: refused there, by the client's address.
    assert!(answer.starts_with("a NO"), "{answer}");
    assert!(!nodes[1]
        .stderr_text()
        .contains("address banned after failed logins"));
}

/// A certificate renewal on a node: the new fingerprints are published in
/// its record, and the other nodes, which pin them, hand mail over to it
/// again without a restart.
#[test]
fn a_renewed_certificate_is_published_for_the_other_nodes() {
    let Some(etcd) = etcd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (c1, k1) = openssl_cert(dir.path(), "one", "mail.example.test,localhost");
    let (c2, k2) = openssl_cert(dir.path(), "two", "mail.example.test,localhost");
    let (live_c, live_k) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(&c1, &live_c).unwrap();
    std::fs::copy(&k1, &live_k).unwrap();
    let accounts: Vec<String> = (0..20).map(|i| format!("t{i}@example.test")).collect();
    let extra = format!("[tls]\ncert = {live_c:?}\nkey = {live_k:?}\n");
    let nodes = mapped_cluster_with(&etcd, "t", &["n1", "n2"], &accounts, &extra);
    let away = accounts
        .iter()
        .find(|a| primary_of(&nodes[0], a) == "n2")
        .unwrap();
    let m = |i: usize| format!("Message-ID: <t{i}@example.org>\r\nSubject: t{i}\r\n\r\nt{i}\r\n");
    assert_eq!(send_code(nodes[0].smtp, &[away], m(0).as_bytes()), 250);

    // Renewed: both nodes read the new files (the file watcher), each
    // replaced whole (a rename), the key first.
    for (from, to) in [(&k2, &live_k), (&c2, &live_c)] {
        let next = dir.path().join("next");
        std::fs::copy(from, &next).unwrap();
        std::fs::rename(&next, to).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in &nodes {
        while !n
            .stderr_text()
            .contains("cluster: new certificate fingerprints published")
        {
            assert!(Instant::now() < deadline, "{}", n.stderr_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The hand-over pins the new certificate: accepted (after at most a
    // moment's 451 while the new record travels).
    let mut code = 0;
    while code != 250 {
        code = send_code(nodes[0].smtp, &[away], m(1).as_bytes());
        assert!(code == 250 || code == 451, "{code}");
        assert!(Instant::now() < deadline, "never handed over again");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut p = Pop3::login(nodes[0].pop3, away, PASSWORD);
    assert_eq!(p.stat().0, 2);
}

/// etcd's own security for the cluster: etcd serves TLS only, asks for a
/// client certificate, and has authentication on; the nodes connect with
/// the CA, their certificate, a user and a password file, and work as
/// ever. A wrong password, or no credentials, and the node refuses to
/// start with etcd's reason.
#[test]
fn nodes_reach_an_etcd_with_tls_client_certificates_and_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let s = |p: std::path::PathBuf| p.to_str().unwrap().to_string();
    let ca = s(make_test_ca(dir.path()));
    // etcd's JSON gateway reaches etcd with the server's certificate as a
    // client certificate: both usages.
    let (srv, srv_key) = ca_signed(
        dir.path(),
        "etcd",
        "etcd",
        "IP:127.0.0.1",
        "serverAuth,clientAuth",
    );
    let (srv, srv_key) = (s(srv), s(srv_key));
    let (cli, cli_key) = ca_signed(
        dir.path(),
        "node",
        "node",
        "DNS:node.example.test",
        "clientAuth",
    );
    let (cli, cli_key) = (s(cli), s(cli_key));
    let args: Vec<String> = [
        "--cert-file",
        &srv,
        "--key-file",
        &srv_key,
        "--client-cert-auth",
        "--trusted-ca-file",
        &ca,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let Some(etcd) = etcd_with("https", &args) else {
        return;
    };
    // Authentication on, through etcd's JSON gateway: a root user.
    let enable = format!(
        r#"
import json, ssl, urllib.request
ctx = ssl.create_default_context(cafile={ca:?})
ctx.load_cert_chain({cli:?}, {cli_key:?})
for path, body in [("user/add", {{"name": "root", "password": "etcd-secret"}}),
                   ("role/add", {{"name": "root"}}),
                   ("user/grant", {{"user": "root", "role": "root"}}),
                   ("enable", {{}})]:
    r = urllib.request.urlopen("{url}/v3/auth/" + path, json.dumps(body).encode(), context=ctx)
    assert "error" not in json.loads(r.read()), path
print("auth on")
"#,
        url = etcd.url
    );
    assert!(python_code(&enable).contains("auth on"));

    let pw = dir.path().join("etcd-password");
    std::fs::write(&pw, "etcd-secret\n").unwrap();
    let secured = format!(
        "etcd_ca = {ca:?}\netcd_cert = {cli:?}\netcd_key = {cli_key:?}\netcd_user = \"root\"\netcd_password_file = {:?}\n",
        pw.to_str().unwrap()
    );
    let accounts: Vec<String> = (0..20).map(|i| format!("e{i}@example.test")).collect();
    let nodes = mapped_cluster_with(&etcd, "e", &["n1", "n2"], &accounts, &secured);
    let away = accounts
        .iter()
        .find(|a| primary_of(&nodes[0], a) == "n2")
        .unwrap();
    let m = b"Message-ID: <e@example.org>\r\nSubject: e\r\n\r\nover a secured etcd\r\n";
    assert_eq!(send_code(nodes[0].smtp, &[away], m), 250);
    let mut p = Pop3::login(nodes[0].pop3, away, PASSWORD);
    assert_eq!(p.stat().0, 1);
    p.ok("QUIT");

    // A wrong password, and no credentials at all (etcd takes the client
    // certificate's name as the user, who has no rights): refused by etcd.
    std::fs::write(&pw, "wrong\n").unwrap();
    for (cfg, why) in [
        (secured.clone(), "authentication failed"),
        (
            format!("etcd_ca = {ca:?}\netcd_cert = {cli:?}\netcd_key = {cli_key:?}\n"),
            "permission denied",
        ),
    ] {
        let file = dir.path().join("n3.toml");
        std::fs::write(&file, format!("{}{cfg}", node_config(&etcd, "e", "n3"))).unwrap();
        let data = tempfile::tempdir().unwrap();
        let err = serve_refused(&[
            "--config".as_ref(),
            file.as_os_str(),
            "--data".as_ref(),
            data.path().as_os_str(),
        ]);
        assert!(err.contains(why), "{err}");
    }
}

/// How many times `node` logged `event` so far.
fn logged(node: &Server, event: &str) -> usize {
    node.stderr_text()
        .matches(&format!("event=\"{event}\""))
        .count()
}

/// Wait until each of `nodes` logged `event` more often than `before` says.
fn wait_logged(nodes: &[&Server], event: &str, before: &[usize]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for (n, b) in nodes.iter().zip(before) {
        while logged(n, event) <= *b {
            assert!(
                Instant::now() < deadline,
                "no new {event}:\n{}",
                n.stderr_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The Message-IDs of `account`'s INBOX read through `addr` (POP3), in order.
fn inbox_ids(addr: SocketAddr, account: &str) -> Vec<String> {
    let mut p = Pop3::login(addr, account, PASSWORD);
    let (count, _) = p.stat();
    let ids = (1..=count)
        .map(|n| {
            let m = String::from_utf8_lossy(&p.retr(n)).into_owned();
            m.split("Message-ID: <")
                .nth(1)
                .and_then(|r| r.split('>').next())
                .unwrap_or_else(|| panic!("{m}"))
                .to_string()
        })
        .collect();
    p.quit();
    ids
}

/// What IMAP shows of an account through `addr`: INBOX message 1's flags,
/// the mailboxes, and Projects' messages' Message-IDs.
fn imap_state(addr: SocketAddr, account: &str) -> String {
    python_code(&format!(
        r#"
import imaplib
m = imaplib.IMAP4("127.0.0.1", {port})
m.login("{account}", "{PASSWORD}")
typ, boxes = m.list()
names = sorted(b.decode().rsplit(" ", 1)[1].strip('"') for b in boxes)
m.select("INBOX", readonly=True)
typ, data = m.fetch("1", "(FLAGS)")
flags = data[0].decode().split("FLAGS (")[1].split(")")[0]
ids = []
if "Projects" in names:
    m.select("Projects", readonly=True)
    typ, data = m.search(None, "ALL")
    for n in data[0].split():
        typ, d = m.fetch(n, "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        ids.append(d[0][1].decode().strip())
# \Recent belongs to the session, not to the message.
flags = [f for f in flags.split() if f != "\\Recent"]
print("flags=" + " ".join(sorted(flags)), "boxes=" + ",".join(names), "projects=" + ",".join(ids))
m.logout()
"#,
        port = addr.port()
    ))
    .trim()
    .to_string()
}

/// A node that gains a bucket copies what the bucket already holds, with
/// flags, keywords and mailboxes (`runtime/catchup.rs`). So a second
/// failure loses nothing that only the first failure's dead node and the
/// surviving primary held; and a killed node that comes back and is given
/// buckets again ends up with each message once.
#[test]
fn a_gained_bucket_is_copied_so_a_second_failure_loses_nothing() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..48).map(|i| format!("g{i}@example.test")).collect();
    let ids = ["n1", "n2", "n3"];
    let mut nodes = mapped_cluster(&etcd, "g", &ids, &accounts);
    let message = |i: usize| {
        format!(
            "From: <s@example.org>\r\nMessage-ID: <g{i}@example.org>\r\nSubject: g{i}\r\n\r\nbody {i}\r\n"
        )
    };
    for i in 0..accounts.len() * 3 {
        smtp_send(
            nodes[i % 3].smtp,
            "s@example.org",
            &[&accounts[i % accounts.len()]],
            message(i).as_bytes(),
        );
    }
    let want = |k: usize| -> Vec<String> {
        (0..3)
            .map(|j| format!("g{}@example.org", k + j * accounts.len()))
            .collect()
    };
    // x: primary n1, replica n3. Its flags and a mailbox change on n1,
    // which per-delivery replication does not carry.
    let places = locate(&nodes[0], &accounts);
    let x = places
        .iter()
        .position(|(p, r)| p == "n1" && r == "n3")
        .expect("an account on n1 with its replica on n3");
    python_code(&format!(
        r#"
import imaplib
m = imaplib.IMAP4("127.0.0.1", {port})
m.login("{account}", "{PASSWORD}")
m.select("INBOX")
for r in [m.store("1", "+FLAGS", r"(\Flagged $Work)"), m.create("Projects"), m.copy("2", "Projects")]:
    assert r[0] == "OK", r
m.logout()
"#,
        port = nodes[0].imap.port(),
        account = accounts[x]
    ));
    let x_state = imap_state(nodes[0].imap, &accounts[x]);
    assert_eq!(
        x_state,
        format!(
            "flags=$Work \\Flagged boxes=Archive,Drafts,INBOX,Junk,Projects,Sent,Trash projects=Message-ID: <g{}@example.org>",
            x + accounts.len()
        )
    );

    // n3 dies: n2 becomes replica of n1's buckets that n3 was replica of
    // (x's among them) and copies them from n1.
    let before: Vec<usize> = nodes.iter().map(|n| logged(n, "caught_up")).collect();
    nodes[2].kill9();
    wait_failed_over(&nodes[0], 2, Duration::from_secs(15));
    wait_logged(&[&nodes[0], &nodes[1]], "caught_up", &before);

    // n1 dies too: n2 alone holds everything.
    nodes[0].kill9();
    wait_failed_over(&nodes[1], 1, Duration::from_secs(15));
    for (k, account) in accounts.iter().enumerate() {
        assert_eq!(inbox_ids(nodes[1].pop3, account), want(k), "{account}");
    }
    assert_eq!(imap_state(nodes[1].imap, &accounts[x]), x_state);

    // n1 comes back with its old data and is given buckets again: it
    // copies them from n2 and holds each message once.
    nodes[0].restart();
    wait_status(&nodes[1], Duration::from_secs(15), |s| {
        s.contains("2 live node(s)")
    });
    let before: Vec<usize> = nodes.iter().map(|n| logged(n, "caught_up")).collect();
    let r = cluster_cmd(&nodes[1], &["rebalance", "--move-primaries"]);
    wait_map(&nodes[..2], &r);
    wait_logged(&[&nodes[0]], "caught_up", &before);
    let places = locate(&nodes[1], &accounts);
    assert!(places.iter().any(|(p, _)| p == "n1"));
    for (k, account) in accounts.iter().enumerate() {
        for n in &nodes[..2] {
            assert_eq!(inbox_ids(n.pop3, account), want(k), "{account}");
        }
    }
    assert_eq!(imap_state(nodes[0].imap, &accounts[x]), x_state);
}

/// Hand-overs share sessions (`runtime/peer.rs`): twenty messages through
/// the node that is not the account's primary open one session each way,
/// not twenty; and a pooled session the other node closed (its command
/// timeout here) is replaced without the client noticing.
#[test]
fn hand_overs_reuse_sessions_and_replace_closed_ones() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..8).map(|i| format!("p{i}@example.test")).collect();
    let timeouts = "[timeouts]\nsmtp_command_secs = 2\n";
    let nodes = mapped_cluster_with(&etcd, "p", &["n1", "n2"], &accounts, timeouts);
    let account = accounts
        .iter()
        .find(|a| primary_of(&nodes[0], a) == "n2")
        .expect("an account on n2")
        .clone();
    // The first map's bucket copies (runtime/catchup.rs) open sessions
    // of their own: let them end first.
    wait_logged(&[&nodes[0], &nodes[1]], "caught_up", &[0, 0]);
    let sessions = |n: &Server| logged(n, "peer_session");
    let before = (sessions(&nodes[0]), sessions(&nodes[1]));
    for i in 0..20 {
        let m = format!("Message-ID: <p{i}@example.org>\r\nSubject: {i}\r\n\r\nbody {i}\r\n");
        smtp_send(nodes[0].smtp, "s@example.org", &[&account], m.as_bytes());
    }
    // n1 hands over to n2; n2 copies to its replica n1.
    assert_eq!(
        (sessions(&nodes[0]), sessions(&nodes[1])),
        (before.0 + 1, before.1 + 1)
    );
    // Both pooled sessions are closed by the other side's timeout.
    std::thread::sleep(Duration::from_secs(3));
    let m = b"Message-ID: <p-late@example.org>\r\nSubject: late\r\n\r\nlate\r\n";
    assert_eq!(send_code(nodes[0].smtp, &[&account], m), 250);
    assert_eq!(
        (sessions(&nodes[0]), sessions(&nodes[1])),
        (before.0 + 2, before.1 + 2)
    );
    for n in &nodes {
        assert_eq!(inbox_ids(n.pop3, &account).len(), 21);
    }
    // Each node counted its 21 hand-overs (n1 to the primary, n2 its
    // replica copies back) and the first map's bucket copy it pulled.
    for n in &nodes {
        let text = scrape_until(n, |t| {
            metric_sum(
                t,
                "ringmail_cluster_handovers_total",
                &[("kind", "delivery"), ("result", "ok")],
            ) >= 21.0
        });
        assert!(
            metric_sum(&text, "ringmail_cluster_handover_seconds_count", &[]) >= 21.0,
            "{text}"
        );
        assert!(
            metric_sum(
                &text,
                "ringmail_cluster_bucket_copies_total",
                &[("result", "ok")]
            ) >= 1.0,
            "{text}"
        );
        assert_eq!(
            metric_sum(
                &text,
                "ringmail_cluster_handovers_total",
                &[("result", "timeout")]
            ),
            0.0
        );
        assert_eq!(metric_sum(&text, "ringmail_cluster_live_nodes", &[]), 2.0);
        let buckets = metric_sum(&text, "ringmail_cluster_buckets", &[("role", "primary")])
            + metric_sum(&text, "ringmail_cluster_buckets", &[("role", "replica")]);
        assert!(buckets > 0.0, "{text}");
    }
}

/// Messages in `mailbox` of `account`, through `addr` (Python's imaplib).
fn imap_count(addr: SocketAddr, account: &str, mailbox: &str) -> usize {
    python_code(&format!(
        r#"
import imaplib
m = imaplib.IMAP4("127.0.0.1", {port})
m.login("{account}", "{PASSWORD}")
typ, data = m.select("{mailbox}", readonly=True)
assert typ == "OK", data
print(int(data[0]))
m.logout()
"#,
        port = addr.port()
    ))
    .trim()
    .parse()
    .unwrap()
}

/// The node a client reaches decides Junk (DMARC quarantine here); the
/// hand-over to the account's primary and the primary's copy to its
/// replica carry the verdict (`XJUNK`), so the message is in Junk on both,
/// as a failover shows.
#[test]
fn the_verdict_of_the_node_a_client_reached_travels_with_the_hand_over() {
    use ringmail::relay::testdns::{TestDns, TestZone};
    let Some(etcd) = etcd() else { return };
    let mut zone = TestZone::new();
    zone.txt("q.test", &["v=spf1 -all"]);
    zone.txt("_dmarc.q.test", &["v=DMARC1; p=quarantine"]);
    let (dns, _dns) = TestDns::start(zone);
    let accounts: Vec<String> = (0..8).map(|i| format!("j{i}@example.test")).collect();
    // Clients on loopback are verified (trusted_networks is empty).
    let verify = format!(
        "[relay]\nnameservers = [\"{dns}\"]\ndns_timeout_secs = 1\n\
         [mail_auth]\ntrusted_networks = []\ntimeout_secs = 4\n"
    );
    let mut nodes = mapped_cluster_with(&etcd, "j", &["n1", "n2"], &accounts, &verify);
    let account = accounts
        .iter()
        .find(|a| primary_of(&nodes[0], a) == "n2")
        .expect("an account on n2")
        .clone();
    let (mut c, _) = smtp_connect(nodes[0].smtp);
    let message =
        b"From: <x@q.test>\r\nMessage-ID: <j1@q.test>\r\nSubject: quarantined\r\n\r\nspam\r\n";
    let r = smtp_transaction(&mut c, "x@q.test", &[&account], message, Transfer::Data).unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(imap_count(nodes[0].imap, &account, "Junk"), 1);
    assert_eq!(imap_count(nodes[0].imap, &account, "INBOX"), 0);
    // n2 dies: n1, its replica, serves the account with the message in Junk.
    nodes[1].kill9();
    wait_failed_over(&nodes[0], 1, Duration::from_secs(15));
    assert_eq!(imap_count(nodes[0].imap, &account, "Junk"), 1);
    assert_eq!(imap_count(nodes[0].imap, &account, "INBOX"), 0);
}

/// What IMAP APPEND put where, as the account's node shows it: per
/// mailbox, each message's flags (no \Recent), INTERNALDATE and octets.
fn appended_state(addr: SocketAddr, account: &str) -> String {
    python_code(&format!(
        r#"
import imaplib, hashlib
m = imaplib.IMAP4("127.0.0.1", {port})
m.login("{account}", "{PASSWORD}")
out = []
for box in ["INBOX", "Sent", "Notes"]:
    typ, data = m.select(box, readonly=True)
    if typ != "OK":
        out.append(box + ": missing")
        continue
    for n in range(1, int(data[0]) + 1):
        typ, d = m.fetch(str(n), "(FLAGS INTERNALDATE BODY.PEEK[])")
        meta = d[0][0].decode()
        flags = meta.split("FLAGS (")[1].split(")")[0].split()
        flags = " ".join(sorted(f for f in flags if f != "\\Recent"))
        date = meta.split('INTERNALDATE "')[1].split('"')[0]
        out.append("%s: [%s] %s %s" % (box, flags, date, hashlib.sha256(d[0][1]).hexdigest()[:16]))
print("\n".join(out))
m.logout()
"#,
        port = addr.port()
    ))
}

/// IMAP APPEND is acknowledged only once the account's replica holds the
/// message too (`runtime/cluster.rs`, `replicate_append`): after the
/// primary dies, every appended message is there, in its mailbox (one
/// the replica never saw created included), with its flags, keywords,
/// internal date and octets.
#[test]
fn an_imap_append_is_on_the_replica_before_its_ok() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..8).map(|i| format!("a{i}@example.test")).collect();
    let mut nodes = mapped_cluster(&etcd, "a", &["n1", "n2"], &accounts);
    let account = accounts
        .iter()
        .find(|a| primary_of(&nodes[0], a) == "n1")
        .expect("an account on n1")
        .clone();
    // Through n2, which relays the session to n1.
    python_code(&format!(
        r#"
import imaplib
m = imaplib.IMAP4("127.0.0.1", {port})
m.login("{account}", "{PASSWORD}")
assert m.create("Notes")[0] == "OK"
for box, flags, date, text in [
    ("Sent", r"(\Seen $Label1)", '"01-Jan-2020 10:00:00 +0000"', "sent"),
    ("Notes", r"(\Flagged)", '"02-Feb-2021 11:30:00 +0100"', "note"),
    ("INBOX", None, '"03-Mar-2022 12:00:00 +0000"', "inbox"),
]:
    # A line over 998 octets and a bare LF: the copy keeps the octets.
    msg = ("From: <{account}>\r\nSubject: %s\r\n\r\nappended %s\r\n%s\r\nbare\nlf\r\n" % (text, text, "x" * 1500)).encode()
    typ, data = m.append(box, flags, date, msg)
    assert typ == "OK", (typ, data)
m.logout()
"#,
        port = nodes[1].imap.port()
    ));
    let before = appended_state(nodes[0].imap, &account);
    assert_eq!(before.lines().count(), 3, "{before}");
    // INTERNALDATE comes back in UTC, the day padded with a space.
    assert!(
        before.contains("Sent: [$Label1 \\Seen]  1-Jan-2020 10:00:00 +0000"),
        "{before}"
    );
    assert!(
        before.contains("Notes: [\\Flagged]  2-Feb-2021 10:30:00 +0000"),
        "{before}"
    );

    nodes[0].kill9();
    wait_failed_over(&nodes[1], 1, Duration::from_secs(15));
    assert_eq!(appended_state(nodes[1].imap, &account), before);
}

/// `rebalance --move-primaries` under load: the new primaries copy their
/// buckets while they are replicas (`placement::staging`), and only then
/// does the map make them primaries; every acknowledged message is there
/// once, through every node.
#[test]
fn moved_primaries_copy_their_buckets_before_they_serve_them() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..24).map(|i| format!("m{i}@example.test")).collect();
    let name = format!("mp{}", std::process::id());
    let mut nodes = mapped_cluster(&etcd, "mp", &["n1", "n2"], &accounts);
    let message =
        |i: usize| format!("Message-ID: <m{i}@example.org>\r\nSubject: m{i}\r\n\r\nbody {i}\r\n");
    for i in 0..48 {
        smtp_send(
            nodes[i % 2].smtp,
            "s@example.org",
            &[&accounts[i % accounts.len()]],
            message(i).as_bytes(),
        );
    }
    // n3 joins; primaries move to it while mail keeps coming.
    let n3 = Server::options()
        .cores(1)
        .accounts(&accounts)
        .config(&node_config(&etcd, &name, "n3"))
        .start();
    nodes.push(n3);
    wait_status(&nodes[0], Duration::from_secs(10), |s| {
        s.contains("3 live node(s)")
    });
    let load = keep_sending([nodes[0].smtp, nodes[1].smtp], &accounts, 48..160, message);
    load.wait_for(60);
    let r = cluster_cmd(&nodes[0], &["rebalance", "--move-primaries"]);
    assert!(
        r.contains("primaries moved after") && r.contains("n3"),
        "{r}"
    );
    wait_map(&nodes, &r);
    // n3 finished its copies before it saw the map that made it primary.
    let text = nodes[2].stderr_text();
    let version = r.split("placement version=").nth(1).unwrap().trim();
    let switched = text
        .find(&format!("version=Some({version})"))
        .expect("n3 saw the final map");
    let copied = text.rfind("event=\"caught_up\"").expect("n3 copied");
    assert!(copied < switched, "{}", nodes[2].stderr_tail(30));
    load.thread.join().unwrap();
    let places = locate(&nodes[0], &accounts);
    assert!(places.iter().any(|(p, _)| p == "n3"), "{places:?}");
    for (k, account) in accounts.iter().enumerate() {
        let want: Vec<String> = (0..160)
            .filter(|i| i % accounts.len() == k)
            .map(|i| format!("m{i}@example.org"))
            .collect();
        for n in &nodes {
            let mut got = inbox_ids(n.pop3, account);
            got.sort_by_key(|id| id[1..].split('@').next().unwrap().parse::<usize>().unwrap());
            assert_eq!(got, want, "{account} through a node");
        }
    }
}

/// Every mailbox of an account through `addr`, with each message's
/// Message-ID and flags (no \Recent), and the subscriptions.
fn mailbox_state(addr: SocketAddr, account: &str) -> String {
    python_code(&format!(
        r#"
import imaplib
m = imaplib.IMAP4("127.0.0.1", {port})
m.login("{account}", "{PASSWORD}")
out = []
typ, boxes = m.list()
names = sorted(b.decode().rsplit(" ", 1)[1].strip('"') for b in boxes)
selectable = sorted(b.decode().rsplit(" ", 1)[1].strip('"') for b in boxes
                    if "\\Noselect" not in b.decode() and "\\NonExistent" not in b.decode())
out.append("boxes: " + ",".join(names))
for box in selectable:
    typ, data = m.select('"%s"' % box, readonly=True)
    assert typ == "OK", (box, data)
    msgs = []
    for n in range(1, int(data[0]) + 1):
        typ, d = m.fetch(str(n), "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        flags = d[0][0].decode().split("FLAGS (")[1].split(")")[0].split()
        flags = " ".join(sorted(f for f in flags if f != "\\Recent"))
        msgs.append("%s[%s]" % (d[0][1].decode().split(":", 1)[1].strip(), flags))
    out.append("%s: %s" % (box, " ".join(sorted(msgs))))
typ, subs = m.lsub()
out.append("subscribed: " + ",".join(sorted(s.decode().rsplit(" ", 1)[1].strip('"') for s in subs if s)))
print("\n".join(out))
m.logout()
"#,
        port = addr.port()
    ))
}

/// Flag changes, expunges, copies, moves and mailbox changes made on a
/// bucket's primary, over IMAP and POP3, reach the replica before the
/// client's OK (`runtime/changes.rs`): after the primary's kill -9 the
/// replica shows the account as the primary did, read mail read, deleted
/// mail gone, moved mail moved.
#[test]
fn changes_on_the_primary_are_on_the_replica_before_the_ok() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..8).map(|i| format!("c{i}@example.test")).collect();
    let mut nodes = mapped_cluster(&etcd, "ch", &["n1", "n2"], &accounts);
    let account = accounts
        .iter()
        .find(|a| primary_of(&nodes[0], a) == "n1")
        .expect("an account on n1")
        .clone();
    for i in 0..8 {
        let m = format!("Message-ID: <c{i}@example.org>\r\nSubject: c{i}\r\n\r\nbody {i}\r\n");
        smtp_send(
            nodes[i % 2].smtp,
            "s@example.org",
            &[&account],
            m.as_bytes(),
        );
    }
    // Through n2, which relays the session to n1, the primary.
    python_code(&format!(
        r#"
import imaplib
m = imaplib.IMAP4("127.0.0.1", {port})
m.login("{account}", "{PASSWORD}")
def ok(r):
    assert r[0] == "OK", r
    return r
ok(m.select("INBOX"))
ok(m.store("1", "+FLAGS", r"(\Seen $Important)"))
ok(m.store("2", "+FLAGS", r"(\Deleted)"))
ok(m.expunge())
# INBOX now c0 c2 c3 c4 c5 c6 c7
ok(m.create("Projects"))
ok(m.copy("1", "Projects"))
ok(m.create("Archive/2026"))
ok(m._simple_command("MOVE", "2", "Archive/2026"))
# INBOX now c0 c3 c4 c5 c6 c7
ok(m.store("2", "FLAGS", r"(\Flagged)"))
ok(m.rename("Projects", "Work/Projects"))
ok(m.subscribe("Work/Projects"))
ok(m.create("Tmp"))
ok(m.delete("Tmp"))
ok(m.select('"Work/Projects"'))
ok(m.store("1", "+FLAGS", r"(\Answered)"))
# A message in two mailboxes, moved from the second: the moved copy keeps
# its own flags, not those of the first copy.
ok(m.select("INBOX"))
ok(m.copy("3", "Archive"))
ok(m.select("Archive"))
ok(m.store("1", "+FLAGS", r"(\Draft)"))
ok(m._simple_command("MOVE", "1", "Trash"))
m.logout()
"#,
        port = nodes[1].imap.port()
    ));
    // POP3 through n2 as well: the last INBOX message goes.
    let mut p = Pop3::login(nodes[1].pop3, &account, PASSWORD);
    let (count, _) = p.stat();
    assert_eq!(count, 6);
    p.ok(&format!("DELE {count}"));
    p.quit();

    let before = mailbox_state(nodes[0].imap, &account);
    let expect = [
        "Archive/2026: <c2@example.org>[]",
        "INBOX: <c0@example.org>[$Important \\Seen] <c3@example.org>[\\Flagged] \
         <c4@example.org>[] <c5@example.org>[] <c6@example.org>[]",
        "Work/Projects: <c0@example.org>[$Important \\Answered \\Seen]",
        "subscribed: Work/Projects",
        "Trash: <c4@example.org>[\\Draft]",
        "Archive: \n",
    ];
    for line in expect {
        assert!(before.contains(line), "{line:?} in\n{before}");
    }
    assert!(
        !before.contains("Tmp") && !before.contains("<c1@"),
        "{before}"
    );

    nodes[0].kill9();
    wait_failed_over(&nodes[1], 1, Duration::from_secs(15));
    assert_eq!(mailbox_state(nodes[1].imap, &account), before);
}

/// Changes the primary makes while a node that just became the bucket's
/// replica is still copying it find nothing there yet; the replica keeps
/// them and applies them once the copy is done (`changes::Deferred`), so
/// the copy's older state does not stay. `copy_pause_ms` holds the copy
/// open while the changes are made.
#[test]
fn changes_made_while_the_replica_copies_the_bucket_are_applied_after_the_copy() {
    let Some(etcd) = etcd() else { return };
    let account = "d0@example.test".to_string();
    let accounts = vec![account.clone()];
    let mut nodes = mapped_cluster(&etcd, "dc", &["n1"], &accounts);
    for i in 0..6 {
        let m = format!("Message-ID: <d{i}@example.org>\r\nSubject: d{i}\r\n\r\nbody {i}\r\n");
        smtp_send(nodes[0].smtp, "s@example.org", &[&account], m.as_bytes());
    }
    nodes.push(join_paced(&etcd, "dc", "n2", &accounts, 6000));
    wait_status(&nodes[0], Duration::from_secs(10), |s| {
        s.contains("2 live node(s)")
    });
    let sent = logged(&nodes[0], "buckets_sent");
    let r = cluster_cmd(&nodes[0], &["rebalance"]);
    wait_map(&nodes, &r);
    assert_eq!(replica_of(&nodes[0], &account), "n2");
    // n1 took its snapshot and sent the bucket; n2 holds it back.
    wait_logged(&[&nodes[0]], "buckets_sent", &[sent]);
    python_code(&format!(
        r#"
import imaplib
m = imaplib.IMAP4("127.0.0.1", {port})
m.login("{account}", "{PASSWORD}")
def ok(r):
    assert r[0] == "OK", r
    return r
ok(m.select("INBOX"))
ok(m.store("1", "+FLAGS", r"(\Seen)"))
ok(m.store("2", "+FLAGS", r"(\Deleted)"))
ok(m.expunge())
ok(m._simple_command("MOVE", "2", "Archive"))
m.logout()
"#,
        port = nodes[0].imap.port()
    ));
    // The changes came before the copy stored the account.
    assert_eq!(
        logged(&nodes[1], "bucket_copied"),
        0,
        "{}",
        nodes[1].stderr_tail(30)
    );
    wait_logged(&[&nodes[1]], "caught_up", &[0]);
    let before = mailbox_state(nodes[0].imap, &account);
    for line in [
        "Archive: <d2@example.org>[]",
        "INBOX: <d0@example.org>[\\Seen] <d3@example.org>[] <d4@example.org>[] <d5@example.org>[]",
    ] {
        assert!(before.contains(line), "{line:?} in\n{before}");
    }
    nodes[0].kill9();
    wait_failed_over(&nodes[1], 1, Duration::from_secs(15));
    assert_eq!(mailbox_state(nodes[1].imap, &account), before);
}

/// A replica that is live (its lease renewed) but does not answer, here
/// a stopped process whose lease outlasts the pause: the first delivery
/// waits `peer_timeout_ms` and gets 451 (the stalled node then holds a
/// copy nobody acknowledged: pipelined, the whole transaction was in its
/// socket); for a while after that the node
/// is not tried, so its buckets answer at once (SMTP 451, IMAP `NO
/// [UNAVAILABLE]`, before anything is written) instead of each waiting
/// out the timeout; once it answers again, mail is acknowledged again.
#[test]
fn a_silent_replica_fails_its_buckets_at_once_instead_of_holding_each_delivery() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..8).map(|i| format!("q{i}@example.test")).collect();
    let nodes = mapped_cluster_leased(
        &etcd,
        "si",
        &["n1", "n2"],
        &accounts,
        40,
        2,
        "peer_timeout_ms = 10000\n",
    );
    let account = accounts
        .iter()
        .find(|a| primary_of(&nodes[0], a) == "n1")
        .expect("an account on n1")
        .clone();
    assert_eq!(replica_of(&nodes[0], &account), "n2");
    let msg =
        |i: usize| format!("Message-ID: <si{i}@example.org>\r\nSubject: si{i}\r\n\r\nbody\r\n");
    assert_eq!(
        send_code(nodes[0].smtp, &[&account], msg(0).as_bytes()),
        250
    );
    let mut imap = Client::connect(nodes[0].imap);
    imap.set_read_timeout(Duration::from_secs(30));
    assert!(imap.line().starts_with("* OK"));
    let tagged = |c: &mut Client, tag: &str, command: &str| -> (String, Duration) {
        let t = Instant::now();
        c.send(format!("{tag} {command}\r\n").as_bytes());
        loop {
            let l = c.line();
            if l.starts_with(&format!("{tag} ")) {
                return (l, t.elapsed());
            }
        }
    };
    let (r, _) = tagged(&mut imap, "a", &format!("LOGIN {account} {PASSWORD}"));
    assert!(r.starts_with("a OK"), "{r}");
    let (r, _) = tagged(&mut imap, "b", "SELECT INBOX");
    assert!(r.starts_with("b OK"), "{r}");

    let pid = nodes[1].pid().unwrap() as libc::pid_t;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let t = Instant::now();
    let code = send_code(nodes[0].smtp, &[&account], msg(1).as_bytes());
    let first = t.elapsed();
    assert_eq!(code, 451);
    assert!(
        first >= Duration::from_millis(9900) && first < Duration::from_secs(16),
        "the first delivery waits the timeout: {first:?}"
    );
    // Each node has two shards, and each connection reaches either (the
    // kernel picks by the client's port): the mark is the node's, so none
    // of them waits the timeout again. 16 connections reach both shards
    // but once in 32,768 runs; the metrics below check they did.
    for i in 2..18 {
        let t = Instant::now();
        assert_eq!(
            send_code(nodes[0].smtp, &[&account], msg(i).as_bytes()),
            451
        );
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "later ones fail at once, on either shard: {:?}",
            t.elapsed()
        );
    }
    let (r, took) = tagged(&mut imap, "c", "STORE 1 +FLAGS (\\Seen)");
    assert!(r.starts_with("c NO [UNAVAILABLE]"), "{r}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
    // The node's metrics say what happened: one hand-over ran out of
    // time, and the later deliveries and the STORE were refused at once.
    let text = scrape_until(&nodes[0], |t| {
        metric_sum(
            t,
            "ringmail_cluster_handovers_total",
            &[("kind", "delivery"), ("result", "timeout")],
        ) == 1.0
            && metric_sum(t, "ringmail_cluster_refused_silent_total", &[]) >= 17.0
    });
    for shard in ["0", "1"] {
        assert!(
            metric_sum(
                &text,
                "ringmail_cluster_refused_silent_total",
                &[("shard", shard)]
            ) >= 1.0,
            "both shards refused at once: {text}"
        );
    }
    // (Whether n2 still counts as silent depends on how much of the 10 s
    // hold is left at the scrape.)
    assert!(text.contains("ringmail_cluster_silent_nodes "), "{text}");
    assert_eq!(metric_sum(&text, "ringmail_cluster_live_nodes", &[]), 2.0);
    assert_eq!(metric_sum(&text, "ringmail_cluster_lease_valid", &[]), 1.0);
    assert!(
        metric_sum(
            &text,
            "ringmail_cluster_handovers_total",
            &[("kind", "delivery"), ("result", "ok")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric_sum(&text, "ringmail_cluster_map_version", &[]) > 0.0,
        "{text}"
    );
    // The node's log is read by another thread: wait for the lines.
    wait_logged(&[&nodes[0]], "peer_silent", &[0]);
    // Refused for the silence mark, not because the lease lapsed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes[0]
        .stderr_text()
        .contains("did not answer a hand-over in time")
    {
        assert!(Instant::now() < deadline, "{}", nodes[0].stderr_tail(40));
        std::thread::sleep(Duration::from_millis(50));
    }

    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while send_code(nodes[0].smtp, &[&account], msg(18).as_bytes()) != 250 {
        assert!(Instant::now() < deadline, "never acknowledged again");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (r, _) = tagged(&mut imap, "d", "STORE 1 +FLAGS (\\Seen)");
    assert!(r.starts_with("d OK"), "{r}");
}

/// A node sends at most `catchup::SENDS_MAX` (4) bucket copies at once, to
/// all members together: a fifth XSYNC is answered 451 at once, and one
/// that ends frees its place.
#[test]
fn bucket_copies_a_node_sends_at_once_are_capped() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..4).map(|i| format!("x{i}@example.test")).collect();
    let nodes = mapped_cluster(&etcd, "xc", &["n1", "n2"], &accounts);
    let internal = internal_of(&nodes[0]);
    // n2's own certificate: a member's.
    let tls = nodes[1].data.join("tls");
    let find = |ext: &str| {
        std::fs::read_dir(&tls)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == ext))
            .unwrap_or_else(|| panic!("no .{ext} in {}", tls.display()))
    };
    let (cert, key) = (find("pem"), find("key"));
    // The first map's own bucket copies (each node pulls what it is
    // replica for) end first, so they hold no place.
    wait_logged(&[&nodes[0], &nodes[1]], "caught_up", &[0, 0]);
    // Five sessions first (TLS handshakes take time on a busy machine),
    // then four copies of a map n1 has not seen: each waits for it (5 s)
    // holding its place. The fifth is refused before that; once the four
    // were answered, a copy is taken again.
    let out = python_code(&format!(
        r#"
import smtplib, ssl, time
def member():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain({cert:?}, {key:?})
    s = smtplib.SMTP("{ip}", {port}, timeout=30)
    s.ehlo("n2.example.test")
    s.starttls(context=ctx)
    s.ehlo("n2.example.test")
    return s
sessions = [member() for i in range(5)]
waiting, fifth = sessions[:4], sessions[4]
for s in waiting:
    s.putcmd("XSYNC 999999 0")
time.sleep(0.5)
t = time.time()
fifth.putcmd("XSYNC 999999 0")
code, text = fifth.getreply()
print("fifth", code, round(time.time() - t, 2), text.decode())
for s in waiting:
    code, text = s.getreply()
    print("waited", code, text.decode())
s = member()
s.putcmd("XSYNC 999999 0")
code, text = s.getreply()
print("after", code, text.decode())
"#,
        cert = cert.to_str().unwrap(),
        key = key.to_str().unwrap(),
        ip = internal.ip(),
        port = internal.port(),
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    let fifth: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(&fifth[..2], &["fifth", "451"], "{out}");
    assert!(lines[0].contains("4.3.2 Too many bucket copies"), "{out}");
    assert!(
        fifth[2].parse::<f64>().unwrap() < 2.0,
        "refused at once: {out}"
    );
    for l in &lines[1..5] {
        assert!(l.starts_with("waited 451 4.4.0"), "{out}");
        assert!(l.contains("not seen that bucket map"), "{out}");
    }
    // Its place is free again: it waits for the map like the others.
    assert!(lines[5].starts_with("after 451 4.4.0"), "{out}");
    assert!(lines[5].contains("not seen that bucket map"), "{out}");
    assert!(nodes[0]
        .stderr_text()
        .contains("a bucket copy refused: too many are being sent"));
}

/// The duplicate table is filled again when a node starts, from the
/// messages it stored within the window: a client's retry of a message
/// whose 250 it never got (the node was killed after its commit) is stored
/// once, though the node was restarted in between.
#[test]
fn the_duplicate_table_outlives_a_kill_and_restart() {
    let Some(etcd) = etcd() else { return };
    let accounts = vec!["d0@example.test".to_string()];
    let mut nodes = mapped_cluster(&etcd, "dk", &["n1"], &accounts);
    let message = b"From: <s@example.org>\r\nMessage-ID: <kept@example.org>\r\nSubject: kept\r\n\r\nsent before the kill\r\n";
    assert_eq!(send_code(nodes[0].smtp, &[&accounts[0]], message), 250);
    let before = logged(&nodes[0], "duplicates_filled");
    nodes[0].kill9();
    nodes[0].restart();
    // The log is read by another thread: wait for the new line.
    wait_logged(&[&nodes[0]], "duplicates_filled", &[before]);
    let text = nodes[0].stderr_text();
    let filled = text
        .rfind("event=\"duplicates_filled\"")
        .map(|i| &text[i..])
        .unwrap();
    assert!(filled.contains("entries=1 "), "{filled}");
    assert!(filled.contains("cut_short=false"), "{filled}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while send_code(nodes[0].smtp, &[&accounts[0]], message) != 250 {
        assert!(
            Instant::now() < deadline,
            "never acknowledged after the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_logged(&[&nodes[0]], "duplicate_suppressed", &[0]);
    // Another message is new mail.
    let other = b"From: <s@example.org>\r\nMessage-ID: <new@example.org>\r\nSubject: new\r\n\r\nafter the restart\r\n";
    assert_eq!(send_code(nodes[0].smtp, &[&accounts[0]], other), 250);
    let mut p = Pop3::login(nodes[0].pop3, &accounts[0], PASSWORD);
    assert_eq!(p.stat().0, 2);
    assert!(p.retr(1).ends_with(b"\r\nsent before the kill\r\n"));
    p.ok("QUIT");
}

/// The INBOX count of `account` in `node`'s own store (`ringmail mailbox
/// list`, which reads the data directory whatever the bucket map says); 0
/// for an account the node has not stored yet.
fn local_inbox(node: &Server, account: &str) -> usize {
    let data = node.data.to_str().unwrap();
    let out = ringmail(&["mailbox", "list", account, "--data", data], "");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("\"INBOX\" "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The Message-IDs of `account`'s INBOX through `addr`, from the headers
/// alone (POP3 TOP, RFC 1939 7), sorted.
fn header_ids(addr: SocketAddr, account: &str) -> Vec<String> {
    let mut p = Pop3::login(addr, account, PASSWORD);
    let (count, _) = p.stat();
    let mut ids: Vec<String> = (1..=count)
        .map(|n| {
            p.ok(&format!("TOP {n} 0"));
            let head = String::from_utf8_lossy(&join_lines(p.multiline())).into_owned();
            head.split("Message-ID: <")
                .nth(1)
                .and_then(|r| r.split('>').next())
                .unwrap_or_else(|| panic!("{head}"))
                .to_string()
        })
        .collect();
    p.quit();
    ids.sort();
    ids
}

/// A second failure during a bucket copy: n3 becomes replica of n1's
/// buckets when n2 dies and copies them from n1, which is killed before
/// the copy is done. n3, promoted, lacks acknowledged mail that only n1's
/// (and n2's) disk holds. Its copy waits for one of them to come back
/// (`ringmail_cluster_bucket_copies_waiting`); when n1 restarts, n3 takes
/// what it lacks from it, passing over the accounts the first copy stored
/// whole, so a message expunged there meanwhile stays expunged; and n4,
/// which became n3's replica meanwhile and copied what n3 had then, is
/// asked to copy those buckets again (`XPULL`), so it holds all of it too.
#[test]
fn a_copy_cut_short_by_a_second_failure_waits_for_a_holder_to_come_back() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..60).map(|i| format!("w{i}@example.test")).collect();
    let ids = ["n1", "n2", "n3"];
    let mut nodes = mapped_cluster_with(&etcd, "w", &ids, &accounts, "copy_pause_ms = 300\n");
    let places = locate(&nodes[0], &accounts);
    let held: Vec<usize> = (0..accounts.len())
        .filter(|&k| places[k].0 == "n1" && places[k].1 == "n2")
        .take(8)
        .collect();
    assert!(held.len() >= 5, "{places:?}");
    // Four messages of 2 MiB per account: more than the socket buffers
    // between the nodes hold, so killing n1 cuts the copy short.
    let filler: String = (0..2 << 20)
        .map(|i| if i % 64 == 63 { '\n' } else { 'x' })
        .collect();
    let filler = filler.replace('\n', "\r\n");
    let id = |k: usize, j: usize| format!("w{k}-{j}@example.org");
    for &k in &held {
        for j in 0..4 {
            let m = format!(
                "From: <s@example.org>\r\nMessage-ID: <{}>\r\nSubject: {k} {j}\r\n\r\n{filler}",
                id(k, j)
            );
            smtp_send(
                nodes[0].smtp,
                "s@example.org",
                &[&accounts[k]],
                m.as_bytes(),
            );
        }
    }
    // n2 dies: n3 becomes the replica of those accounts and copies them.
    nodes[1].kill9();
    wait_failed_over(&nodes[0], 2, Duration::from_secs(15));
    assert!(held
        .iter()
        .all(|&k| replica_of(&nodes[0], &accounts[k]) == "n3"));
    // As soon as n3 holds one account whole, n1 dies too.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !held
        .iter()
        .any(|&k| local_inbox(&nodes[2], &accounts[k]) == 4)
    {
        assert!(Instant::now() < deadline, "{}", nodes[2].stderr_tail(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    nodes[0].kill9();
    wait_failed_over(&nodes[2], 1, Duration::from_secs(15));
    wait_logged(&[&nodes[2]], "copy_waiting", &[0]);
    // The wait outlives a restart of n3 (it is kept in the data
    // directory, with the accounts the cut copy stored whole): n3 still
    // lacks that mail.
    scrape_until(&nodes[2], |t| {
        metric_sum(t, "ringmail_cluster_bucket_copies_waiting", &[]) >= 1.0
    });
    let waits = logged(&nodes[2], "copy_waiting");
    nodes[2].kill9();
    nodes[2].restart();
    wait_logged(&[&nodes[2]], "copy_waiting", &[waits]);
    scrape_until(&nodes[2], |t| {
        metric_sum(t, "ringmail_cluster_bucket_copies_waiting", &[]) >= 1.0
    });
    let before: Vec<usize> = held
        .iter()
        .map(|&k| Pop3::login(nodes[2].pop3, &accounts[k], PASSWORD).stat().0)
        .collect();
    let whole = held[before.iter().position(|&n| n == 4).unwrap()];
    let lacking = held[before
        .iter()
        .position(|&n| n < 4)
        .unwrap_or_else(|| panic!("the copy was not cut short: {before:?}"))];
    // Meanwhile n3 serves: an expunge in an account it holds whole, a new
    // message for one it lacks.
    let mut p = Pop3::login(nodes[2].pop3, &accounts[whole], PASSWORD);
    p.ok("DELE 1");
    p.quit();
    let new =
        "From: <s@example.org>\r\nMessage-ID: <w-new@example.org>\r\nSubject: new\r\n\r\nnew\r\n";
    smtp_send(
        nodes[2].smtp,
        "s@example.org",
        &[&accounts[lacking]],
        new.as_bytes(),
    );

    // A fresh node joins and becomes the replica: it copies what n3 has
    // now, which lacks the older mail.
    nodes.push(join_paced(&etcd, "w", "n4", &accounts, 300));
    wait_status(&nodes[2], Duration::from_secs(10), |s| {
        s.contains("2 live node(s)")
    });
    let r = cluster_cmd(&nodes[2], &["rebalance"]);
    wait_map(&nodes[2..], &r);
    for &k in &held {
        assert_eq!(
            locate(&nodes[2], &[&accounts[k]])[0],
            ("n3".to_string(), "n4".to_string())
        );
    }
    wait_logged(&[&nodes[3]], "caught_up", &[0]);
    assert!(held
        .iter()
        .any(|&k| local_inbox(&nodes[3], &accounts[k]) < 4));

    // n1 comes back with its disk: n3's copy runs again and takes what it
    // lacks, then asks n4 to copy those buckets again.
    let copied = logged(&nodes[2], "bucket_copied");
    let requested = logged(&nodes[3], "copy_requested");
    let caught_up = logged(&nodes[3], "caught_up");
    nodes[0].restart();
    wait_logged(&[&nodes[2]], "bucket_copied", &[copied]);
    wait_logged(&[&nodes[2]], "replica_asked", &[0]);
    wait_logged(&[&nodes[3]], "copy_requested", &[requested]);
    wait_logged(&[&nodes[3]], "caught_up", &[caught_up]);
    scrape_until(&nodes[2], |t| {
        metric_sum(t, "ringmail_cluster_bucket_copies_waiting", &[]) == 0.0
    });
    let log = nodes[2].stderr_text();
    let line = log
        .lines()
        .rfind(|l| l.contains("event=\"bucket_copied\""))
        .unwrap();
    assert!(!line.contains("passed_over=0"), "{line}");
    let want = |k: usize| {
        let mut want: Vec<String> = (0..4).map(|j| id(k, j)).collect();
        if k == whole {
            want.remove(0);
        }
        if k == lacking {
            want.push("w-new@example.org".into());
        }
        want.sort();
        want
    };
    for &k in &held {
        let got = header_ids(nodes[2].pop3, &accounts[k]);
        assert_eq!(got, want(k), "{} (before: {before:?})", accounts[k]);
    }
    // n3 dies as well: n4, promoted, holds all of it.
    nodes[2].kill9();
    wait_failed_over(&nodes[3], 2, Duration::from_secs(15));
    for &k in &held {
        assert_eq!(primary_of(&nodes[3], &accounts[k]), "n4");
        let got = header_ids(nodes[3].pop3, &accounts[k]);
        assert_eq!(got, want(k), "{} on n4", accounts[k]);
    }
}

/// A replica that was away misses the changes made meanwhile (its
/// primary ran alone). When it is made replica again it copies the
/// bucket from the primary, and the copy brings what it held already to
/// the primary's state: flags set while it was away, messages expunged
/// meanwhile gone. So after the primary's kill -9 the promoted node shows
/// the account as the primary did, expunged mail not back.
#[test]
fn a_returning_replica_takes_the_changes_it_missed() {
    let Some(etcd) = etcd() else { return };
    let accounts: Vec<String> = (0..12).map(|i| format!("r{i}@example.test")).collect();
    // The hand-over timeout at its lowest: a copy expunges only messages
    // that arrived 15 s (10 s and a margin) or more before it.
    let mut nodes = mapped_cluster_with(
        &etcd,
        "rr",
        &["n1", "n2"],
        &accounts,
        "peer_timeout_ms = 10000\n",
    );
    let places = locate(&nodes[0], &accounts);
    let x = places
        .iter()
        .position(|(p, r)| p == "n1" && r == "n2")
        .expect("an account on n1 with its replica on n2");
    let account = &accounts[x];
    for i in 0..4 {
        let m = format!("Message-ID: <r{i}@example.org>\r\nSubject: r{i}\r\n\r\nbody {i}\r\n");
        smtp_send(nodes[0].smtp, "s@example.org", &[account], m.as_bytes());
    }
    let delivered = Instant::now();
    // n2 dies; n1 serves alone and the account changes.
    nodes[1].kill9();
    wait_failed_over(&nodes[0], 1, Duration::from_secs(15));
    python_code(&format!(
        r#"
import imaplib
m = imaplib.IMAP4("127.0.0.1", {port})
m.login("{account}", "{PASSWORD}")
def ok(r):
    assert r[0] == "OK", r
    return r
ok(m.select("INBOX"))
ok(m.store("1", "+FLAGS", r"(\Flagged $Work)"))
ok(m.store("2", "+FLAGS", r"(\Deleted)"))
ok(m.expunge())
ok(m.store("2", "+FLAGS", r"(\Seen)"))
m.logout()
"#,
        port = nodes[0].imap.port()
    ));
    let state = mailbox_state(nodes[0].imap, account);
    assert!(
        state.contains(
            "INBOX: <r0@example.org>[$Work \\Flagged] <r2@example.org>[\\Seen] <r3@example.org>[]"
        ),
        "{state}"
    );
    // n2 comes back with what it held, and is made replica again.
    nodes[1].restart();
    wait_status(&nodes[0], Duration::from_secs(15), |s| {
        s.contains("2 live node(s)")
    });
    if let Some(rest) = Duration::from_secs(17).checked_sub(delivered.elapsed()) {
        std::thread::sleep(rest);
    }
    let before = logged(&nodes[1], "caught_up");
    let r = cluster_cmd(&nodes[0], &["rebalance"]);
    wait_map(&nodes, &r);
    assert_eq!(replica_of(&nodes[0], account), "n2");
    wait_logged(&[&nodes[1]], "caught_up", &[before]);
    let log = nodes[1].stderr_text();
    assert!(
        log.lines()
            .any(|l| l.contains("event=\"bucket_copied\"") && !l.contains("expunged=0")),
        "{}",
        nodes[1].stderr_tail(30)
    );
    // n1 dies: n2, promoted, shows the account as n1 did.
    nodes[0].kill9();
    wait_failed_over(&nodes[1], 1, Duration::from_secs(15));
    assert_eq!(mailbox_state(nodes[1].imap, account), state);
}
