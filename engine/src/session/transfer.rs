//! COPY and MOVE without I/O (RFC 3501 6.4.7, RFC 6851 MOVE, RFC 4315
//! COPYUID, RFC 8474 5.1), in the steps of a committing command: [`plan`]
//! takes destination UIDs, keyword bits and mod-sequences on the owner's
//! index, and [`ops`] names the records to commit (Link records sharing
//! the bodies and EMAILIDs, and for a move the source's Expunge). The
//! runtime commits them and answers with [`Plan::copyuid`].
use super::imap::keyword_mask;
use super::store::allocate_keywords;
use crate::storage::index::{mailbox_name_eq, Account};
use crate::storage::record::{Loc, Op};

/// One message linked into the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub source_uid: u32,
    pub uid: u32,
    pub internal_date: i64,
    pub flags: u32,
    pub keywords: u64,
    pub modseq: u64,
    pub loc: Loc,
    pub email_id: u64,
}

/// What a COPY or MOVE does.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub source: u32,
    pub dest: u32,
    /// UIDVALIDITY of the destination (COPYUID).
    pub validity: u32,
    /// Keywords given a bit in the destination: (bit, name).
    pub new_keywords: Vec<(u8, String)>,
    /// In the order the messages were asked for.
    pub links: Vec<Link>,
    /// A move: the mod-sequence of the source's expunge.
    pub expunge_modseq: Option<u64>,
}

impl Plan {
    /// (source UIDs, destination UIDs) pairwise, for COPYUID (RFC 4315).
    pub fn copyuid(&self) -> (Vec<u32>, Vec<u32>) {
        self.links.iter().map(|l| (l.source_uid, l.uid)).unzip()
    }
}

/// Plan linking the messages `uids` of mailbox `source` into the mailbox
/// named `dest` (stored name), and for `mv` expunging them from the
/// source. Messages gone meanwhile are left out (no links: nothing to do).
/// None: no such mailbox, or no keyword bits left in the destination.
pub fn plan(a: &mut Account, source: u32, uids: &[u32], dest: &str, mv: bool) -> Option<Plan> {
    let src = a.mailbox(source)?;
    let wanted: Vec<(crate::storage::index::MessageEntry, Vec<String>)> = uids
        .iter()
        .filter_map(|u| src.position(*u))
        .map(|p| {
            let e = src.messages[p].clone();
            let names = src
                .keywords
                .iter()
                .enumerate()
                .filter(|(i, _)| e.keywords & (1 << i) != 0)
                .map(|(_, n)| n.clone())
                .collect();
            (e, names)
        })
        .collect();
    let d = a
        .mailboxes
        .iter_mut()
        .find(|m| mailbox_name_eq(&m.name, dest))?;
    let mut plan = Plan {
        source,
        dest: d.id,
        validity: d.uidvalidity,
        ..Plan::default()
    };
    for (e, names) in wanted {
        let kws: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        plan.new_keywords.extend(allocate_keywords(d, &kws)?);
        let uid = d.uidnext;
        d.uidnext += 1;
        plan.links.push(Link {
            source_uid: e.uid,
            uid,
            internal_date: e.internal_date,
            flags: e.flags,
            keywords: keyword_mask(&d.keywords, &kws),
            modseq: 0,
            loc: e.loc,
            email_id: e.email_id,
        });
    }
    // Mod-sequences only once nothing can fail any more: an allocated one
    // holds HIGHESTMODSEQ back until applied.
    for l in &mut plan.links {
        l.modseq = d.allocate_pending_modseq();
    }
    if mv && !plan.links.is_empty() {
        plan.expunge_modseq = a.mailbox_mut(source).map(|m| m.allocate_pending_modseq());
    }
    Some(plan)
}

/// The records that make `plan` durable, in one commit.
pub fn ops<'a>(account: &'a str, plan: &'a Plan) -> Vec<Op<'a>> {
    let mut ops: Vec<Op<'a>> = plan
        .new_keywords
        .iter()
        .map(|(bit, name)| Op::Keyword {
            account,
            mailbox: plan.dest,
            bit: *bit,
            name,
        })
        .collect();
    // RFC 8474 5.1: a copy keeps the EMAILID of its source.
    ops.extend(plan.links.iter().map(|l| Op::Link {
        account,
        mailbox: plan.dest,
        uid: l.uid,
        internal_date: l.internal_date,
        flags: l.flags,
        keywords: l.keywords,
        modseq: l.modseq,
        loc: l.loc,
        email_id: l.email_id,
    }));
    if let Some(modseq) = plan.expunge_modseq {
        let mut moved: Vec<u32> = plan.links.iter().map(|l| l.source_uid).collect();
        moved.sort_unstable();
        ops.push(Op::Expunge {
            account,
            mailbox: plan.source,
            uids: moved,
            modseq,
        });
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::index::{Mailbox, MessageEntry};

    fn account() -> Account {
        let mut a = Account::new("a@x");
        let mut inbox = Mailbox::new(0, "INBOX", 7, 0);
        inbox.keywords = vec!["$Work".into()];
        for uid in [3, 5] {
            inbox.messages.push(MessageEntry {
                uid,
                flags: 0,
                keywords: if uid == 5 { 1 } else { 0 },
                internal_date: 10,
                modseq: 1,
                loc: Loc {
                    seg: 1,
                    offset: uid,
                    len: 4,
                },
                email_id: u64::from(uid) * 10,
            });
        }
        a.mailboxes.push(inbox);
        let mut archive = Mailbox::new(1, "Archive", 9, 0);
        archive.uidnext = 20;
        archive.keywords = vec!["$Other".into()];
        a.mailboxes.push(archive);
        a
    }

    #[test]
    fn move_links_with_new_uids_keywords_and_an_expunge() {
        let mut a = account();
        // UID 4 is gone: left out.
        let p = plan(&mut a, 0, &[5, 4, 3], "Archive", true).unwrap();
        assert_eq!((p.dest, p.validity), (1, 9));
        assert_eq!(p.copyuid(), (vec![5, 3], vec![20, 21]));
        // $Work gets bit 1 in Archive; EMAILIDs go along.
        assert_eq!(p.new_keywords, vec![(1, "$Work".to_string())]);
        assert_eq!(
            p.links
                .iter()
                .map(|l| (l.keywords, l.email_id))
                .collect::<Vec<_>>(),
            vec![(2, 50), (0, 30)]
        );
        assert!(p.expunge_modseq.is_some());
        let ops = ops("a@x", &p);
        assert_eq!(ops.len(), 4);
        assert!(matches!(&ops[3], Op::Expunge { mailbox: 0, uids, .. } if uids == &vec![3, 5]));
        // A copy expunges nothing; an unknown destination plans nothing.
        let p = plan(&mut a, 0, &[3], "Archive", false).unwrap();
        assert_eq!((p.copyuid(), p.expunge_modseq), ((vec![3], vec![22]), None));
        assert_eq!(plan(&mut a, 0, &[3], "Nowhere", false), None);
    }
}
