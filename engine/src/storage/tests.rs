//! Store tests on a real data directory, inside one glommio executor each.
use std::path::Path;
use std::rc::Rc;

use super::*;

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::default()
        .io_memory(256 * 1024)
        .spawn(move || async move { f().await })
        .unwrap()
        .join()
        .unwrap();
}

fn open(dir: &Path, shard: usize, shards: usize, every: u64) -> Rc<Store> {
    open_with(dir, shard, shards, every, |_| {})
}

/// A store with the default storage settings and 4 MiB segments, changed by `tune`.
fn open_with(
    dir: &Path,
    shard: usize,
    shards: usize,
    every: u64,
    tune: impl FnOnce(&mut StoreConfig),
) -> Rc<Store> {
    let meta = Meta::start_run(dir, 16).unwrap();
    let defaults = crate::config::Storage::default();
    let mut cfg = StoreConfig {
        data_dir: dir.into(),
        shard,
        shards,
        meta,
        segment_size: 4 * 1024 * 1024,
        checkpoint_every_records: every,
        zero_segments: defaults.zero_segments,
        append_through_map: defaults.append_through_map,
        sync_inline_max_us: defaults.sync_inline_max_us,
    };
    tune(&mut cfg);
    let store = Store::open(cfg).unwrap();
    glommio::spawn_local(store.clone().run_syncer()).detach();
    store
}

fn inbox(store: &Store, account: &str) -> Vec<(u32, Vec<u8>)> {
    store
        .with_account(account, |a| {
            a.mailbox(index::INBOX).unwrap().messages.clone()
        })
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.uid, store.body(m.loc).unwrap().bytes().to_vec()))
        .collect()
}

fn msg(i: usize) -> Vec<u8> {
    format!("Subject: {i}\r\n\r\nbody {i}\r\n.leading dot\r\n").into_bytes()
}

#[test]
fn messages_survive_reopen_and_expunge_persists() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let s = open(&d, 0, 1, 1_000_000);
        for i in 0..50 {
            let uids = s
                .deliver(
                    &["a@x".into(), "b@x".into()],
                    b"Return-Path: <s@y>\r\n",
                    &msg(i),
                    1000 + i as i64,
                )
                .await
                .unwrap();
            assert_eq!(uids, vec![i as u32 + 1, i as u32 + 1]);
        }
        s.expunge("a@x", index::INBOX, vec![1, 2, 3]).await.unwrap();
        assert_eq!(inbox(&s, "a@x").len(), 47);
        // No clean shutdown: the next open recovers from the log alone.
        let s2 = open(&d, 0, 1, 1_000_000);
        let a = inbox(&s2, "a@x");
        assert_eq!(a.len(), 47);
        assert_eq!(a[0].0, 4);
        let mut want = b"Return-Path: <s@y>\r\n".to_vec();
        want.extend_from_slice(&msg(3));
        assert_eq!(a[0].1, want);
        assert_eq!(inbox(&s2, "b@x").len(), 50);
        // UIDs keep ascending after recovery (RFC 3501 2.3.1.1).
        let uids = s2.deliver(&["a@x".into()], b"", b"x\r\n", 0).await.unwrap();
        assert_eq!(uids, vec![51]);
    });
}

#[test]
fn torn_tail_is_cut_and_earlier_messages_survive() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let s = open(&d, 0, 1, 1_000_000);
        for i in 0..10 {
            s.deliver(&["a@x".into()], b"", &msg(i), 0).await.unwrap();
        }
        let last = s
            .with_account("a@x", |a| {
                a.mailbox(0).unwrap().messages.last().unwrap().loc
            })
            .unwrap();
        drop(s);
        // Tear the last record: flip one byte of its body on disk.
        let path = d.join("segments").join(segment::file_name(last.seg));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[last.offset as usize + 2] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let s2 = open(&d, 0, 1, 1_000_000);
        let a = inbox(&s2, "a@x");
        assert_eq!(a.len(), 9);
        assert_eq!(a[8].1, msg(8));
    });
}

