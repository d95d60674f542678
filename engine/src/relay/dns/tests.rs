//! Resolver tests against the in-test responder on 127.0.0.1.
use std::collections::HashSet;

use futures::executor::block_on;

use super::*;
use crate::relay::testdns::{QType, TestDns, TestZone};

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn start(zone: TestZone) -> (TestDns, DnsResolver) {
    start_with(zone, |_| {})
}

fn start_with(zone: TestZone, tweak: impl FnOnce(&mut DnsConfig)) -> (TestDns, DnsResolver) {
    let (addr, dns) = TestDns::start(zone);
    let mut config = DnsConfig {
        nameservers: vec![addr],
        timeout: Duration::from_millis(300),
        attempts: 1,
        ..DnsConfig::default()
    };
    tweak(&mut config);
    (dns, DnsResolver::start(config).unwrap())
}

fn names(r: &MxResult) -> Vec<(u16, String)> {
    r.hosts()
        .unwrap()
        .iter()
        .map(|h| (h.preference, h.name.clone()))
        .collect()
}

fn example_zone() -> TestZone {
    let mut z = TestZone::new();
    z.mx(
        "example.test",
        &[
            (20, "mx3.example.test"),
            (10, "mx1.example.test"),
            (10, "mx2.example.test"),
            (5, "mx0.example.test"),
        ],
    );
    z.a("mx0.example.test", &[v4("127.0.0.10")]);
    z.a("mx1.example.test", &[v4("127.0.0.11"), v4("127.0.0.12")]);
    z.aaaa("mx1.example.test", &["::1".parse().unwrap()]);
    z.a("mx2.example.test", &[v4("127.0.0.13")]);
    z.a("mx3.example.test", &[v4("127.0.0.14")]);
    z.a("implicit.test", &[v4("127.0.0.20")]);
    z.mx("null.test", &[(0, ".")]);
    z.nxdomain("gone.test");
    z.empty("bare.test");
    z.mx("dangling.test", &[(10, "nowhere.test")]);
    z.servfail("broken.test");
    z.silent("slow.test");
    z.mx(
        "half.test",
        &[(10, "bad.half.test"), (20, "good.half.test")],
    );
    z.servfail("bad.half.test");
    z.a("good.half.test", &[v4("127.0.0.30")]);
    z
}

#[test]
fn mx_hosts_ordered_by_preference_with_addresses() {
    let (dns, r) = start(example_zone());
    let res = block_on(r.resolve("Example.TEST."));
    let hosts = res.hosts().unwrap();
    let prefs: Vec<u16> = hosts.iter().map(|h| h.preference).collect();
    assert_eq!(prefs, [5, 10, 10, 20]);
    assert_eq!(
        hosts[0],
        MxHost {
            preference: 5,
            name: "mx0.example.test".into(),
            addrs: vec!["127.0.0.10".parse().unwrap()]
        }
    );
    let mx1 = hosts.iter().find(|h| h.name == "mx1.example.test").unwrap();
    // IPv4 first, then IPv6.
    let expect: Vec<IpAddr> = vec![
        "127.0.0.11".parse().unwrap(),
        "127.0.0.12".parse().unwrap(),
        "::1".parse().unwrap(),
    ];
    assert_eq!(mx1.addrs, expect);
    assert_eq!(hosts[3].name, "mx3.example.test");
    assert_eq!(dns.count("example.test", QType::Mx), 1);
    // One A and one AAAA per exchanger, in the same batch.
    assert_eq!(dns.count_type(QType::A), 4);
    assert_eq!(dns.count_type(QType::Aaaa), 4);
    let s = r.stats();
    assert_eq!((s.mx_queries, s.a_queries, s.aaaa_queries), (1, 4, 4));
}

#[test]
fn equal_preferences_are_randomized() {
    let (_dns, r) = start(example_zone());
    let mut seen = HashSet::new();
    // From the cache, so the loop costs no queries; 2^-63 chance of a false failure.
    for _ in 0..64 {
        let res = block_on(r.resolve("example.test"));
        let n = names(&res);
        assert_eq!(n[0].1, "mx0.example.test");
        assert_eq!(n[3].1, "mx3.example.test");
        seen.insert(n[1].1.clone());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen.len(),
        2,
        "both mx1 and mx2 should come first sometimes"
    );
    assert_eq!(r.stats().mx_queries, 1);
}

#[test]
fn implicit_mx_null_mx_and_permanent_failures() {
    let (_dns, r) = start(example_zone());
    let domains = [
        "implicit.test",
        "null.test",
        "gone.test",
        "bare.test",
        "dangling.test",
        "half.test",
    ];
    let out = block_on(r.resolve_many(domains.iter().map(|s| s.to_string()).collect()));
    let got: Vec<&str> = out.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(got, domains);
    assert_eq!(
        out[0].1,
        MxResult::Ok(vec![MxHost {
            preference: 0,
            name: "implicit.test".into(),
            addrs: vec!["127.0.0.20".parse().unwrap()]
        }])
    );
    assert_eq!(out[1].1, MxResult::NullMx);
    assert!(out[1].1.is_permanent());
    assert!(
        matches!(&out[2].1, MxResult::Permanent(r) if r.contains("NXDOMAIN")),
        "{:?}",
        out[2].1
    );
    assert!(
        matches!(&out[3].1, MxResult::Permanent(r) if r.contains("no MX and no address")),
        "{:?}",
        out[3].1
    );
    assert!(
        matches!(&out[4].1, MxResult::Permanent(r) if r.contains("no address")),
        "{:?}",
        out[4].1
    );
    // One exchanger failing temporarily: the other is still usable.
    assert_eq!(names(&out[5].1), [(20, "good.half.test".to_string())]);
}

