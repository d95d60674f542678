//! IMAP commands over an account's mailbox list, without I/O: LIST (RFC
//! 3501 6.3.8, RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154
//! SPECIAL-USE), LSUB, STATUS items, and the rules for mailbox names in
//! both IMAP4rev1 (modified UTF-7) and IMAP4rev2 (UTF-8) sessions. Each
//! takes the account's index and writes the untagged responses; the runtime
//! supplies the account and the per-mailbox \Recent count (which depends on
//! the shard's claims) and writes the tagged status.
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::imap::{list_match, lsub_matches, DELIMITER};
use crate::protocol::imap::encode;
use crate::protocol::imap::{mutf7, ListCommand, ListReturn, ListSelect, StatusItem};
use crate::storage::index::{flag, special, Account, Mailbox};

/// A stored (modified UTF-7) mailbox name as a session shows it: UTF-8 to
/// an IMAP4rev2 session (RFC 9051 section 5.1), as stored to IMAP4rev1.
/// A name stored before names were checked may not be modified UTF-7: one
/// in UTF-8 is shown as it is to rev2 and encoded for rev1, anything else
/// as it is ([`legacy_name`] finds them again).
pub fn shown(rev2: bool, stored: &str) -> Cow<'_, str> {
    if !stored.contains('&') && stored.is_ascii() {
        return Cow::Borrowed(stored);
    }
    match (rev2, mutf7::decode(stored.as_bytes())) {
        (true, Some(s)) => Cow::Owned(s),
        (false, None) if !stored.is_ascii() => Cow::Owned(mutf7::encode(stored)),
        _ => Cow::Borrowed(stored),
    }
}

/// The other stored name a client's `name` may mean, for a mailbox
/// stored before names were checked (see [`shown`]): for rev2 the name as
/// given, for rev1 the UTF-8 it decodes to.
pub fn legacy_name(rev2: bool, raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    match rev2 {
        true => (s.contains('&') || !s.is_ascii()).then(|| s.to_string()),
        false => mutf7::decode(raw).filter(|u| u != s),
    }
}

/// The stored form of a mailbox name a client gave: an IMAP4rev1 session
/// names mailboxes in modified UTF-7 already (RFC 3501 5.1.3), the form the
/// store keeps; an IMAP4rev2 session in UTF-8 (RFC 9051 5.1), which is
/// encoded. None: not UTF-8.
pub fn stored_name(rev2: bool, raw: &[u8]) -> Option<Cow<'_, str>> {
    let s = std::str::from_utf8(raw).ok()?;
    Some(if rev2 && (s.contains('&') || !s.is_ascii()) {
        Cow::Owned(mutf7::encode(s))
    } else {
        Cow::Borrowed(s)
    })
}

/// Longest mailbox name (stored form) a client may create or subscribe to.
pub const NAME_MAX: usize = 255;

/// A stored name we accept for a new mailbox (CREATE, RENAME's target),
/// without trailing delimiters: canonical modified UTF-7 (RFC 3501 5.1.3),
/// so that every name has exactly one UTF-8 form, and that form Net-Unicode
/// (RFC 9051 5.1, RFC 5198: NFC, no control characters, no line or
/// paragraph separators), without wildcards, empty hierarchy levels, or
/// more than 255 octets.
pub fn new_name(stored: &str) -> Option<String> {
    let trimmed = stored.trim_end_matches(DELIMITER as char);
    if trimmed.is_empty()
        || stored.len() > NAME_MAX
        || trimmed.split(DELIMITER as char).any(|p| p.is_empty())
    {
        return None;
    }
    let utf8 = mutf7::decode(trimmed.as_bytes())?;
    let refused = |c: char| c.is_control() || matches!(c, '*' | '%' | '\u{2028}' | '\u{2029}');
    if utf8.chars().any(refused) || !unicode_normalization::is_nfc(&utf8) {
        return None;
    }
    Some(trimmed.to_string())
}

