//! Sequence sets: RFC 3501 section 9 `sequence-set`, plus the RFC 5182 /
//! RFC 9051 `$` marker (the result saved by `SEARCH RETURN (SAVE)`).
//!
//! A set is kept exactly as the client wrote it (ranges in any order, `a:b`
//! with `a > b` allowed, `*` unresolved) so that the session layer resolves
//! `*` against the mailbox it actually has. Resolution helpers never allocate
//! per message number: they work on ranges, because `1:*` may name four
//! billion UIDs.

/// One end of a range: a number or `*` ("the largest number in use").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeqNum {
    /// A non-zero number.
    Value(u32),
    /// `*`: the largest message sequence number or UID in the mailbox.
    Star,
}

impl SeqNum {
    /// Resolve `*` to `largest`.
    pub fn resolve(self, largest: u32) -> u32 {
        match self {
            SeqNum::Value(n) => n,
            SeqNum::Star => largest,
        }
    }
}

/// `a` or `a:b`. RFC 3501 section 9: `a:b` and `b:a` name the same numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqRange {
    /// The number written first.
    pub first: SeqNum,
    /// The number written last (equal to `first` for a single number).
    pub last: SeqNum,
}

impl SeqRange {
    /// A single number.
    pub fn single(n: u32) -> Self {
        SeqRange {
            first: SeqNum::Value(n),
            last: SeqNum::Value(n),
        }
    }

    /// Inclusive `(low, high)` after resolving `*` against `largest`.
    pub fn bounds(&self, largest: u32) -> (u32, u32) {
        let a = self.first.resolve(largest);
        let b = self.last.resolve(largest);
        (a.min(b), a.max(b))
    }
}

/// A parsed `sequence-set`: one or more ranges, as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SequenceSet {
    /// Never empty when produced by the parser.
    pub ranges: Vec<SeqRange>,
}

/// A sequence-set argument of a command: a literal set, or `$`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SequenceArg {
    /// Numbers given by the client.
    Set(SequenceSet),
    /// `$`: the result of the last `SEARCH RETURN (SAVE)` (RFC 5182).
    Saved,
}

fn parse_nz(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 10 || bytes[0] == b'0' {
        return None;
    }
    let mut n: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    u32::try_from(n).ok()
}

fn parse_seq_num(bytes: &[u8]) -> Option<SeqNum> {
    if bytes == b"*" {
        Some(SeqNum::Star)
    } else {
        parse_nz(bytes).map(SeqNum::Value)
    }
}

impl SequenceSet {
    /// Parse the whole of `bytes` as a sequence set (no `$`).
    pub fn parse(bytes: &[u8]) -> Option<SequenceSet> {
        if bytes.is_empty() {
            return None;
        }
        let mut ranges = Vec::new();
        for item in bytes.split(|&b| b == b',') {
            let range = match memchr::memchr(b':', item) {
                Some(i) => SeqRange {
                    first: parse_seq_num(&item[..i])?,
                    last: parse_seq_num(&item[i + 1..])?,
                },
                None => {
                    let n = parse_seq_num(item)?;
                    SeqRange { first: n, last: n }
                }
            };
            ranges.push(range);
        }
        Some(SequenceSet { ranges })
    }

    /// Whether `n` is in the set, with `*` meaning `largest`.
    pub fn contains(&self, n: u32, largest: u32) -> bool {
        self.ranges.iter().any(|r| {
            let (lo, hi) = r.bounds(largest);
            lo <= n && n <= hi
        })
    }

    /// Sorted, merged, inclusive ranges after resolving `*`. Zero is never
    /// included (`*` in an empty mailbox resolves to 0 and names nothing).
    pub fn normalized(&self, largest: u32) -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> = self
            .ranges
            .iter()
            .map(|r| r.bounds(largest))
            .filter_map(|(lo, hi)| if hi == 0 { None } else { Some((lo.max(1), hi)) })
            .collect();
        v.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some(last) if u64::from(lo) <= u64::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        out
    }

    /// Ascending, de-duplicated numbers after resolving `*`. Lazy: does not
    /// allocate per number.
    pub fn iter(&self, largest: u32) -> impl Iterator<Item = u32> {
        self.normalized(largest)
            .into_iter()
            .flat_map(|(lo, hi)| lo..=hi)
    }

    /// Numbers in the order written, each range walked upwards. This is the
    /// order that pairs source and destination UIDs in `COPYUID` (RFC 4315).
    pub fn iter_written(&self, largest: u32) -> impl Iterator<Item = u32> + '_ {
        self.ranges.iter().flat_map(move |r| {
            let (lo, hi) = r.bounds(largest);
            lo..=hi
        })
    }

    /// Build the shortest set listing `ids` in the given order: runs of
    /// consecutive ascending numbers become `a:b`. Order is preserved (no
    /// sorting), so `COPYUID` source and destination sets stay paired.
    /// Zeros are skipped. Returns `None` for an empty input.
    pub fn compress(ids: &[u32]) -> Option<SequenceSet> {
        let mut ranges: Vec<SeqRange> = Vec::new();
        let mut run: Option<(u32, u32)> = None;
        for &id in ids {
            if id == 0 {
                continue;
            }
            run = match run {
                Some((a, b)) if b.checked_add(1) == Some(id) => Some((a, id)),
                Some((a, b)) => {
                    ranges.push(SeqRange {
                        first: SeqNum::Value(a),
                        last: SeqNum::Value(b),
                    });
                    Some((id, id))
                }
                None => Some((id, id)),
            };
        }
        let (a, b) = run?;
        ranges.push(SeqRange {
            first: SeqNum::Value(a),
            last: SeqNum::Value(b),
        });
        Some(SequenceSet { ranges })
    }

    /// Write the set in IMAP syntax (`1:3,7,9:*`).
    pub fn write(&self, out: &mut Vec<u8>) {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_seq_num(out, r.first);
            if r.first != r.last {
                out.push(b':');
                write_seq_num(out, r.last);
            }
        }
    }
}

