//! The data directory outlives the core count: mail delivered with
//! `--cores 2` is readable (and deletable) after a restart with `--cores 1`,
//! and again with `--cores 2`, including after a kill -9 in between.
use ringmail_tests::*;

fn message(account: &str, n: usize) -> Vec<u8> {
    format!("From: <cores@example.test>\r\nTo: <{account}>\r\nSubject: {account} #{n}\r\nMessage-ID: <cores-{n}-{account}>\r\n\r\nmessage {n} for {account}\r\n.\r\n")
        .into_bytes()
}

/// Every account's messages (bodies without trace headers), in maildrop order.
fn contents(server: &Server, accounts: &[String]) -> Vec<Vec<Vec<u8>>> {
    accounts
        .iter()
        .map(|a| {
            fetch_all(server.pop3, a, PASSWORD)
                .into_iter()
                .map(|(_, m)| strip_trace(&m).1.to_vec())
                .collect()
        })
        .collect()
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
    assert_eq!(contents(&server, &accounts), expect);

    server.terminate();
    server.restart_with_cores(1);
    assert_eq!(
        contents(&server, &accounts),
        expect,
        "after restarting with one core"
    );
    delete_first(&server, &accounts);
    deliver(&server, &accounts, 3);
    for (i, a) in accounts.iter().enumerate() {
        expect[i].remove(0);
        expect[i].push(message(a, 3));
    }
    assert_eq!(
        contents(&server, &accounts),
        expect,
        "one core: after DELE and new mail"
    );

    // Crash on one core, come back on two.
    server.kill9();
    server.restart_with_cores(2);
    assert_eq!(
        contents(&server, &accounts),
        expect,
        "two cores after kill -9 on one core"
    );
    delete_first(&server, &accounts);
    deliver(&server, &accounts, 4);
    for (i, a) in accounts.iter().enumerate() {
        expect[i].remove(0);
        expect[i].push(message(a, 4));
    }
    assert_eq!(
        contents(&server, &accounts),
        expect,
        "two cores: after DELE and new mail"
    );

    server.terminate();
    server.restart_with_cores(1);
    assert_eq!(contents(&server, &accounts), expect, "one core again");
    server.terminate();
    server.restart_with_cores(2);
    assert_eq!(contents(&server, &accounts), expect, "two cores again");
    server.terminate();
}