/// The special-use code of a CREATE (USE (...)) attribute (RFC 6154 5.2).
pub fn special_use_code(attr: &[u8]) -> Option<u8> {
    Some(match attr.to_ascii_lowercase().as_slice() {
        b"\\sent" => special::SENT,
        b"\\drafts" => special::DRAFTS,
        b"\\trash" => special::TRASH,
        b"\\junk" => special::JUNK,
        b"\\archive" => special::ARCHIVE,
        _ => return None,
    })
}

fn special_use_name(code: u8) -> Option<&'static str> {
    Some(special::name(code)).filter(|n| !n.is_empty())
}

/// STATUS values of a mailbox (RFC 3501 6.3.10, RFC 7162 HIGHESTMODSEQ,
/// RFC 8438 SIZE, RFC 9051 DELETED, RFC 9208 DELETED-STORAGE).
pub fn status_items(m: &Mailbox, items: &[StatusItem], recent: u64) -> Vec<(StatusItem, u64)> {
    let deleted = || m.messages.iter().filter(|e| e.flags & flag::DELETED != 0);
    items
        .iter()
        .map(|i| {
            let v = match i {
                StatusItem::Messages => m.messages.len() as u64,
                StatusItem::Recent => recent,
                StatusItem::UidNext => u64::from(m.uidnext),
                StatusItem::UidValidity => u64::from(m.uidvalidity),
                StatusItem::Unseen => m
                    .messages
                    .iter()
                    .filter(|e| e.flags & flag::SEEN == 0)
                    .count() as u64,
                StatusItem::HighestModSeq => m.reported_modseq(),
                StatusItem::Size => m.size_octets(),
                StatusItem::Deleted => deleted().count() as u64,
                StatusItem::DeletedStorage => deleted().map(|e| u64::from(e.loc.len)).sum(),
                StatusItem::MailboxId => encode::mailbox_objectid(m.uidvalidity, m.id),
            };
            (*i, v)
        })
        .collect()
}

struct ListEntry {
    name: String,
    exists: bool,
    children: bool,
    special: u8,
}

fn inbox_first(a: &str, b: &str) -> std::cmp::Ordering {
    (!a.eq_ignore_ascii_case("INBOX"), a).cmp(&(!b.eq_ignore_ascii_case("INBOX"), b))
}

/// Every mailbox plus implied parents ("a" for "a/b"), sorted, INBOX first.
fn list_entries(a: &Account) -> Vec<ListEntry> {
    let mut names: Vec<(String, bool, u8)> = a
        .mailboxes
        .iter()
        .map(|m| (m.name.clone(), true, m.special_use))
        .collect();
    let existing: HashSet<String> = names.iter().map(|n| n.0.clone()).collect();
    let mut implied = HashSet::new();
    for (n, _, _) in &names {
        let mut prefix = String::new();
        let parts: Vec<&str> = n.split(DELIMITER as char).collect();
        for p in &parts[..parts.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push(DELIMITER as char);
            }
            prefix.push_str(p);
            if !existing.contains(&prefix) {
                implied.insert(prefix.clone());
            }
        }
    }
    names.extend(implied.into_iter().map(|n| (n, false, special::NONE)));
    names.sort_by(|a, b| inbox_first(&a.0, &b.0));
    let all: Vec<String> = names.iter().map(|n| n.0.clone()).collect();
    names
        .into_iter()
        .map(|(name, exists, special)| {
            let prefix = format!("{name}{}", DELIMITER as char);
            let children = all.iter().any(|o| o.starts_with(&prefix));
            ListEntry {
                name,
                exists,
                children,
                special,
            }
        })
        .collect()
}