fn write_seq_num(out: &mut Vec<u8>, n: SeqNum) {
    match n {
        SeqNum::Value(v) => out.extend_from_slice(v.to_string().as_bytes()),
        SeqNum::Star => out.push(b'*'),
    }
}

/// Write `ids` compressed (see [`SequenceSet::compress`]); writes nothing for
/// an empty list.
pub fn write_compressed(ids: &[u32], out: &mut Vec<u8>) {
    if let Some(set) = SequenceSet::compress(ids) {
        set.write(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(s: &SequenceSet) -> String {
        let mut v = Vec::new();
        s.write(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn parse_and_resolve() {
        let s = SequenceSet::parse(b"2,4:7,9,12:*").unwrap();
        assert_eq!(s.ranges.len(), 4);
        assert_eq!(s.normalized(15), vec![(2, 2), (4, 7), (9, 9), (12, 15)]);
        assert!(s.contains(13, 15) && !s.contains(8, 15));
        // RFC 3501 section 9: "*:4" and "4:*" are equivalent.
        let a = SequenceSet::parse(b"*:4").unwrap();
        let b = SequenceSet::parse(b"4:*").unwrap();
        assert_eq!(a.normalized(10), b.normalized(10));
        // A mailbox smaller than the range start: 4:* with 3 messages is 3:4.
        assert_eq!(b.normalized(3), vec![(3, 4)]);
        // Empty mailbox: * names nothing.
        assert_eq!(SequenceSet::parse(b"*").unwrap().normalized(0), vec![]);
        for bad in [
            &b""[..],
            b"0",
            b"1:",
            b",1",
            b"1,,2",
            b"a",
            b"4294967296",
            b"01",
            b"1:0",
        ] {
            assert!(
                SequenceSet::parse(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            text(&SequenceSet::parse(b"4294967295:1").unwrap()),
            "4294967295:1"
        );
    }

    #[test]
    fn compress_known() {
        assert_eq!(
            text(&SequenceSet::compress(&[1, 2, 3, 5, 7, 8]).unwrap()),
            "1:3,5,7:8"
        );
        // Order is kept: COPYUID pairs source and destination by position.
        assert_eq!(
            text(&SequenceSet::compress(&[10, 11, 3, 4]).unwrap()),
            "10:11,3:4"
        );
        assert!(SequenceSet::compress(&[]).is_none());
        let mut out = Vec::new();
        write_compressed(&[u32::MAX - 1, u32::MAX], &mut out);
        assert_eq!(out, b"4294967294:4294967295");
    }

    proptest! {
        #[test]
        fn compress_expand_round_trip(ids in proptest::collection::vec(1u32..200, 0..60)) {
            match SequenceSet::compress(&ids) {
                None => prop_assert!(ids.is_empty()),
                Some(set) => {
                    let back: Vec<u32> = set.iter_written(0).collect();
                    prop_assert_eq!(&back, &ids);
                    let reparsed = SequenceSet::parse(text(&set).as_bytes()).unwrap();
                    prop_assert_eq!(reparsed, set);
                }
            }
        }

        #[test]
        fn sorted_compress_is_normalized(mut ids in proptest::collection::vec(1u32..500, 1..60)) {
            ids.sort_unstable();
            ids.dedup();
            let set = SequenceSet::compress(&ids).unwrap();
            let norm = set.normalized(0);
            prop_assert_eq!(norm.len(), set.ranges.len());
            let all: Vec<u32> = set.iter(0).collect();
            prop_assert_eq!(all, ids);
        }
    }
}