#[test]
fn checkpoints_then_replay_and_a_new_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let accounts: Vec<String> = (0..40).map(|i| format!("u{i}@x")).collect();
        {
            let s = open(&d, 0, 1, 7);
            for i in 0..30 {
                s.deliver(&accounts[i % 40..i % 40 + 1], b"", &msg(i), 0)
                    .await
                    .unwrap();
                s.deliver(&[accounts[(i * 7) % 40].clone()], b"", &msg(i + 100), 0)
                    .await
                    .unwrap();
            }
            s.expunge(&accounts[0], 0, vec![1]).await.unwrap();
            s.checkpoint_all().await.unwrap();
            // More after the checkpoint: recovered by replay.
            for i in 0..5 {
                s.deliver(&[accounts[1].clone()], b"", &msg(i + 200), 0)
                    .await
                    .unwrap();
            }
            assert!(s.stats.checkpoints.get() > 0);
        }
        let before: Vec<Vec<(u32, Vec<u8>)>> = {
            let s = open(&d, 0, 1, 7);
            accounts.iter().map(|a| inbox(&s, a)).collect()
        };
        assert_eq!(
            before[1].len(),
            1 + 5 + usize::from((0..30).any(|i| (i * 7) % 40 == 1))
        );
        // Same data, two shards: each account appears on exactly its owner, unchanged.
        let s0 = open(&d, 0, 2, 7);
        let s1 = open(&d, 1, 2, 7);
        for (i, a) in accounts.iter().enumerate() {
            let (owner, other) = if s0.owns(a) { (&s0, &s1) } else { (&s1, &s0) };
            assert_eq!(inbox(owner, a), before[i], "{a}");
            assert!(other.with_account(a, |_| ()).is_none());
        }
        // The new owner keeps writing: UIDs continue.
        let a = &accounts[1];
        let owner = if s0.owns(a) { &s0 } else { &s1 };
        let next = before[1].last().unwrap().0 + 1;
        assert_eq!(
            owner
                .deliver(std::slice::from_ref(a), b"", b"z\r\n", 0)
                .await
                .unwrap(),
            vec![next]
        );
    });
}

#[test]
fn compaction_moves_live_bodies_and_frees_segments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let s = open(&d, 0, 1, 1_000_000);
        let big = |i: usize| {
            let mut m = msg(i);
            m.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, 100_000));
            m.extend_from_slice(b"\r\n");
            m
        };
        for i in 0..100 {
            s.deliver(&["a@x".into()], b"", &big(i), 0).await.unwrap();
        }
        let keep: Vec<u32> = (1..=100).filter(|u| u % 10 == 0).collect();
        let gone: Vec<u32> = (1..=100).filter(|u| u % 10 != 0).collect();
        s.expunge("a@x", 0, gone).await.unwrap();
        let victims = compaction_victims(&[s.segment_usage()], 50);
        assert!(victims.len() >= 2, "{victims:?}");
        let before = inbox(&s, "a@x");
        let set = victims.iter().copied().collect();
        s.evacuate(&set).await.unwrap();
        for v in &victims {
            std::fs::remove_file(d.join("segments").join(segment::file_name(*v))).unwrap();
        }
        // Same mail, now served from the new segment.
        assert_eq!(inbox(&s, "a@x"), before);
        assert!(s
            .with_account("a@x", |a| a
                .mailbox(0)
                .unwrap()
                .messages
                .iter()
                .all(|m| !victims.contains(&m.loc.seg)))
            .unwrap());
        drop(s);
        let s2 = open(&d, 0, 1, 1_000_000);
        let after = inbox(&s2, "a@x");
        assert_eq!(after.iter().map(|m| m.0).collect::<Vec<_>>(), keep);
        assert_eq!(after, before);
        assert_eq!(after[0].1, big(9));
    });
}

