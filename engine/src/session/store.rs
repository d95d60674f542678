//! STORE without I/O (RFC 3501 6.4.6, RFC 7162 3.1.3 UNCHANGEDSINCE), in
//! the three steps every committing IMAP command takes: [`plan`] decides
//! the changes on the owner's index (allocating keyword bits and
//! mod-sequences), [`ops`] names the records to commit, and after the
//! runtime's commit is durable [`answer`] writes the FETCH responses. The
//! runtime only runs the commit between them.
use super::imap::{
    flag_list, keyword_mask, split_flags, write_flags_lines, View, KEYWORDS_MAX, KEYWORD_LEN_MAX,
};
use crate::protocol::imap::encode::FetchWriter;
use crate::protocol::imap::{Flag, SequenceSet, StoreMode};
use crate::storage::index::Mailbox;
use crate::storage::record::Op;

/// What a STORE changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Keywords given a bit in the mailbox: (bit, name).
    pub new_keywords: Vec<(u8, String)>,
    /// (UID, flags, keyword bits, mod-sequence) of each message that
    /// changes, in UID order.
    pub changes: Vec<(u32, u32, u64, u64)>,
    /// UIDs left alone because they changed after UNCHANGEDSINCE (RFC 7162
    /// 3.1.3), in UID order.
    pub modified: Vec<u32>,
}

/// Give keywords not yet known in this mailbox a bit. Returns the new
/// (bit, name) pairs, or None when the mailbox has no bits left.
pub fn allocate_keywords(m: &mut Mailbox, kws: &[&[u8]]) -> Option<Vec<(u8, String)>> {
    let mut new = Vec::new();
    for k in kws {
        if m.keywords
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(k))
        {
            continue;
        }
        if m.keywords.len() >= KEYWORDS_MAX || k.len() > KEYWORD_LEN_MAX {
            return None;
        }
        let name = String::from_utf8_lossy(k).into_owned();
        let bit = m.keywords.len() as u8;
        m.keywords.push(name.clone());
        new.push((bit, name));
    }
    Some(new)
}

/// Would [`allocate_keywords`] give `kws` bits in `m`? (Read only.)
pub fn keywords_fit(m: &Mailbox, kws: &[&[u8]]) -> bool {
    let mut new: Vec<&[u8]> = Vec::new();
    for k in kws {
        let known = m
            .keywords
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(k))
            || new.iter().any(|n| n.eq_ignore_ascii_case(k));
        if !known {
            if k.len() > KEYWORD_LEN_MAX {
                return false;
            }
            new.push(k);
        }
    }
    m.keywords.len() + new.len() <= KEYWORDS_MAX
}

