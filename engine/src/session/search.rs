//! SEARCH, SORT and THREAD without I/O (RFC 3501 6.4.4, RFC 4731 ESEARCH,
//! RFC 5182 SEARCHRES, RFC 5256 SORT/THREAD, RFC 5267 ESORT, RFC 7162
//! MODSEQ, RFC 9051 ESEARCH-only answers). The runtime supplies the
//! selected mailbox, the session's view of it and a way to read a body; it
//! writes the tagged status and keeps the `$` these functions return.
use std::ops::Deref;

use super::imap::{has_modseq_key, matches, needs_body, saved_result, SearchInput, View};
use super::order;
use crate::mime;
use crate::protocol::imap::encode;
use crate::protocol::imap::{Search, SearchReturn};
use crate::storage::index::Mailbox;
use crate::storage::record::Loc;

/// A message that matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub seq: u32,
    pub uid: u32,
    pub modseq: u64,
    pub internal_date: i64,
    pub loc: Loc,
}

impl Hit {
    /// What the command answers with: the UID for a UID command, else the
    /// sequence number.
    pub fn id(&self, uid: bool) -> u32 {
        if uid {
            self.uid
        } else {
            self.seq
        }
    }
}

/// The charsets SEARCH accepts (RFC 3501 6.4.4 and RFC 5256 section 3
/// require both).
pub const CHARSETS: &[&str] = &["UTF-8", "US-ASCII"];

/// Is the search's CHARSET one we accept (or none given)?
pub fn charset_ok(search: &Search<'_>) -> bool {
    search.charset.as_ref().is_none_or(|cs| {
        CHARSETS
            .iter()
            .any(|c| cs.eq_ignore_ascii_case(c.as_bytes()))
    })
}

/// The messages of `view` (in `mb`) that match every key of `search`, in
/// sequence order. `saved`: the UIDs of `$`; `rev2`: IMAP4rev2, which has
/// no \Recent; `body`: a message's bytes, read only for keys that need
/// them.
pub fn hits<B: Deref<Target = [u8]>>(
    mb: &Mailbox,
    view: &View,
    saved: &[u32],
    search: &Search<'_>,
    rev2: bool,
    body: impl Fn(Loc) -> Option<B>,
) -> Vec<Hit> {
    let keys = &search.keys[..];
    let need_body = needs_body(keys);
    let max_uid = view.max_uid();
    let mut hits = Vec::new();
    for (i, &uid) in view.uids.iter().enumerate() {
        let Some(p) = mb.position(uid) else {
            continue;
        };
        let entry = &mb.messages[p];
        let handle = if need_body { body(entry.loc) } else { None };
        let input = SearchInput {
            seq: i as u32 + 1,
            entry,
            keyword_names: &mb.keywords,
            // RFC 9051: IMAP4rev2 has no \Recent (RECENT and NEW match
            // nothing, OLD everything).
            recent: !rev2 && view.recent.contains(&uid),
            max_seq: view.len(),
            max_uid,
            body: handle.as_deref().unwrap_or(&[]),
            saved,
        };
        if matches(keys, &input) {
            hits.push(Hit {
                seq: i as u32 + 1,
                uid,
                modseq: entry.modseq,
                internal_date: entry.internal_date,
                loc: entry.loc,
            });
        }
    }
    hits
}

/// Whether a MODSEQ key is among the keys (the session enables CONDSTORE,
/// and the answer carries a mod-sequence, RFC 7162 3.1.5).
pub fn modseq_key(search: &Search<'_>) -> bool {
    has_modseq_key(&search.keys)
}

/// The answer of SEARCH into `out`: `* SEARCH`, or ESEARCH with RETURN or
/// in an IMAP4rev2 session (RFC 9051 6.4.4: RETURN (ALL) when none was
/// given). Returns the new `$` when SAVE was asked (RFC 5182).
pub fn write_search(
    out: &mut Vec<u8>,
    tag: &[u8],
    uid: bool,
    search: &Search<'_>,
    hits: &[Hit],
    rev2: bool,
) -> Option<Vec<u32>> {
    let modseq_key = modseq_key(search);
    let ordered: Vec<&Hit> = hits.iter().collect();
    match &search.returns {
        None if rev2 => write_extended(
            out,
            tag,
            uid,
            &[SearchReturn::All],
            &ordered,
            modseq_key,
            false,
        ),
        None => {
            let ids: Vec<u32> = hits.iter().map(|h| h.id(uid)).collect();
            // RFC 7162 3.1.5: with a MODSEQ key (anywhere in the search)
            // the result carries the highest mod-sequence of the messages
            // returned; none when nothing matched.
            let max_modseq = modseq_key.then(|| hits.iter().map(|h| h.modseq).max());
            encode::write_search(out, &ids, max_modseq.flatten());
            None
        }
        Some(returns) => write_extended(out, tag, uid, returns, &ordered, modseq_key, false),
    }
}