#[test]
fn relay_queue_state_survives_checkpoint_and_replay() {
    use crate::relay::queue;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let s = open(&d, 0, 1, 3);
        let q = queue::queue_account_name(0);
        let mut uids = Vec::new();
        for i in 0..4 {
            uids.push(
                queue::enqueue(
                    &s,
                    &q,
                    &msg(i),
                    100 + i as i64,
                    0,
                    "s@a.test",
                    &["x@b.test", "y@c.test"],
                )
                .await
                .unwrap(),
            );
        }
        assert_eq!(uids, [1, 2, 3, 4]);
        s.commit(&[Op::QueueState {
            account: &q,
            uid: 2,
            rcpt: 1,
            state: index::queue_state::DEFERRED,
            attempts: 1,
            next_attempt: 999,
            last_reply: "451 later",
        }])
        .await
        .unwrap();
        s.expunge(&q, index::INBOX, vec![1]).await.unwrap();
        // Checkpoints were written along the way (every 3 records); no clean
        // shutdown: reopen from checkpoint plus log.
        let s2 = open(&d, 0, 1, 3);
        assert_eq!(
            s2.accounts_with_prefix(queue::QUEUE_PREFIX),
            vec![q.clone()]
        );
        let (queue_uids, r) = s2
            .with_account(&q, |a| {
                (
                    a.queue.iter().map(|m| m.uid).collect::<Vec<_>>(),
                    a.queued(2).unwrap().recipients[1].clone(),
                )
            })
            .unwrap();
        assert_eq!(queue_uids, [2, 3, 4]);
        assert_eq!(
            (r.state, r.attempts, r.next_attempt, r.last_reply.as_str()),
            (index::queue_state::DEFERRED, 1, 999, "451 later")
        );
        assert_eq!(
            inbox(&s2, &q).iter().map(|m| m.0).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(inbox(&s2, &q)[0].1, msg(1));
        s2.checkpoint_all().await.unwrap();
        let s3 = open(&d, 0, 1, 3);
        assert_eq!(s3.with_account(&q, |a| a.queue.len()), Some(3));
        assert!(s3.with_account(&q, queue::orphans).unwrap().is_empty());
    });
}

#[test]
fn both_append_modes_store_and_recover_the_same_bytes() {
    for through_map in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        run(move || async move {
            // The memcpy variant also covers the other non-default paths: no
            // zero-filling, every sync through io_uring.
            let tune = move |c: &mut StoreConfig| {
                c.append_through_map = through_map;
                if through_map {
                    c.zero_segments = false;
                    c.sync_inline_max_us = 0;
                }
            };
            let s = open_with(&d, 0, 1, 1_000_000, tune);
            let mut want = Vec::new();
            for i in 0..30 {
                // Bodies of many sizes, so records straddle pages.
                let mut m = msg(i);
                m.extend(std::iter::repeat_n(b'x', i * 997));
                s.deliver(&["a@x".into()], b"Return-Path: <s@y>\r\n", &m, 0)
                    .await
                    .unwrap();
                let mut full = b"Return-Path: <s@y>\r\n".to_vec();
                full.extend_from_slice(&m);
                want.push(full);
            }
            let live: Vec<Vec<u8>> = inbox(&s, "a@x").into_iter().map(|m| m.1).collect();
            assert_eq!(live, want, "through_map={through_map}: served bytes");
            drop(s);
            let s2 = open_with(&d, 0, 1, 1_000_000, tune);
            let recovered: Vec<Vec<u8>> = inbox(&s2, "a@x").into_iter().map(|m| m.1).collect();
            assert_eq!(
                recovered, want,
                "through_map={through_map}: recovered bytes"
            );
        });
    }
}

#[test]
fn staged_small_records_and_large_records_interleave_in_one_commit() {
    // Many concurrent deliveries land in one group commit: small records are
    // staged (beyond the staging cap they are flushed early), large ones are
    // written at once together with what was staged before them.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let s = open(&d, 0, 1, 1_000_000);
        let bodies: Vec<Vec<u8>> = (0..120)
            .map(|i| {
                let mut m = msg(i);
                let extra = match i % 10 {
                    0 => 100 * 1024, // beyond the staging limit
                    3 => 60 * 1024,
                    _ => i * 131,
                };
                m.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, extra));
                m
            })
            .collect();
        let futs = bodies.iter().enumerate().map(|(i, b)| {
            let s = s.clone();
            let account = format!("u{}@x", i % 7);
            async move { s.deliver(&[account], b"", b, 0).await.unwrap() }
        });
        futures::future::join_all(futs).await;
        let check = |s: &Store| {
            let mut got: Vec<Vec<u8>> = (0..7)
                .flat_map(|a| inbox(s, &format!("u{a}@x")))
                .map(|m| m.1)
                .collect();
            let mut want = bodies.clone();
            got.sort();
            want.sort();
            assert_eq!(got, want);
        };
        check(&s);
        assert!(s.stats.syncs.get() < 120, "deliveries shared group commits");
        drop(s);
        let s2 = open(&d, 0, 1, 1_000_000);
        check(&s2);
    });
}

