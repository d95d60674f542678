//! The data directory outlives the core count: mail delivered with
//! `--cores 2` is readable (and deletable) after a restart with `--cores 1`,
//! and again with `--cores 2`, including after a kill -9 in between.
use ringmail_tests::*;

fn message(account: &str, n: usize) -> Vec<u8> {
    format!("From: <cores@example.test>\r\nTo: <{account}>\r\nSubject: {account} #{n}\r\nMessage-ID: <cores-{n}-{account}>\r\n\r\nmessage {n} for {account}\r\n.\r\n")
        .into_bytes()
}

/// Every account's messages as (UIDL, body without trace headers), in maildrop order.
type Mail = Vec<Vec<(String, Vec<u8>)>>;

fn contents(server: &Server, accounts: &[String]) -> Mail {
    accounts
        .iter()
        .map(|a| {
            fetch_all(server.pop3, a, PASSWORD)
                .into_iter()
                .map(|(u, m)| (u, strip_trace(&m).1.to_vec()))
                .collect()
        })
        .collect()
}

/// Compare the bodies with `want`, readably; return the UIDLs.
#[track_caller]
fn check(got: &Mail, want: &[Vec<Vec<u8>>], accounts: &[String], what: &str) -> Vec<Vec<String>> {
    for (i, a) in accounts.iter().enumerate() {
        assert_eq!(got[i].len(), want[i].len(), "{what}: {a} message count");
        for (n, ((uidl, body), w)) in got[i].iter().zip(&want[i]).enumerate() {
            assert_bytes_eq(
                body,
                w,
                &format!("{what}: {a} message {} (UIDL {uidl})", n + 1),
            );
        }
    }
    got.iter()
        .map(|m| m.iter().map(|(u, _)| u.clone()).collect())
        .collect()
}

/// UIDLs must survive restarts (RFC 1939 7: unique-ids persist across sessions).
#[track_caller]
fn check_same_uidls(before: &[Vec<String>], after: &[Vec<String>], what: &str) {
    assert_eq!(before, after, "{what}: UIDLs changed");
}

fn deliver(server: &Server, accounts: &[String], n: usize) {
    let (mut c, _) = smtp_connect(server.smtp);
    for a in accounts {
        smtp_transaction(
            &mut c,
            "cores@example.test",
            &[a],
            &message(a, n),
            Transfer::Data,
        )
        .unwrap()
        .expect(250, None);
    }
    c.cmd("QUIT").expect(221, None);
}

/// DELE message 1 of every account, QUIT.
fn delete_first(server: &Server, accounts: &[String]) {
    for a in accounts {
        let mut p = Pop3::login(server.pop3, a, PASSWORD);
        p.ok("DELE 1");
        p.quit();
    }
}

#[test]
fn restart_with_other_core_counts() {
    let accounts = accounts_on_all_shards("cores", 10, 2, 3);
    let mut server = Server::options().accounts(&accounts).start();
    for n in 0..3 {
        deliver(&server, &accounts, n);
    }
    let mut expect: Vec<Vec<Vec<u8>>> = accounts
        .iter()
        .map(|a| (0..3).map(|n| message(a, n)).collect())
        .collect();
    let ids = check(
        &contents(&server, &accounts),
        &expect,
        &accounts,
        "two cores",
    );

    server.terminate();
    server.restart_with_cores(1);
    let after = check(
        &contents(&server, &accounts),
        &expect,
        &accounts,
        "one core",
    );
    check_same_uidls(&ids, &after, "2 -> 1 cores");
    delete_first(&server, &accounts);
    deliver(&server, &accounts, 3);
    for (i, a) in accounts.iter().enumerate() {
        expect[i].remove(0);
        expect[i].push(message(a, 3));
    }
    let ids = check(
        &contents(&server, &accounts),
        &expect,
        &accounts,
        "one core, after DELE and new mail",
    );
    for (before, now) in after.iter().zip(&ids) {
        assert_eq!(
            before[1..],
            now[..2],
            "UIDLs of the remaining messages changed"
        );
        assert!(!before.contains(&now[2]), "a UIDL was reused");
    }

    // Crash on one core, come back on two.
    server.kill9();
    server.restart_with_cores(2);
    let after = check(
        &contents(&server, &accounts),
        &expect,
        &accounts,
        "two cores after kill -9 on one",
    );
    check_same_uidls(&ids, &after, "kill -9 on 1 core -> 2 cores");
    delete_first(&server, &accounts);
    deliver(&server, &accounts, 4);
    for (i, a) in accounts.iter().enumerate() {
        expect[i].remove(0);
        expect[i].push(message(a, 4));
    }
    let ids = check(
        &contents(&server, &accounts),
        &expect,
        &accounts,
        "two cores, after DELE and new mail",
    );

    server.terminate();
    server.restart_with_cores(1);
    let after = check(
        &contents(&server, &accounts),
        &expect,
        &accounts,
        "one core again",
    );
    check_same_uidls(&ids, &after, "2 -> 1 cores again");
    server.terminate();
    server.restart_with_cores(2);
    let after = check(
        &contents(&server, &accounts),
        &expect,
        &accounts,
        "two cores again",
    );
    check_same_uidls(&ids, &after, "1 -> 2 cores again");
    server.terminate();
}

/// Pin the calling thread to one CPU.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pinning to CPU {cpu}"
        );
    }
}

/// With `cpu_steering = true`, a client on CPU c is served by the executor
/// pinned to CPU c. The 250 after DATA names the queue id, whose first byte
/// is the shard that received the message.
#[test]
fn connections_are_steered_to_the_executor_on_their_cpu() {
    if std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        < 2
    {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let server = Server::options()
        .config("cpu_steering = true\n")
        .accounts(&["steer@example.test"])
        .start();
    // "connections steered to the executor on their CPU cpus=Some([0, 1])"
    // Logged before the ready line, but stderr is read by another thread.
    let line = wait_for(std::time::Duration::from_secs(10), || {
        server
            .stderr_text()
            .lines()
            .find(|l| l.contains("connections steered"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no steering line in:\n{}", server.stderr_text()));
    let list = line
        .split("cpus=Some([")
        .nth(1)
        .and_then(|r| r.split("])").next())
        .expect("cpu list");
    let cpus: Vec<usize> = list.split(", ").map(|c| c.parse().unwrap()).collect();
    assert_eq!(cpus.len(), 2);
    for round in 0..3 {
        for (shard, cpu) in cpus.iter().enumerate() {
            let (addr, cpu) = (server.smtp, *cpu);
            let reply = std::thread::spawn(move || {
                pin_to(cpu);
                let (mut c, _) = smtp_connect(addr);
                let r = smtp_transaction(
                    &mut c,
                    "s@example.test",
                    &["steer@example.test"],
                    &message("steer@example.test", round),
                    Transfer::Data,
                )
                .unwrap();
                c.cmd("QUIT").expect(221, None);
                r.text()
            })
            .join()
            .unwrap();
            let id = reply.rsplit(' ').next().unwrap();
            assert_eq!(
                &id[..2],
                format!("{shard:02X}"),
                "client on CPU {cpu}: {reply}"
            );
        }
    }
}