/// The `RETURN (...)` answer of SEARCH (RFC 4731) and SORT (RFC 5267):
/// `ordered` holds the matches in the order the command returns them
/// (UID order for SEARCH, sort order for SORT, where ALL keeps that
/// order: `in_order`). SAVE follows RFC 5182 2.4 (the new `$` is
/// returned); a MODSEQ key adds the highest mod-sequence of the messages
/// returned (RFC 7162 3.1.5): all of them, or with only MIN and/or MAX
/// just those.
pub fn write_extended(
    out: &mut Vec<u8>,
    tag: &[u8],
    uid: bool,
    returns: &[SearchReturn],
    ordered: &[&Hit],
    modseq_key: bool,
    in_order: bool,
) -> Option<Vec<u32>> {
    let want = |r| returns.contains(&r);
    let saved = want(SearchReturn::Save).then(|| {
        let uids: Vec<u32> = ordered.iter().map(|h| h.uid).collect();
        saved_result(returns, &uids)
    });
    if returns.iter().all(|r| *r == SearchReturn::Save) {
        return saved;
    }
    let ids: Vec<u32> = ordered.iter().map(|h| h.id(uid)).collect();
    let (first, last) = (ordered.first(), ordered.last());
    let modseq = if !modseq_key {
        None
    } else if want(SearchReturn::All) || want(SearchReturn::Count) {
        ordered.iter().map(|h| h.modseq).max()
    } else {
        let min = first.filter(|_| want(SearchReturn::Min)).map(|h| h.modseq);
        let max = last.filter(|_| want(SearchReturn::Max)).map(|h| h.modseq);
        min.max(max)
    };
    let data = encode::Esearch {
        min: first.filter(|_| want(SearchReturn::Min)).map(|h| h.id(uid)),
        max: last.filter(|_| want(SearchReturn::Max)).map(|h| h.id(uid)),
        count: want(SearchReturn::Count).then_some(ids.len() as u32),
        all: want(SearchReturn::All).then_some(&ids[..]),
        modseq,
        in_order,
    };
    encode::write_esearch(out, tag, uid, &data);
    saved
}

/// What SORT or THREAD asked for.
pub enum Order<'a> {
    Sort(&'a [order::SortCriterion]),
    Thread(order::Algorithm),
}