#[test]
fn staged_records_survive_segment_rolls() {
    // 4 MiB segments: 300 staged 40 KiB messages roll the log several times;
    // each retired segment writes what it staged before the sync covers it.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let s = open(&d, 0, 1, 1_000_000);
        let bodies: Vec<Vec<u8>> = (0..300)
            .map(|i| vec![b'a' + (i % 26) as u8; 40 * 1024 + i])
            .collect();
        for chunk in bodies.chunks(10) {
            let futs = chunk.iter().map(|b| {
                let s = s.clone();
                async move { s.deliver(&["roll@x".into()], b"", b, 0).await.unwrap() }
            });
            futures::future::join_all(futs).await;
        }
        // Deliveries racing a roll may take UIDs out of call order: compare as sets.
        let mut want = bodies.clone();
        want.sort();
        let sorted = |mut v: Vec<Vec<u8>>| {
            v.sort();
            v
        };
        let got: Vec<Vec<u8>> = inbox(&s, "roll@x").into_iter().map(|m| m.1).collect();
        assert_eq!(sorted(got), want);
        assert!(s.segment_usage().len() >= 3, "the log rolled");
        drop(s);
        let s2 = open(&d, 0, 1, 1_000_000);
        let got: Vec<Vec<u8>> = inbox(&s2, "roll@x").into_iter().map(|m| m.1).collect();
        assert_eq!(sorted(got), want);
    });
}

#[test]
fn zero_filling_ahead_never_touches_records() {
    for through_map in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("segments");
        std::fs::create_dir_all(&d).unwrap();
        run(move || async move {
            let seg = segment::Segment::create(&d, 1, 8 << 20, true, through_map)
                .await
                .unwrap();
            assert!(
                seg.zeroed_to() > segment::ZERO_CHUNK,
                "the first chunk is zeroed at creation"
            );
            let mut written: Vec<(usize, Vec<u8>)> = Vec::new();
            let mut put = |seg: &segment::Segment, b: Vec<u8>| {
                written.push((seg.append(&[&b], b.len()).unwrap(), b))
            };
            for i in 0..50 {
                put(&seg, vec![b'a' + (i % 26) as u8; 1000]);
            }
            // Written at once, with the staged records before it, and past the
            // zeroed part: zeroing must restart at the write position.
            put(&seg, vec![b'B'; 3 << 20]);
            for i in 0..50 {
                put(&seg, vec![b'A' + (i % 26) as u8; 1000]);
            }
            assert!(seg.zeroed_to() < seg.write_pos());
            assert!(seg.wants_zeroing(2 << 20));
            // Staged records are still in memory while the zeros are written.
            seg.zero_ahead(2 << 20).await.unwrap();
            assert!(seg.zeroed_to() >= seg.write_pos() + (2 << 20));
            assert!(!seg.wants_zeroing(2 << 20));
            seg.sync(true).await.unwrap();
            // The rest of the file is zeroed by a later call, up to the end.
            seg.zero_ahead(16 << 20).await.unwrap();
            assert_eq!(seg.zeroed_to(), seg.capacity());
            put(&seg, b"the last one".to_vec());
            seg.sync(false).await.unwrap();
            let file = std::fs::read(seg.path()).unwrap();
            assert_eq!(&file[..8], segment::SEGMENT_MAGIC);
            for (at, b) in &written {
                assert_eq!(
                    &file[*at..*at + b.len()],
                    &b[..],
                    "through_map={through_map}: record at {at}"
                );
                assert_eq!(seg.slice(*at, b.len()), &b[..]);
            }
            assert!(file[seg.write_pos()..].iter().all(|&x| x == 0));
        });
    }
}

#[test]
fn zero_filling_stops_at_a_full_segment_and_after_retire() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("segments");
    std::fs::create_dir_all(&d).unwrap();
    run(move || async move {
        // Filled to the last byte by records alone, never zeroed past the first chunk.
        let seg = segment::Segment::create(&d, 1, 2 << 20, true, false)
            .await
            .unwrap();
        let rest = seg.room();
        let at = seg.append(&[&vec![b'x'; rest]], rest).unwrap();
        assert_eq!(seg.room(), 0);
        assert!(!seg.wants_zeroing(4 << 20), "nothing left to zero");
        seg.zero_ahead(4 << 20).await.unwrap();
        seg.sync(true).await.unwrap();
        assert_eq!(seg.slice(at, rest), &vec![b'x'; rest][..]);
        // A retired segment is not zeroed any more.
        let seg2 = segment::Segment::create(&d, 2, 8 << 20, true, false)
            .await
            .unwrap();
        assert!(seg2.wants_zeroing(4 << 20));
        seg2.retire();
        assert!(!seg2.wants_zeroing(4 << 20));
        seg2.zero_ahead(4 << 20).await.unwrap();
        assert!(seg2.zeroed_to() <= segment::ZERO_CHUNK + segment::SEGMENT_HEADER_LEN);
    });
}