#[test]
fn servfail_and_timeout_are_temporary() {
    let (dns, r) = start(example_zone());
    let t0 = Instant::now();
    let out = block_on(r.resolve_many(vec!["broken.test".into(), "slow.test".into()]));
    assert!(
        matches!(&out[0].1, MxResult::Temporary(_)),
        "{:?}",
        out[0].1
    );
    assert!(
        matches!(&out[1].1, MxResult::Temporary(_)),
        "{:?}",
        out[1].1
    );
    assert!(!out[1].1.is_permanent());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "timeout honoured: {:?}",
        t0.elapsed()
    );
    // Temporary failures are not cached: asking again queries again.
    let before = dns.count("broken.test", QType::Mx);
    assert!(matches!(
        block_on(r.resolve("broken.test")),
        MxResult::Temporary(_)
    ));
    assert!(dns.count("broken.test", QType::Mx) > before);
}

#[test]
fn literals_bypass_dns() {
    let (dns, r) = start(example_zone());
    let out = block_on(r.resolve_many(vec![
        "[127.0.0.1]".into(),
        "[IPv6:::1]".into(),
        "[ipv6:2001:db8::1]".into(),
        "[999.1.1.1]".into(),
        "[127.0.0.1".into(),
        "".into(),
        "a..b".into(),
    ]));
    assert_eq!(
        out[0].1.hosts().unwrap()[0].addrs,
        vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(out[0].1.hosts().unwrap()[0].name, "[127.0.0.1]");
    assert_eq!(
        out[1].1.hosts().unwrap()[0].addrs,
        vec!["::1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        out[2].1.hosts().unwrap()[0].addrs,
        vec!["2001:db8::1".parse::<IpAddr>().unwrap()]
    );
    for (d, res) in &out[3..] {
        assert!(matches!(res, MxResult::Permanent(_)), "{d}: {res:?}");
    }
    assert_eq!(dns.total(), 0);
    assert_eq!(r.stats().domains_requested, 0);
}

#[test]
fn positive_and_negative_answers_are_cached() {
    let (dns, r) = start(example_zone());
    let first = block_on(r.resolve_many(vec![
        "example.test".into(),
        "gone.test".into(),
        "implicit.test".into(),
    ]));
    let sent = dns.total();
    let s1 = r.stats();
    assert_eq!(s1.queries(), sent);
    let second = block_on(r.resolve_many(vec![
        "example.test".into(),
        "gone.test".into(),
        "implicit.test".into(),
    ]));
    assert_eq!(dns.total(), sent, "second resolve sends no query");
    let s2 = r.stats();
    assert_eq!(s2.queries(), s1.queries());
    assert!(s2.cache_hits >= 3 + 8, "{s2:?}");
    assert_eq!(first[1].1, second[1].1);
    assert_eq!(first[2].1, second[2].1);
}

#[test]
fn cache_lifetimes_are_capped() {
    let (dns, r) = start_with(example_zone(), |c| {
        c.negative_ttl_max = Duration::from_millis(150);
        c.positive_ttl_max = Duration::from_millis(150);
    });
    block_on(r.resolve_many(vec!["gone.test".into(), "implicit.test".into()]));
    block_on(r.resolve_many(vec!["gone.test".into(), "implicit.test".into()]));
    assert_eq!(dns.count("gone.test", QType::Mx), 1);
    assert_eq!(dns.count("implicit.test", QType::A), 1);
    std::thread::sleep(Duration::from_millis(250));
    block_on(r.resolve_many(vec!["gone.test".into(), "implicit.test".into()]));
    assert_eq!(dns.count("gone.test", QType::Mx), 2);
    assert_eq!(dns.count("implicit.test", QType::A), 2);
}

#[test]
fn concurrent_resolves_of_one_domain_send_one_query() {
    let mut zone = example_zone();
    // Slow enough that all 50 requests arrive while the first is in flight.
    zone.delay("example.test", Duration::from_millis(150));
    let (dns, r) = start(zone);
    let all = block_on(future::join_all((0..50).map(|_| r.resolve("example.test"))));
    assert!(all
        .iter()
        .all(|res| res.hosts().map(|h| h.len()) == Some(4)));
    assert_eq!(dns.count("example.test", QType::Mx), 1);
    assert_eq!(r.stats().mx_queries, 1);
    assert!(r.stats().coalesced >= 49, "{:?}", r.stats());
}

#[test]
fn thousand_messages_to_hundred_domains_need_hundred_mx_queries() {
    let mut zone = TestZone::new();
    for i in 0..100 {
        zone.mx(
            &format!("d{i}.test"),
            &[(10, &format!("mx.d{i}.test")), (20, "backup.provider.test")],
        );
        zone.a(
            &format!("mx.d{i}.test"),
            &[Ipv4Addr::new(127, 1, 0, i as u8)],
        );
    }
    zone.a("backup.provider.test", &[v4("127.0.0.99")]);
    let (dns, r) = start(zone);
    // Ten "executors", each with 100 messages spread over the 100 domains.
    let t0 = Instant::now();
    let batches: Vec<Vec<String>> = (0..10)
        .map(|b| {
            (0..100)
                .map(|m| format!("d{}.test", (m * 7 + b * 13) % 100))
                .collect()
        })
        .collect();
    let threads: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let r = r.clone();
            std::thread::spawn(move || block_on(r.resolve_many(batch)))
        })
        .collect();
    for t in threads {
        let out = t.join().unwrap();
        assert_eq!(out.len(), 100);
        for (d, res) in out {
            let hosts = res.hosts().unwrap_or_else(|| panic!("{d}: {res:?}"));
            assert_eq!(hosts.len(), 2);
            assert_eq!(hosts[0].name, format!("mx.{d}"));
        }
    }
    let elapsed = t0.elapsed();
    let s = r.stats();
    eprintln!(
        "1000 messages / 100 domains: {elapsed:?}, {s:?}, server saw {}",
        dns.total()
    );
    assert_eq!(s.mx_queries, 100);
    assert_eq!(dns.count_type(QType::Mx), 100);
    // 100 own exchangers + 1 shared backup, A and AAAA each.
    assert_eq!(s.a_queries, 101);
    assert_eq!(s.aaaa_queries, 101);
    assert_eq!(s.domains_requested, 1000);
    assert!(s.batches <= 20, "{s:?}");
}