/// Subscriptions whose mailbox does not exist, and the superiors of those
/// that exist nowhere either, as entries that do not exist; all entries
/// sorted again (INBOX first).
fn add_subscribed_entries(entries: &mut Vec<ListEntry>, subs: &HashSet<&str>) {
    let mut missing: Vec<String> = Vec::new();
    for s in subs {
        let mut name = *s;
        loop {
            if !entries.iter().any(|e| e.name == name) && !missing.iter().any(|m| m == name) {
                missing.push(name.to_string());
            }
            match name.rfind(DELIMITER as char) {
                Some(i) => name = &name[..i],
                None => break,
            }
        }
    }
    for name in missing {
        let prefix = format!("{name}{}", DELIMITER as char);
        let children = entries
            .iter()
            .any(|e| e.exists && e.name.starts_with(&prefix));
        entries.push(ListEntry {
            name,
            exists: false,
            children,
            special: special::NONE,
        });
    }
    entries.sort_by(|a, b| inbox_first(&a.name, &b.name));
}

/// LIST over account `a`: the untagged LIST (and, with RETURN (STATUS),
/// STATUS) responses into `out`. `recent`: a mailbox's \Recent count as
/// this session would report it. Err: the text of a BAD answer (nothing
/// was written).
pub fn list(
    cmd: &ListCommand<'_>,
    a: &Account,
    rev2: bool,
    recent: &dyn Fn(&Mailbox) -> u64,
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    let mut subscribed_only = false;
    let mut special_only = false;
    let mut recursive = false;
    for s in &cmd.selection {
        match s {
            ListSelect::Subscribed => subscribed_only = true,
            ListSelect::SpecialUse => special_only = true,
            ListSelect::RecursiveMatch => recursive = true,
            ListSelect::Remote => {}
            // RFC 5258 3.1: an unrecognized selection option is BAD.
            ListSelect::Other(_) => return Err("Unknown LIST selection option"),
        }
    }
    // RFC 5258 3.1: RECURSIVEMATCH alone (or with REMOTE only) is BAD.
    if recursive && !subscribed_only && !special_only {
        return Err("RECURSIVEMATCH needs another selection option");
    }
    let mut ret_subscribed = subscribed_only;
    let mut ret_status = None;
    for r in &cmd.returns {
        match r {
            ListReturn::Subscribed => ret_subscribed = true,
            ListReturn::Children | ListReturn::SpecialUse => {}
            ListReturn::Status(items) => ret_status = Some(&items[..]),
            // RFC 5258 3.2: an unrecognized return option is BAD as well.
            ListReturn::Other(_) => return Err("Unknown LIST return option"),
        }
    }
    if cmd.patterns.len() == 1 && cmd.patterns[0].is_empty() && !cmd.extended {
        // RFC 3501 6.3.8: an empty pattern asks for the delimiter.
        encode::write_list(out, false, &["\\Noselect"], Some(DELIMITER), b"");
        return Ok(());
    }
    let mut entries = list_entries(a);
    let subs: HashSet<&str> = a.subscriptions.iter().map(String::as_str).collect();
    if subscribed_only {
        // RFC 5258 3.1: SUBSCRIBED lists subscriptions whether or not the
        // mailbox exists (those get \NonExistent), and RECURSIVEMATCH may
        // name their superiors, which need not exist either.
        add_subscribed_entries(&mut entries, &subs);
    }
    // A mailbox is returned when it matches one of the patterns (each
    // pattern on its own, RFC 5258 3) and every selection criterion.
    // Patterns are in the session's form of names (UTF-8 for IMAP4rev2).
    let patterns: Vec<Vec<u8>> = cmd
        .patterns
        .iter()
        .map(|p| [&cmd.reference[..], &p[..]].concat())
        .collect();
    let matched = |name: &str| {
        let name = shown(rev2, name);
        patterns.iter().any(|p| list_match(p, name.as_bytes()))
    };
    let selected = |e: &ListEntry| {
        (!subscribed_only || subs.contains(e.name.as_str()))
            && (!special_only || e.special != special::NONE)
    };
    for e in &entries {
        if !matched(&e.name) {
            continue;
        }
        // RFC 5258 3.5 (RECURSIVEMATCH): a mailbox matching the pattern
        // whose descendants match the selection criteria gets CHILDINFO,
        // returned even if it does not match them itself; not when all of
        // those descendants are returned anyway (redundant).
        let childinfo = recursive && subscribed_only && {
            let prefix = format!("{}{}", e.name, DELIMITER as char);
            entries
                .iter()
                .any(|d| d.name.starts_with(&prefix) && selected(d) && !matched(&d.name))
        };
        if !selected(e) && !childinfo {
            continue;
        }
        let mut attrs: Vec<&str> = Vec::new();
        if !e.exists {
            attrs.push(if cmd.extended {
                "\\NonExistent"
            } else {
                "\\Noselect"
            });
        }
        attrs.push(if e.children {
            "\\HasChildren"
        } else {
            "\\HasNoChildren"
        });
        if let Some(s) = special_use_name(e.special) {
            attrs.push(s);
        }
        if ret_subscribed && subs.contains(e.name.as_str()) {
            attrs.push("\\Subscribed");
        }
        let info: &[&str] = if childinfo { &["SUBSCRIBED"] } else { &[] };
        let name = shown(rev2, &e.name);
        encode::write_list_extended(out, &attrs, Some(DELIMITER), name.as_bytes(), info);
        // RFC 5819 section 2: a STATUS for each selectable mailbox listed.
        if let Some(items) = ret_status {
            if let Some(m) = a.mailbox_by_name(&e.name).filter(|_| e.exists) {
                let values = status_items(m, items, recent(m));
                encode::write_status_data(out, name.as_bytes(), &values);
            }
        }
    }
    Ok(())
}