#[test]
fn commits_leave_the_executor_when_syncs_are_slow() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let s = open_with(&d, 0, 1, 1_000_000, |c| c.sync_inline_max_us = 2000);
        // As after a run of slow syncs (a spinning disk): far above the limit.
        s.sync_avg_ns.set(1 << 40);
        for i in 0..5 {
            s.deliver(&["a@x".into()], b"", &msg(i), 0).await.unwrap();
        }
        assert_eq!(
            s.stats.inline_syncs.get(),
            0,
            "slow disk: every sync through io_uring"
        );
        assert!(s.stats.syncs.get() >= 5);
        assert!(
            s.sync_avg_ns.get() < 1 << 40,
            "the average follows the measured syncs"
        );
        // A fast disk again: the next commit syncs on the executor.
        s.sync_avg_ns.set(0);
        for i in 5..10 {
            s.deliver(&["a@x".into()], b"", &msg(i), 0).await.unwrap();
        }
        assert!(s.stats.inline_syncs.get() >= 1);
        // Limit 0: never inline, whatever the average.
        let never = open_with(&d.join("never"), 0, 1, 1_000_000, |c| {
            c.sync_inline_max_us = 0
        });
        for i in 0..5 {
            never
                .deliver(&["b@x".into()], b"", &msg(i), 0)
                .await
                .unwrap();
        }
        assert_eq!(never.stats.inline_syncs.get(), 0);
        assert_eq!(inbox(&s, "a@x").len(), 10);
        assert_eq!(inbox(&never, "b@x").len(), 5);
        drop(s);
        let again = open(&d, 0, 1, 1_000_000);
        let want: Vec<Vec<u8>> = (0..10).map(msg).collect();
        assert_eq!(
            inbox(&again, "a@x")
                .into_iter()
                .map(|m| m.1)
                .collect::<Vec<_>>(),
            want
        );
    });
}

#[test]
fn deleted_mailbox_uidvalidity_survives_checkpoint_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let a = "v@x.test";
        let s = open(&d, 0, 1, 1_000_000);
        s.ensure_account(a).await.unwrap();
        let create = |s: &Store, now| {
            s.with_account_counters(a, |acc| {
                (acc.next_mailbox_id, acc.reserve_uidvalidity(now, 1)[0])
            })
            .unwrap()
        };
        let (id, v1) = create(&s, 5);
        s.commit(&[Op::CreateMailbox {
            account: a,
            mailbox: id,
            name: "box",
            uidvalidity: v1,
            special_use: 0,
        }])
        .await
        .unwrap();
        s.commit(&[Op::DeleteMailbox {
            account: a,
            mailbox: id,
        }])
        .await
        .unwrap();
        // Replay only (no checkpoint): the creation record raises the counter.
        let s2 = open(&d, 0, 1, 1_000_000);
        assert_eq!(s2.with_account(a, |acc| acc.uidvalidity_max), Some(v1));
        let (id, v2) = create(&s2, 5);
        assert!(v2 > v1);
        s2.commit(&[Op::CreateMailbox {
            account: a,
            mailbox: id,
            name: "box",
            uidvalidity: v2,
            special_use: 0,
        }])
        .await
        .unwrap();
        s2.commit(&[Op::DeleteMailbox {
            account: a,
            mailbox: id,
        }])
        .await
        .unwrap();
        s2.checkpoint_all().await.unwrap();
        // From the checkpoint: the record of the deleted mailbox is not replayed.
        let s3 = open(&d, 0, 1, 1_000_000);
        assert_eq!(
            s3.with_account(a, |acc| (
                acc.uidvalidity_max,
                acc.mailbox_by_name("box").is_none()
            )),
            Some((v2, true))
        );
        assert!(create(&s3, 5).1 > v2);
    });
}