/// The answer of SORT or THREAD (RFC 5256) over `hits`, ordered by
/// `session::order` on their header sections. Returns the new `$` when
/// SORT's RETURN asked for SAVE.
pub fn write_order<B: Deref<Target = [u8]>>(
    out: &mut Vec<u8>,
    tag: &[u8],
    uid: bool,
    search: &Search<'_>,
    hits: &[Hit],
    how: Order<'_>,
    body: impl Fn(Loc) -> Option<B>,
) -> Option<Vec<u32>> {
    let bodies: Vec<Option<B>> = hits.iter().map(|h| body(h.loc)).collect();
    let infos: Vec<order::MsgInfo<'_>> = hits
        .iter()
        .zip(&bodies)
        .map(|(h, b)| order::MsgInfo {
            seq: h.seq,
            internal_date: h.internal_date,
            size: u64::from(h.loc.len),
            header: b.as_deref().map_or(&[][..], |b| mime::split(b).0),
        })
        .collect();
    let id = |i: usize| hits[i].id(uid);
    match how {
        Order::Sort(criteria) => {
            let sorted = order::sort(&infos, criteria);
            match &search.returns {
                None => {
                    let ids: Vec<u32> = sorted.iter().map(|&i| id(i)).collect();
                    // RFC 7162 3.1.5: a MODSEQ search key adds the highest
                    // mod-sequence of the messages returned.
                    let max_modseq =
                        modseq_key(search).then(|| hits.iter().map(|h| h.modseq).max());
                    encode::write_sort(out, &ids, max_modseq.flatten());
                    None
                }
                // RFC 5267 3.1: MIN and MAX are the first and last in sort
                // order; ALL keeps that order.
                Some(returns) => {
                    let ordered: Vec<&Hit> = sorted.iter().map(|&i| &hits[i]).collect();
                    write_extended(out, tag, uid, returns, &ordered, modseq_key(search), true)
                }
            }
        }
        Order::Thread(algorithm) => {
            let roots = order::thread(&infos, algorithm);
            out.extend_from_slice(b"* THREAD");
            if !roots.is_empty() {
                out.push(b' ');
                order::write_threads(out, &roots, id);
            }
            out.extend_from_slice(b"\r\n");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::imap::{parse_command, CommandBody};
    use crate::storage::index::{flag, MessageEntry};

    const MSGS: [&str; 4] = [
        "Subject: b\r\nFrom: <x@e>\r\n\r\nhello\r\n",
        "Subject: a\r\nFrom: <y@e>\r\n\r\nworld\r\n",
        "Subject: Re: b\r\nFrom: <z@e>\r\n\r\nhello again\r\n",
        "Subject: c\r\nFrom: <w@e>\r\n\r\nbye\r\n",
    ];

    /// A mailbox of MSGS (UIDs 2, 4, 6, 8; the second \Seen), its view,
    /// and each command's answer.
    fn run(line: &str, saved: &[u32], rev2: bool) -> (String, Option<Vec<u32>>) {
        let mut mb = Mailbox::new(0, "INBOX", 1, 0);
        for (i, _) in MSGS.iter().enumerate() {
            mb.messages.push(MessageEntry {
                uid: 2 * i as u32 + 2,
                flags: if i == 1 { flag::SEEN } else { 0 },
                keywords: 0,
                internal_date: 1_000 - i as i64,
                modseq: 10 + i as u64,
                loc: Loc {
                    seg: 1,
                    offset: i as u32,
                    len: MSGS[i].len() as u32,
                },
                email_id: i as u64 + 1,
            });
        }
        let mut view = View::default();
        let mut floor = 0;
        view.sync(&mb, true, &mut floor);
        let body = |l: Loc| Some(MSGS[l.offset as usize].as_bytes());
        let input = format!("t {line}\r\n");
        let cmd = parse_command(input.as_bytes()).expect("parses");
        let mut out = Vec::new();
        let saved = match &cmd.body {
            CommandBody::Search { uid, search } => {
                let h = hits(&mb, &view, saved, search, rev2, body);
                write_search(&mut out, b"t", *uid, search, &h, rev2)
            }
            CommandBody::Sort {
                uid,
                criteria,
                search,
            } => {
                let h = hits(&mb, &view, saved, search, rev2, body);
                write_order(
                    &mut out,
                    b"t",
                    *uid,
                    search,
                    &h,
                    Order::Sort(criteria),
                    body,
                )
            }
            CommandBody::Thread {
                uid,
                algorithm,
                search,
            } => {
                let h = hits(&mb, &view, saved, search, rev2, body);
                write_order(
                    &mut out,
                    b"t",
                    *uid,
                    search,
                    &h,
                    Order::Thread(*algorithm),
                    body,
                )
            }
            other => panic!("{other:?}"),
        };
        (String::from_utf8(out).unwrap(), saved)
    }

    #[test]
    fn search_forms() {
        assert_eq!(run("SEARCH UNSEEN", &[], false).0, "* SEARCH 1 3 4\r\n");
        assert_eq!(
            run("UID SEARCH BODY hello", &[], false).0,
            "* SEARCH 2 6\r\n"
        );
        // RFC 9051: ESEARCH for every SEARCH of an IMAP4rev2 session.
        assert_eq!(
            run("SEARCH UNSEEN", &[], true).0,
            "* ESEARCH (TAG \"t\") ALL 1,3:4\r\n"
        );
        assert_eq!(
            run("UID SEARCH DELETED", &[], true).0,
            "* ESEARCH (TAG \"t\") UID\r\n"
        );
        assert_eq!(
            run("SEARCH RETURN (MIN MAX COUNT) UNSEEN", &[], false).0,
            "* ESEARCH (TAG \"t\") MIN 1 MAX 4 COUNT 3\r\n"
        );
        // RFC 7162 3.1.5: MODSEQ in the answer.
        assert_eq!(
            run("SEARCH MODSEQ 12", &[], false).0,
            "* SEARCH 3 4 (MODSEQ 13)\r\n"
        );
        // RFC 5182: SAVE, then `$`.
        let (text, saved) = run("SEARCH RETURN (SAVE) UNSEEN", &[], false);
        assert_eq!((text.as_str(), saved), ("", Some(vec![2, 6, 8])));
        assert_eq!(run("SEARCH $", &[4, 8], false).0, "* SEARCH 2 4\r\n");
        // RFC 8474: EMAILID.
        assert_eq!(run("UID SEARCH EMAILID M3", &[], false).0, "* SEARCH 6\r\n");
    }

    #[test]
    fn sort_and_thread_forms() {
        assert_eq!(
            run("SORT (SUBJECT) UTF-8 ALL", &[], false).0,
            "* SORT 2 1 3 4\r\n"
        );
        assert_eq!(
            run("UID SORT (REVERSE ARRIVAL) UTF-8 ALL", &[], false).0,
            "* SORT 2 4 6 8\r\n"
        );
        assert_eq!(
            run("SORT RETURN (MIN ALL) (SUBJECT) UTF-8 ALL", &[], false).0,
            "* ESEARCH (TAG \"t\") MIN 2 ALL 2,1,3:4\r\n"
        );
        assert_eq!(
            run("THREAD ORDEREDSUBJECT UTF-8 ALL", &[], false).0,
            "* THREAD (4)(3 1)(2)\r\n"
        );
    }

    #[test]
    fn charsets() {
        let cmd = parse_command(b"t SEARCH CHARSET KOI8-R ALL\r\n").unwrap();
        let CommandBody::Search { search, .. } = cmd.body else {
            panic!()
        };
        assert!(!charset_ok(&search));
        let cmd = parse_command(b"t SEARCH CHARSET utf-8 ALL\r\n").unwrap();
        let CommandBody::Search { search, .. } = cmd.body else {
            panic!()
        };
        assert!(charset_ok(&search));
    }
}