/// Decide a STORE of `flags` on `uids` (in UID order) of `m`: keyword bits
/// and mod-sequences are taken from `m` now, so a concurrent command
/// cannot get the same. None: the mailbox has no keyword bits left, or a
/// new keyword is longer than [`KEYWORD_LEN_MAX`].
pub fn plan(
    m: &mut Mailbox,
    uids: &[u32],
    mode: StoreMode,
    flags: &[Flag<'_>],
    unchanged_since: Option<u64>,
) -> Option<Plan> {
    let (sys, kws) = split_flags(flags);
    let new_keywords = if mode == StoreMode::Remove {
        Vec::new()
    } else {
        allocate_keywords(m, &kws)?
    };
    let kwmask = keyword_mask(&m.keywords, &kws);
    let mut plan = Plan {
        new_keywords,
        ..Plan::default()
    };
    for u in uids {
        let Some(p) = m.position(*u) else { continue };
        let e = &m.messages[p];
        if unchanged_since.is_some_and(|us| e.modseq > us) {
            plan.modified.push(*u);
            continue;
        }
        let (f, k) = match mode {
            StoreMode::Replace => (sys, kwmask),
            StoreMode::Add => (e.flags | sys, e.keywords | kwmask),
            StoreMode::Remove => (e.flags & !sys, e.keywords & !kwmask),
        };
        if (f, k) != (e.flags, e.keywords) {
            m.highest_modseq += 1;
            plan.changes.push((*u, f, k, m.highest_modseq));
        }
    }
    Some(plan)
}

/// The records that make `plan` durable.
pub fn ops<'a>(account: &'a str, mailbox: u32, plan: &'a Plan) -> Vec<Op<'a>> {
    let keywords = plan.new_keywords.iter().map(|(bit, name)| Op::Keyword {
        account,
        mailbox,
        bit: *bit,
        name,
    });
    let flags = plan
        .changes
        .iter()
        .map(|(uid, flags, keywords, modseq)| Op::Flags {
            account,
            mailbox,
            uid: *uid,
            flags: *flags,
            keywords: *keywords,
            modseq: *modseq,
        });
    keywords.chain(flags).collect()
}

/// How the STORE is answered.
#[derive(Clone, Copy, Debug, Default)]
pub struct Answer {
    /// `.SILENT`: no FETCH (but see RFC 7162 3.2 below).
    pub silent: bool,
    /// UID STORE: the responses carry the UID.
    pub uid: bool,
    /// CONDSTORE enabled: UID and MODSEQ in the responses.
    pub condstore: bool,
    /// UNCHANGEDSINCE was given.
    pub conditional: bool,
    /// IMAP4rev2: no \Recent.
    pub rev2: bool,
    /// The mailbox is selected read-only (FLAGS lines).
    pub read_only: bool,
}

/// After the commit: the new flags of the messages at view positions `idx`
/// (not of those left alone for UNCHANGEDSINCE) into `out`; the view takes
/// them, so the next sync does not report the session's own change again.
pub fn answer(
    out: &mut Vec<u8>,
    mb: &Mailbox,
    view: &mut View,
    idx: &[usize],
    plan: &Plan,
    a: Answer,
) {
    // Our own new keywords, and any another session created while we
    // waited for the commit (it may have set one of them on these very
    // messages), are announced before the FETCH responses.
    if view.take_new_keywords(mb) {
        write_flags_lines(out, &mb.keywords, a.read_only);
    }
    for &i in idx {
        let Some(p) = mb.position(view.uids[i]) else {
            continue;
        };
        let e = &mb.messages[p];
        view.told_now(e);
        // Both lists are in UID order (the view's): binary search, so a
        // STORE over 100,000 messages stays linear.
        if plan.modified.binary_search(&e.uid).is_ok() {
            continue;
        }
        // RFC 7162 3.2: with UNCHANGEDSINCE, changed messages are reported
        // even with .SILENT.
        let changed = plan.changes.binary_search_by_key(&e.uid, |c| c.0).is_ok();
        if a.silent && !(a.condstore && a.conditional && changed) {
            continue;
        }
        let mut w = FetchWriter::new(out, i as u32 + 1);
        w.flags(&flag_list(
            e.flags,
            e.keywords,
            &mb.keywords,
            !a.rev2 && view.recent.contains(&e.uid),
        ));
        if a.uid || a.condstore {
            w.uid(e.uid);
        }
        if a.condstore {
            w.modseq(e.modseq);
        }
        w.finish();
    }
}

/// `[MODIFIED set]` (RFC 7162 3.1.3): the messages left alone, as UIDs or
/// as this view's sequence numbers. None when there are none.
pub fn modified_set(view: &View, uid: bool, plan: &Plan) -> Option<SequenceSet> {
    let ids: Vec<u32> = if uid {
        plan.modified.clone()
    } else {
        plan.modified
            .iter()
            .filter_map(|u| view.seq_of(*u))
            .collect()
    };
    SequenceSet::compress(&ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::index::{flag, MessageEntry};
    use crate::storage::record::Loc;

    fn mailbox() -> Mailbox {
        let mut mb = Mailbox::new(0, "INBOX", 1, 0);
        for uid in 1..=3 {
            mb.messages.push(MessageEntry {
                uid,
                flags: if uid == 2 { flag::SEEN } else { 0 },
                keywords: 0,
                internal_date: 0,
                modseq: u64::from(uid),
                loc: Loc {
                    seg: 1,
                    offset: uid,
                    len: 10,
                },
                email_id: u64::from(uid),
            });
        }
        mb.highest_modseq = 3;
        mb
    }

    /// Apply a plan as the commit would.
    fn apply(mb: &mut Mailbox, plan: &Plan) {
        for (uid, f, k, ms) in &plan.changes {
            let p = mb.position(*uid).unwrap();
            let e = &mut mb.messages[p];
            (e.flags, e.keywords, e.modseq) = (*f, *k, *ms);
        }
    }

    #[test]
    fn store_plans_commits_and_answers() {
        let mut mb = mailbox();
        let mut view = View::default();
        view.sync(&mb, true, &mut 0);
        // +FLAGS (\Seen $Work) on all: message 2 has \Seen already but gets
        // the keyword; one new keyword bit; mod-sequences 4, 5, 6.
        let flags = [Flag::Seen, Flag::Keyword(b"$Work")];
        let plan = plan(&mut mb, &[1, 2, 3], StoreMode::Add, &flags, None).unwrap();
        assert_eq!(plan.new_keywords, vec![(0, "$Work".to_string())]);
        assert_eq!(
            plan.changes,
            vec![
                (1, flag::SEEN, 1, 4),
                (2, flag::SEEN, 1, 5),
                (3, flag::SEEN, 1, 6)
            ]
        );
        let ops = ops("a@x", 0, &plan);
        assert_eq!(ops.len(), 4);
        apply(&mut mb, &plan);
        let mut out = Vec::new();
        let a = Answer {
            uid: true,
            ..Answer::default()
        };
        answer(&mut out, &mb, &mut view, &[0, 2], &plan, a);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)\r\n")
        );
        assert!(text.ends_with(
            "* 1 FETCH (FLAGS (\\Seen \\Recent $Work) UID 1)\r\n* 3 FETCH (FLAGS (\\Seen \\Recent $Work) UID 3)\r\n"
        ));
        // The session's own change is not reported again.
        let ch = view.sync(&mb, true, &mut 0);
        assert_eq!(ch.flags, vec![2]);
    }

    #[test]
    fn unchangedsince_leaves_later_changes_alone() {
        let mut mb = mailbox();
        let mut view = View::default();
        view.sync(&mb, true, &mut 0);
        // RFC 7162 3.1.3: message 3 (modseq 3) changed after 2.
        let plan = plan(
            &mut mb,
            &[1, 2, 3],
            StoreMode::Remove,
            &[Flag::Seen],
            Some(2),
        )
        .unwrap();
        assert_eq!(plan.changes, vec![(2, 0, 0, 4)]);
        assert_eq!(plan.modified, vec![3]);
        assert_eq!(
            modified_set(&view, false, &plan).unwrap().normalized(9),
            vec![(3, 3)]
        );
        apply(&mut mb, &plan);
        // .SILENT with UNCHANGEDSINCE still reports what changed.
        let mut out = Vec::new();
        let a = Answer {
            silent: true,
            condstore: true,
            conditional: true,
            ..Answer::default()
        };
        answer(&mut out, &mb, &mut view, &[0, 1, 2], &plan, a);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "* 2 FETCH (FLAGS (\\Recent) UID 2 MODSEQ (4))\r\n"
        );
        // No keyword bits left: no plan.
        let mut full = mailbox();
        full.keywords = (0..KEYWORDS_MAX).map(|i| format!("k{i}")).collect();
        assert_eq!(plan_of(&mut full), None);
    }

    fn plan_of(mb: &mut Mailbox) -> Option<Plan> {
        plan(mb, &[1], StoreMode::Add, &[Flag::Keyword(b"$New")], None)
    }
}