#[test]
fn meta_records_the_data_format_and_refuses_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    // A meta file from before formats were recorded is format 1 and is
    // rewritten with its format line.
    std::fs::write(dir.path().join("meta"), "buckets = 16\nrun = 4\n").unwrap();
    let meta = Meta::start_run(dir.path(), 64).unwrap();
    assert_eq!((meta.buckets, meta.run, meta.format), (16, 5, DATA_FORMAT));
    let text = std::fs::read_to_string(dir.path().join("meta")).unwrap();
    assert!(
        text.starts_with(&format!("format = {DATA_FORMAT}\n")),
        "{text}"
    );
    assert_eq!(Meta::read(dir.path()).unwrap().run, 5);
    // A newer format stops both the start-up and offline reads, and the
    // start-up changes nothing (the run counter stays).
    let newer = format!("format = {}\nbuckets = 16\nrun = 5\n", DATA_FORMAT + 1);
    std::fs::write(dir.path().join("meta"), &newer).unwrap();
    let e = Meta::start_run(dir.path(), 64).unwrap_err();
    assert!(e.to_string().contains("newer than this ringmail"), "{e}");
    assert!(Meta::read(dir.path()).is_err());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("meta")).unwrap(),
        newer
    );
}

#[test]
fn a_segment_of_a_newer_layout_stops_recovery() {
    assert_eq!(
        segment::magic_version(segment::SEGMENT_MAGIC),
        Some(segment::SEGMENT_VERSION)
    );
    assert_eq!(segment::magic_version(b"RMSEG12x"), None);
    assert_eq!(segment::magic_version(b"\0\0\0\0\0\0\0\0"), None);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let s = open(&d, 0, 1, 1000);
        s.deliver(&["a@x".into()], b"", &msg(1), 0).await.unwrap();
    });
    let seg = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&seg).unwrap();
    // A header this binary never finished is skipped, as before...
    bytes[..8].copy_from_slice(b"\0\0\0\0\0\0\0\0");
    std::fs::write(&seg, &bytes).unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let s = open(&d, 0, 1, 1000);
        assert!(inbox(&s, "a@x").is_empty());
    });
    // ...but a newer segment format is an error, not a silent skip.
    bytes[..8].copy_from_slice(b"RMSEG002");
    std::fs::write(&seg, &bytes).unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let meta = Meta::start_run(&d, 16).unwrap();
        let defaults = crate::config::Storage::default();
        let e = Store::open(StoreConfig {
            data_dir: d.clone(),
            shard: 0,
            shards: 1,
            meta,
            segment_size: 4 * 1024 * 1024,
            checkpoint_every_records: 1000,
            zero_segments: defaults.zero_segments,
            append_through_map: defaults.append_through_map,
            sync_inline_max_us: defaults.sync_inline_max_us,
        })
        .err()
        .expect("a newer segment must not open");
        assert!(e.to_string().contains("segment format 2 is newer"), "{e}");
    });
}

/// Mail quarantined by DMARC goes into the \Junk mailbox with the same
/// durable Message record as INBOX delivery (it survives a crash), and into
/// the INBOX when the user deleted the Junk mailbox.
#[test]
fn junk_delivery_survives_reopen_and_falls_back_to_the_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let s = open(&d, 0, 1, 1_000_000);
        let uids = s
            .deliver_to(&["a@x".into()], Folder::Junk, b"", &msg(1), 1000)
            .await
            .unwrap();
        assert_eq!(uids, vec![1]);
        s.deliver(&["a@x".into()], b"", &msg(2), 1001)
            .await
            .unwrap();
        drop(s);
        let s = open(&d, 0, 1, 1_000_000);
        let junk = |s: &Store| {
            s.with_account("a@x", |a| {
                a.mailboxes
                    .iter()
                    .find(|m| m.special_use == index::special::JUNK)
                    .map(|m| (m.id, m.messages.len()))
            })
            .flatten()
        };
        let (junk_id, n) = junk(&s).unwrap();
        assert_eq!(n, 1);
        assert_eq!(inbox(&s, "a@x").len(), 1);
        assert_eq!(inbox(&s, "a@x")[0].1, msg(2));
        s.commit(&[Op::DeleteMailbox {
            account: "a@x",
            mailbox: junk_id,
        }])
        .await
        .unwrap();
        assert_eq!(junk(&s), None);
        s.deliver_to(&["a@x".into()], Folder::Junk, b"", &msg(3), 1002)
            .await
            .unwrap();
        assert_eq!(inbox(&s, "a@x").len(), 2);
    });
}