/// LSUB (RFC 3501 6.3.9) over account `a`'s subscriptions.
pub fn lsub(reference: &[u8], pattern: &[u8], a: &Account, rev2: bool, out: &mut Vec<u8>) {
    let pat = [reference, pattern].concat();
    let subs: Vec<String> = a
        .subscriptions
        .iter()
        .map(|n| shown(rev2, n).into_owned())
        .collect();
    // The stored name behind each shown one (the first, should two show
    // the same), found once instead of converting every name per match.
    let mut stored_of: HashMap<&str, &str> = HashMap::with_capacity(subs.len());
    for (shown_name, stored) in subs.iter().zip(&a.subscriptions) {
        stored_of.entry(shown_name).or_insert(stored);
    }
    for (name, implied) in lsub_matches(&pat, &subs) {
        // \Noselect: a superior that is not subscribed itself, or a
        // subscription whose mailbox does not exist.
        let exists = stored_of
            .get(name.as_str())
            .is_some_and(|s| a.mailbox_by_name(s).is_some());
        let attrs: &[&str] = if implied || !exists {
            &["\\Noselect"]
        } else {
            &[]
        };
        encode::write_list(out, true, attrs, Some(DELIMITER), name.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::imap::{parse_command, CommandBody};

    fn account(names: &[&str], subs: &[&str]) -> Account {
        let mut a = Account::new("u@example.test");
        for (i, n) in names.iter().enumerate() {
            let su = if *n == "Sent" {
                special::SENT
            } else {
                special::NONE
            };
            a.mailboxes
                .push(Mailbox::new(i as u32, n, 7 + i as u32, su));
        }
        a.subscriptions = subs.iter().map(|s| s.to_string()).collect();
        a
    }

    /// Run a LIST or LSUB command line; the untagged lines, or the BAD text.
    fn run(a: &Account, rev2: bool, line: &str) -> Result<Vec<String>, &'static str> {
        let input = format!("t {line}\r\n");
        let cmd = parse_command(input.as_bytes()).expect("parses");
        let mut out = Vec::new();
        match &cmd.body {
            CommandBody::List(l) => list(l, a, rev2, &|_| 0, &mut out)?,
            CommandBody::Lsub { reference, pattern } => lsub(reference, pattern, a, rev2, &mut out),
            other => panic!("{other:?}"),
        }
        let text = String::from_utf8(out).expect("UTF-8");
        Ok(text.lines().map(str::to_string).collect())
    }

    #[test]
    fn rfc_5258_selection_and_return_options() {
        // RFC 5258 section 5, examples 2 and 3 (with our delimiter).
        let a = account(
            &[
                "INBOX",
                "Fruit",
                "Fruit/Apple",
                "Fruit/Banana",
                "Tofu",
                "Vegetable",
                "Vegetable/Broccoli",
                "Vegetable/Corn",
            ],
            &[
                "Fruit/Banana",
                "Fruit/Peach",
                "Vegetable",
                "Vegetable/Broccoli",
            ],
        );
        assert_eq!(
            run(&a, false, r#"LIST (SUBSCRIBED) "" "*""#).unwrap(),
            vec![
                r#"* LIST (\HasNoChildren \Subscribed) "/" Fruit/Banana"#,
                r#"* LIST (\NonExistent \HasNoChildren \Subscribed) "/" Fruit/Peach"#,
                r#"* LIST (\HasChildren \Subscribed) "/" Vegetable"#,
                r#"* LIST (\HasNoChildren \Subscribed) "/" Vegetable/Broccoli"#,
            ]
        );
        // RECURSIVEMATCH: Fruit has subscribed children that "%" doesn't reach.
        assert_eq!(
            run(&a, false, r#"LIST (SUBSCRIBED RECURSIVEMATCH) "" "%""#).unwrap(),
            vec![
                r#"* LIST (\HasChildren) "/" Fruit ("CHILDINFO" ("SUBSCRIBED"))"#,
                r#"* LIST (\HasChildren \Subscribed) "/" Vegetable ("CHILDINFO" ("SUBSCRIBED"))"#,
            ]
        );
        assert_eq!(
            run(
                &a,
                false,
                r#"LIST "" "Fruit/%" RETURN (STATUS (MESSAGES UIDVALIDITY))"#
            )
            .unwrap(),
            vec![
                r#"* LIST (\HasNoChildren) "/" Fruit/Apple"#,
                "* STATUS Fruit/Apple (MESSAGES 0 UIDVALIDITY 9)",
                r#"* LIST (\HasNoChildren) "/" Fruit/Banana"#,
                "* STATUS Fruit/Banana (MESSAGES 0 UIDVALIDITY 10)",
            ]
        );
        assert_eq!(
            run(&a, false, r#"LIST (SPECIAL-USE) "" "*""#).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            run(&a, false, r#"LIST "" """#).unwrap(),
            vec![r#"* LIST (\Noselect) "/" """#]
        );
        assert_eq!(
            run(&a, false, r#"LIST (RECURSIVEMATCH) "" "*""#),
            Err("RECURSIVEMATCH needs another selection option")
        );
        assert_eq!(
            run(&a, false, r#"LIST (FOO) "" "*""#),
            Err("Unknown LIST selection option")
        );
        assert_eq!(
            run(&a, false, r#"LIST "" "*" RETURN (FOO)"#),
            Err("Unknown LIST return option")
        );
    }

    #[test]
    fn implied_parents_and_special_use() {
        let a = account(&["INBOX", "Sent", "a/b/c"], &[]);
        assert_eq!(
            run(&a, false, r#"LIST "" "*""#).unwrap(),
            vec![
                r#"* LIST (\HasNoChildren) "/" INBOX"#,
                r#"* LIST (\HasNoChildren \Sent) "/" Sent"#,
                r#"* LIST (\Noselect \HasChildren) "/" a"#,
                r#"* LIST (\Noselect \HasChildren) "/" a/b"#,
                r#"* LIST (\HasNoChildren) "/" a/b/c"#,
            ]
        );
        assert_eq!(
            run(&a, false, r#"LIST "" ("a/%" "S*")"#).unwrap(),
            vec![
                r#"* LIST (\HasNoChildren \Sent) "/" Sent"#,
                r#"* LIST (\NonExistent \HasChildren) "/" a/b"#,
            ]
        );
    }

    #[test]
    fn rev2_sessions_list_utf8_names() {
        let a = account(
            &["INBOX", "Entw&APw-rfe", "R&-D", "&U,BTFw-/&ZeVnLIqe-"],
            &["R&-D", "&U,BTFw-/&ZeVnLIqe-"],
        );
        assert_eq!(
            run(&a, true, r#"LIST "" "*""#).unwrap(),
            vec![
                r#"* LIST (\HasNoChildren) "/" INBOX"#,
                r#"* LIST (\Noselect \HasChildren) "/" "台北""#,
                r#"* LIST (\HasNoChildren) "/" "台北/日本語""#,
                r#"* LIST (\HasNoChildren) "/" "Entwürfe""#,
                r#"* LIST (\HasNoChildren) "/" R&D"#,
            ]
        );
        // Patterns are matched against the UTF-8 form.
        assert_eq!(run(&a, true, r#"LIST "" "Entw%rfe""#).unwrap().len(), 1);
        assert_eq!(run(&a, true, r#"LIST "" "台%""#).unwrap().len(), 1);
        assert_eq!(run(&a, false, r#"LIST "" "Entw%rfe""#).unwrap().len(), 1);
        assert_eq!(
            run(&a, true, r#"LSUB "" "*""#).unwrap(),
            vec![r#"* LSUB () "/" R&D"#, r#"* LSUB () "/" "台北/日本語""#]
        );
        // RFC 3501 6.3.9: "%" names an unsubscribed superior \Noselect.
        assert_eq!(
            run(&a, true, r#"LSUB "" "%""#).unwrap(),
            vec![r#"* LSUB () "/" R&D"#, r#"* LSUB (\Noselect) "/" "台北""#]
        );
        assert_eq!(
            run(&a, false, r#"LSUB "" "%""#).unwrap(),
            vec![
                r#"* LSUB () "/" R&-D"#,
                r#"* LSUB (\Noselect) "/" &U,BTFw-"#
            ]
        );
    }

    #[test]
    fn names_in_and_out() {
        assert_eq!(
            stored_name(true, "Entwürfe".as_bytes()).as_deref(),
            Some("Entw&APw-rfe")
        );
        assert_eq!(stored_name(true, b"R&D").as_deref(), Some("R&-D"));
        assert_eq!(stored_name(false, b"R&-D").as_deref(), Some("R&-D"));
        assert_eq!(stored_name(true, b"\xff"), None);
        assert_eq!(shown(true, "R&-D"), "R&D");
        assert_eq!(shown(false, "R&-D"), "R&-D");
        // Not modified UTF-7 (stored before names were checked): UTF-8 to
        // rev2, modified UTF-7 to rev1, and found again from either.
        assert_eq!(shown(true, "a&b"), "a&b");
        assert_eq!(shown(false, "a&b"), "a&b");
        assert_eq!(shown(true, "Entwürfe"), "Entwürfe");
        assert_eq!(shown(false, "Entwürfe"), "Entw&APw-rfe");
        assert_eq!(
            legacy_name(false, b"Entw&APw-rfe").as_deref(),
            Some("Entwürfe")
        );
        assert_eq!(
            legacy_name(true, "Entwürfe".as_bytes()).as_deref(),
            Some("Entwürfe")
        );
        assert_eq!(legacy_name(true, b"a&b").as_deref(), Some("a&b"));
        assert_eq!(legacy_name(false, b"INBOX"), None);
        assert_eq!(new_name("a/b//").as_deref(), Some("a/b"));
        assert_eq!(new_name("Entw&APw-rfe").as_deref(), Some("Entw&APw-rfe"));
        for bad in [
            "",
            "/a",
            "a//b",
            "a*",
            "a%b",
            "a\u{1}",
            "Entwürfe",
            "a&b",
            "&AGE-",
        ] {
            assert_eq!(new_name(bad), None, "{bad:?}");
        }
        assert_eq!(new_name(&"x".repeat(256)), None);
    }
}