#[test]
fn usable_from_a_glommio_executor() {
    let (_dns, r) = start(example_zone());
    let out = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { r.resolve("implicit.test").await })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        out.hosts().unwrap()[0].addrs,
        vec!["127.0.0.20".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn resolver_thread_stops_with_last_handle() {
    let (_dns, r) = start(example_zone());
    let r2 = r.clone();
    drop(r);
    assert!(block_on(r2.resolve("implicit.test")).hosts().is_some());
}

#[test]
fn cache_evicts_when_full() {
    let mut c = Cache {
        map: HashMap::new(),
        max: 16,
    };
    let now = Instant::now();
    for i in 0..100u64 {
        let until = now + Duration::from_secs(10 + i);
        c.insert((format!("n{i}"), RecordType::A), Answer::NoData, until, now);
        assert!(c.map.len() <= 16);
    }
    // The most recent (longest-lived) entry survives; an expired one is gone.
    assert!(c.get(&("n99".into(), RecordType::A), now).is_some());
    c.insert(
        ("old".into(), RecordType::A),
        Answer::NxDomain,
        now + Duration::from_millis(1),
        now,
    );
    assert!(c
        .get(&("old".into(), RecordType::A), now + Duration::from_secs(1))
        .is_none());
    let mut off = Cache {
        map: HashMap::new(),
        max: 0,
    };
    off.insert(
        ("x".into(), RecordType::A),
        Answer::NoData,
        now + Duration::from_secs(5),
        now,
    );
    assert!(off.map.is_empty());
}

#[test]
fn test_zone_serves_txt_and_ptr() {
    let mut zone = TestZone::new();
    let long = format!("v=DKIM1; k=rsa; p={}", "A".repeat(400));
    zone.txt("example.test", &["v=spf1 ip4:127.0.0.1 -all"]);
    zone.txt("sel._domainkey.example.test", &[&long]);
    zone.ptr("1.0.0.127.in-addr.arpa", &["mx.example.test"]);
    let (addr, dns) = TestDns::start(zone);
    let config = DnsConfig {
        nameservers: vec![addr],
        timeout: Duration::from_millis(300),
        attempts: 1,
        ..DnsConfig::default()
    };
    let resolver = build_resolver(&config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spf = resolver.txt_lookup("example.test.").await.unwrap();
        let spf: Vec<String> = spf
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(t.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(spf, vec!["v=spf1 ip4:127.0.0.1 -all".to_string()]);
        // A record over 255 octets comes back as one record of several strings.
        let dkim = resolver
            .txt_lookup("sel._domainkey.example.test.")
            .await
            .unwrap();
        let parts: Vec<usize> = dkim
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(t.txt_data.len()),
                _ => None,
            })
            .collect();
        assert_eq!(parts, vec![2]);
        let ptr = resolver
            .reverse_lookup("127.0.0.1".parse::<IpAddr>().unwrap())
            .await
            .unwrap();
        assert_eq!(ptr.answers().len(), 1);
    });
    assert_eq!(dns.count("example.test", QType::Txt), 1);
}