#[test]
fn bucket_walks_add_up_to_the_whole_walk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let s = open(&d, 0, 1, 1_000_000);
        let accounts: Vec<String> = (0..40).map(|a| format!("u{a}@x")).collect();
        for i in 0..5 {
            s.deliver(&accounts, b"", &msg(i), 0).await.unwrap();
        }
        s.expunge("u3@x", index::INBOX, vec![1, 2]).await.unwrap();
        let (mut live, mut messages) = (0, 0);
        for b in s.bucket_ids() {
            let (l, m) = s.bucket_live_and_messages(b);
            live += l;
            messages += m;
        }
        assert_eq!(messages, s.message_count());
        assert_eq!(messages, 40 * 5 - 2);
        let whole: u64 = s.segment_usage().iter().map(|u| u.live).sum();
        assert_eq!(live, whole);
        assert_eq!(s.bucket_live_and_messages(u32::MAX), (0, 0));
    });
}

/// A commit that waits for a new segment keeps its place: one that began
/// later and still fits the old segment waits behind it. UIDs are taken
/// before a commit is written (APPEND, COPY), so a later, smaller record
/// written first would become visible first, and a session that saw
/// UID n+1 would never report UID n.
#[test]
fn a_commit_waiting_for_room_keeps_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let s = open(&d, 0, 1, 1_000_000);
        s.deliver(&["a@x".into()], b"", &msg(0), 1000)
            .await
            .unwrap();
        // Someone holds the roll lock (a roll in progress).
        let held = s.roll_lock.acquire_permit(1).await.unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        let big = s.active_room() + 1;
        let (s1, o1) = (s.clone(), order.clone());
        let a = glommio::spawn_local(async move {
            s1.ensure_room(big).await.unwrap();
            o1.borrow_mut().push("big");
        });
        glommio::executor().yield_now().await;
        let (s2, o2) = (s.clone(), order.clone());
        let b = glommio::spawn_local(async move {
            s2.ensure_room(100).await.unwrap();
            o2.borrow_mut().push("small");
        });
        glommio::executor().yield_now().await;
        glommio::executor().yield_now().await;
        assert!(order.borrow().is_empty(), "{:?} went ahead", order.borrow());
        drop(held);
        a.await;
        b.await;
        assert_eq!(*order.borrow(), vec!["big", "small"]);
    });
}

/// `messages_between`: every stored copy dated within the range, newest
/// first, at most the limit, after a reopen too (the duplicate table's
/// fill at start reads it).
#[test]
fn messages_between_lists_the_range_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let s = open(&d, 0, 1, 1_000_000);
        for (i, (account, at)) in [("a@x", 100), ("b@x", 200), ("a@x", 300), ("b@x", 400)]
            .into_iter()
            .enumerate()
        {
            s.deliver(&[account.into()], b"Return-Path: <s@x>\r\n", &msg(i), at)
                .await
                .unwrap();
        }
        drop(s);
        let s = open(&d, 0, 1, 1_000_000);
        let listed = |since, until, max| {
            let (names, list) = s.messages_between(since, until, max);
            list.into_iter()
                .map(|(i, at, loc)| {
                    assert!(s
                        .body(loc)
                        .unwrap()
                        .bytes()
                        .starts_with(b"Return-Path: <s@x>"));
                    (names[i as usize].clone(), at)
                })
                .collect::<Vec<(String, i64)>>()
        };
        assert_eq!(
            listed(150, 400, 10),
            vec![
                ("b@x".into(), 400),
                ("a@x".into(), 300),
                ("b@x".into(), 200)
            ]
        );
        assert_eq!(listed(150, 350, 1), vec![("a@x".into(), 300)]);
        assert!(listed(401, 1000, 10).is_empty());
        // Many accounts, a small limit: the newest are kept as the list
        // is cut down on the way.
        for i in 0..40 {
            s.deliver(
                &[format!("m{i}@x")],
                b"Return-Path: <s@x>\r\n",
                &msg(i),
                1000 + i as i64,
            )
            .await
            .unwrap();
        }
        let newest = listed(0, 2000, 3);
        assert_eq!(
            newest,
            vec![
                ("m39@x".into(), 1039),
                ("m38@x".into(), 1038),
                ("m37@x".into(), 1037)
            ]
        );
    });
}
