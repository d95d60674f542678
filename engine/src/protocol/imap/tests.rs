//! Known-answer tests built from the examples of RFC 3501 and of the
//! extension RFCs, plus property tests over the whole framing + parsing path.

use std::borrow::Cow;

use proptest::prelude::*;

use super::encode::*;
use super::*;

/// Frame `input` exactly as a server would (answering continuations), check
/// it is one command with the expected tag, and return its body.
fn parsed(input: &str) -> CommandBody<'_> {
    let bytes = input.as_bytes();
    let mut framer = Framer::new(FramingLimits::AUTHENTICATED);
    loop {
        match framer.feed(bytes) {
            Frame::Continue { .. } => continue,
            Frame::Command(n) => {
                assert_eq!(n, bytes.len(), "framing of {input:?}");
                break;
            }
            other => panic!("framing of {input:?}: {other:?}"),
        }
    }
    let cmd = parse_command(bytes).unwrap_or_else(|e| panic!("{input:?}: {e}"));
    let expected_tag = &input[..input.find(' ').unwrap()];
    assert_eq!(cmd.tag, expected_tag.as_bytes());
    cmd.body
}

fn rejected(input: &str) -> ParseError<'_> {
    parse_command(input.as_bytes()).expect_err(input)
}

fn b(s: &str) -> Cow<'_, [u8]> {
    Cow::Borrowed(s.as_bytes())
}

fn mb(s: &str) -> Mailbox<'_> {
    Mailbox::Other(b(s))
}

fn set(s: &str) -> SequenceArg {
    SequenceArg::Set(SequenceSet::parse(s.as_bytes()).unwrap())
}

#[test]
fn rfc3501_any_and_not_authenticated_state() {
    assert_eq!(parsed("abcd CAPABILITY\r\n"), CommandBody::Capability);
    assert_eq!(parsed("a002 NOOP\r\n"), CommandBody::Noop);
    assert_eq!(parsed("A023 LOGOUT\r\n"), CommandBody::Logout);
    assert_eq!(parsed("a001 STARTTLS\r\n"), CommandBody::StartTls);
    assert_eq!(
        parsed("A001 AUTHENTICATE GSSAPI\r\n"),
        CommandBody::Authenticate {
            mechanism: b"GSSAPI",
            initial_response: None
        }
    );
    assert_eq!(
        parsed("a001 LOGIN SMITH SESAME\r\n"),
        CommandBody::Login {
            username: b("SMITH"),
            password: b("SESAME")
        }
    );
    // Quoted strings with escapes are unescaped; literals borrowed.
    assert_eq!(
        parsed("a LOGIN \"fred\\\\x\" {5}\r\np\"a s\r\n"),
        CommandBody::Login {
            username: Cow::Owned(b"fred\\x".to_vec()),
            password: b("p\"a s")
        }
    );
    // RFC 4959 SASL-IR, and "=" for an empty initial response.
    assert_eq!(
        parsed("a AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n"),
        CommandBody::Authenticate {
            mechanism: b"PLAIN",
            initial_response: Some(b"dGVzdAB0ZXN0AHRlc3Q=")
        }
    );
    assert_eq!(
        parsed("a AUTHENTICATE EXTERNAL =\r\n"),
        CommandBody::Authenticate {
            mechanism: b"EXTERNAL",
            initial_response: Some(b"")
        }
    );
    assert_eq!(parse_sasl_response(b"*\r\n"), Some(SaslResponse::Cancel));
    assert_eq!(
        parse_sasl_response(b"AGZvbwBiYXI=\r\n"),
        Some(SaslResponse::Data(b"AGZvbwBiYXI="))
    );
    assert_eq!(parse_sasl_response(b"not base64!\r\n"), None);
}

#[test]
fn rfc3501_authenticated_state() {
    assert_eq!(
        parsed("A142 SELECT INBOX\r\n"),
        CommandBody::Select {
            mailbox: Mailbox::Inbox,
            condstore: false,
            qresync: None,
        }
    );
    assert_eq!(
        parsed("A142 SELECT \"inBox\"\r\n"),
        CommandBody::Select {
            mailbox: Mailbox::Inbox,
            condstore: false,
            qresync: None,
        }
    );
    assert_eq!(
        parsed("A932 EXAMINE blurdybloop\r\n"),
        CommandBody::Examine {
            mailbox: mb("blurdybloop"),
            condstore: false,
            qresync: None,
        }
    );
    // RFC 7162 section 3.1.8.
    assert_eq!(
        parsed("a103 SELECT Mailbox (CONDSTORE)\r\n"),
        CommandBody::Select {
            mailbox: mb("Mailbox"),
            condstore: true,
            qresync: None,
        }
    );
    assert_eq!(
        parsed("A003 CREATE owatagusiam/\r\n"),
        CommandBody::Create {
            mailbox: mb("owatagusiam/"),
            special_use: vec![]
        }
    );
    // RFC 6154 section 5.2.
    assert_eq!(
        parsed("t1 CREATE \"Important Messages\" (USE (\\Important))\r\n"),
        CommandBody::Create {
            mailbox: mb("Important Messages"),
            special_use: vec![b"\\Important"]
        }
    );
    assert_eq!(
        parsed("A683 DELETE blurdybloop\r\n"),
        CommandBody::Delete {
            mailbox: mb("blurdybloop")
        }
    );
    assert_eq!(
        parsed("A683 RENAME blurdybloop sarasoop\r\n"),
        CommandBody::Rename {
            from: mb("blurdybloop"),
            to: mb("sarasoop")
        }
    );
    assert_eq!(
        parsed("A002 SUBSCRIBE #news.comp.mail.mime\r\n"),
        CommandBody::Subscribe {
            mailbox: mb("#news.comp.mail.mime")
        }
    );
    assert_eq!(
        parsed("A002 UNSUBSCRIBE #news.comp.mail.mime\r\n"),
        CommandBody::Unsubscribe {
            mailbox: mb("#news.comp.mail.mime")
        }
    );
    assert_eq!(
        parsed("A002 LSUB \"#news.\" \"comp.mail.*\"\r\n"),
        CommandBody::Lsub {
            reference: b("#news."),
            pattern: b("comp.mail.*")
        }
    );
    assert_eq!(
        parsed("A042 STATUS blurdybloop (UIDNEXT MESSAGES)\r\n"),
        CommandBody::Status {
            mailbox: mb("blurdybloop"),
            items: vec![StatusItem::UidNext, StatusItem::Messages]
        }
    );
    assert_eq!(
        parsed("A043 STATUS INBOX (RECENT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE)\r\n"),
        CommandBody::Status {
            mailbox: Mailbox::Inbox,
            items: vec![
                StatusItem::Recent,
                StatusItem::UidValidity,
                StatusItem::Unseen,
                StatusItem::HighestModSeq,
                StatusItem::Size
            ]
        }
    );
    assert_eq!(parsed("a NAMESPACE\r\n"), CommandBody::Namespace);
    assert_eq!(parsed("a002 IDLE\r\n"), CommandBody::Idle);
    assert!(is_idle_done(b"DONE\r\n") && is_idle_done(b"done\n") && !is_idle_done(b"DONE NOW\r\n"));
    assert_eq!(
        parsed("t2 ENABLE CONDSTORE X-GOOD-IDEA\r\n"),
        CommandBody::Enable(vec![b"CONDSTORE", b"X-GOOD-IDEA"])
    );
    assert_eq!(parsed("a ID NIL\r\n"), CommandBody::Id(None));
    assert_eq!(
        parsed("a023 ID (\"name\" \"sodr\" \"version\" \"19.34\" \"os\" NIL)\r\n"),
        CommandBody::Id(Some(vec![
            (b("name"), Some(b("sodr"))),
            (b("version"), Some(b("19.34"))),
            (b("os"), None)
        ]))
    );
    // RFC 2971 3.3 bounds: 30 pairs, 30-octet fields, 1024-octet values.
    let id = |pairs: usize, field: usize, value: usize| {
        let list: Vec<String> = (0..pairs)
            .map(|i| {
                format!(
                    "\"{}{i:02}\" \"{}\"",
                    "f".repeat(field - 2),
                    "v".repeat(value)
                )
            })
            .collect();
        format!("a ID ({})\r\n", list.join(" "))
    };
    let ok = id(30, 30, 1024);
    assert!(matches!(parsed(&ok), CommandBody::Id(Some(p)) if p.len() == 30));
    assert!(rejected(&id(31, 30, 1024))
        .reason
        .contains("30 field-value pairs"));
    assert!(rejected(&id(1, 31, 10)).reason.contains("field"));
    assert!(rejected(&id(1, 10, 1025)).reason.contains("value"));
}

#[test]
fn rfc3501_list_and_rfc5258_extended_list() {
    let basic = |reference: &str, pattern: &str| {
        CommandBody::List(ListCommand {
            selection: vec![],
            reference: Cow::Owned(reference.as_bytes().to_vec()),
            patterns: vec![Cow::Owned(pattern.as_bytes().to_vec())],
            returns: vec![],
            extended: false,
        })
    };
    assert_eq!(parsed("A101 LIST \"\" \"\"\r\n"), basic("", ""));
    assert_eq!(
        parsed("A102 LIST #news.comp.mail.misc \"\"\r\n"),
        basic("#news.comp.mail.misc", "")
    );
    assert_eq!(parsed("A202 LIST ~/Mail/ %\r\n"), basic("~/Mail/", "%"));
    assert_eq!(parsed("A203 LIST \"\" foo/*]\r\n"), basic("", "foo/*]"));
    // RFC 5258 section 5 examples.
    assert_eq!(
        parsed("A02 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"INBOX\" Drafts \"Sent/%\") RETURN (CHILDREN SPECIAL-USE)\r\n"),
        CommandBody::List(ListCommand {
            selection: vec![ListSelect::Subscribed, ListSelect::RecursiveMatch],
            reference: b(""),
            patterns: vec![b("INBOX"), b("Drafts"), b("Sent/%")],
            returns: vec![ListReturn::Children, ListReturn::SpecialUse],
            extended: true,
        })
    );
    // RFC 5819 section 2.
    assert_eq!(
        parsed("A01 LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN))\r\n"),
        CommandBody::List(ListCommand {
            selection: vec![],
            reference: b(""),
            patterns: vec![b("%")],
            returns: vec![ListReturn::Status(vec![
                StatusItem::Messages,
                StatusItem::Unseen
            ])],
            extended: true,
        })
    );
    assert_eq!(
        parsed("A03 LIST () \"\" \"%\" RETURN ()\r\n"),
        CommandBody::List(ListCommand {
            selection: vec![],
            reference: b(""),
            patterns: vec![b("%")],
            returns: vec![],
            extended: true,
        })
    );
}

#[test]
fn rfc3501_append() {
    // RFC 3501 section 6.3.11 (the message is 310 octets with CRLF endings).
    let msg = "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n\
From: Fred Foobar <foobar@Blurdybloop.COM>\r\n\
Subject: afternoon meeting\r\n\
To: mooch@owatagu.siam.edu\r\n\
Message-Id: <B27397-0100000@Blurdybloop.COM>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\
\r\n\
Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n";
    assert_eq!(msg.len(), 310);
    let cmd = format!("A003 APPEND saved-messages (\\Seen) {{310}}\r\n{msg}\r\n");
    assert_eq!(
        parsed(&cmd),
        CommandBody::Append {
            mailbox: mb("saved-messages"),
            flags: vec![Flag::Seen],
            date: None,
            message: msg.as_bytes(),
            binary: false,
        }
    );
    // RFC 3516 section 4.4: a literal8 message.
    assert_eq!(
        parsed("A5 APPEND x ~{3}\r\na\0c\r\n"),
        CommandBody::Append {
            mailbox: mb("x"),
            flags: vec![],
            date: None,
            message: b"a\0c",
            binary: true,
        }
    );
    let cmd = format!(
        "A004 APPEND INBOX (\\Seen $Work) \" 7-Feb-1994 21:52:25 -0800\" {{310+}}\r\n{msg}\r\n"
    );
    let CommandBody::Append {
        mailbox,
        flags,
        date,
        message,
        ..
    } = parsed(&cmd)
    else {
        panic!()
    };
    assert_eq!(mailbox, Mailbox::Inbox);
    assert_eq!(flags, vec![Flag::Seen, Flag::Keyword(b"$Work")]);
    assert_eq!(date.unwrap().unix_secs(), 760_686_745);
    assert_eq!(message, msg.as_bytes());
    assert_eq!(
        rejected("a APPEND x {3}\r\nabc {3}\r\ndef\r\n").reason,
        "MULTIAPPEND not supported"
    );
    assert_eq!(
        rejected("a APPEND x \"bad date\" {3}\r\nabc\r\n").reason,
        "invalid date-time"
    );
}

#[test]
fn rfc3501_selected_state() {
    assert_eq!(parsed("FXXZ CHECK\r\n"), CommandBody::Check);
    assert_eq!(parsed("A341 CLOSE\r\n"), CommandBody::Close);
    assert_eq!(parsed("A342 UNSELECT\r\n"), CommandBody::Unselect);
    assert_eq!(parsed("A202 EXPUNGE\r\n"), CommandBody::Expunge);
    assert_eq!(
        parsed("A003 UID EXPUNGE 3000:3002\r\n"),
        CommandBody::UidExpunge {
            set: set("3000:3002")
        }
    );
    assert_eq!(
        parsed("A003 COPY 2:4 MEETING\r\n"),
        CommandBody::Copy {
            uid: false,
            set: set("2:4"),
            mailbox: mb("MEETING")
        }
    );
    assert_eq!(
        parsed("a UID MOVE 42:69 foo\r\n"),
        CommandBody::Move {
            uid: true,
            set: set("42:69"),
            mailbox: mb("foo")
        }
    );
    assert_eq!(
        parsed("a MOVE $ INBOX\r\n"),
        CommandBody::Move {
            uid: false,
            set: SequenceArg::Saved,
            mailbox: Mailbox::Inbox
        }
    );
    assert_eq!(
        parsed("A003 STORE 2:4 +FLAGS (\\Deleted)\r\n"),
        CommandBody::Store {
            uid: false,
            set: set("2:4"),
            mode: StoreMode::Add,
            silent: false,
            flags: vec![Flag::Deleted],
            unchanged_since: None
        }
    );
    // RFC 7162 section 3.1.3 example, and flags without parentheses.
    assert_eq!(
        parsed("d105 UID STORE 7,5,9 (UNCHANGEDSINCE 320162338) -FLAGS.SILENT \\Deleted $Junk\r\n"),
        CommandBody::Store {
            uid: true,
            set: set("7,5,9"),
            mode: StoreMode::Remove,
            silent: true,
            flags: vec![Flag::Deleted, Flag::Keyword(b"$Junk")],
            unchanged_since: Some(320_162_338)
        }
    );
    assert_eq!(
        parsed("a STORE 1 FLAGS ()\r\n"),
        CommandBody::Store {
            uid: false,
            set: set("1"),
            mode: StoreMode::Replace,
            silent: false,
            flags: vec![],
            unchanged_since: None
        }
    );
}

#[test]
fn rfc3501_fetch() {
    use FetchAttr::*;
    let fetch = |input| match parsed(input) {
        CommandBody::Fetch {
            uid,
            set,
            attrs,
            changed_since,
            ..
        } => (uid, set, attrs, changed_since),
        other => panic!("{other:?}"),
    };
    let (uid, s, attrs, cs) = fetch("A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n");
    assert!(!uid && cs.is_none());
    assert_eq!(s, set("2:4"));
    assert_eq!(
        attrs,
        vec![
            Flags,
            BodySection {
                peek: false,
                section: Section {
                    part: vec![],
                    text: Some(SectionText::HeaderFields {
                        not: false,
                        fields: vec![b("DATE"), b("FROM")]
                    })
                },
                partial: None
            }
        ]
    );
    assert_eq!(
        fetch("A999 UID FETCH 4827313:4828442 FLAGS\r\n").2,
        vec![Flags]
    );
    assert!(fetch("A999 UID FETCH 4827313:4828442 FLAGS\r\n").0);
    assert_eq!(
        fetch("a FETCH 1 ALL\r\n").2,
        vec![Flags, InternalDate, Rfc822Size, Envelope]
    );
    assert_eq!(
        fetch("a FETCH 1 FAST\r\n").2,
        vec![Flags, InternalDate, Rfc822Size]
    );
    assert_eq!(
        fetch("a FETCH 1 full\r\n").2,
        vec![Flags, InternalDate, Rfc822Size, Envelope, Body]
    );
    assert_eq!(
        fetch("a FETCH 1:* (ENVELOPE INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT BODY BODYSTRUCTURE UID MODSEQ)\r\n").2,
        vec![Envelope, InternalDate, Rfc822, Rfc822Header, Rfc822Size, Rfc822Text, Body, BodyStructure, Uid, ModSeq]
    );
    let (_, _, attrs, _) = fetch("a FETCH 1 (BODY[] BODY.PEEK[1.2.MIME]<0.100> BODY[3.HEADER.FIELDS.NOT (X-Y \"Z\")] BODY[2.TEXT] BODY[4])\r\n");
    let sections: Vec<(bool, Vec<u8>, Option<Partial>)> = attrs
        .iter()
        .map(|a| match a {
            BodySection {
                peek,
                section,
                partial,
            } => {
                let mut v = Vec::new();
                section.write(&mut v);
                (*peek, v, *partial)
            }
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        sections,
        vec![
            (false, b"".to_vec(), None),
            (
                true,
                b"1.2.MIME".to_vec(),
                Some(Partial { start: 0, len: 100 })
            ),
            (false, b"3.HEADER.FIELDS.NOT (X-Y Z)".to_vec(), None),
            (false, b"2.TEXT".to_vec(), None),
            (false, b"4".to_vec(), None),
        ]
    );
    // RFC 3516 section 4.1 / RFC 9051 6.4.5: BINARY items take part
    // numbers only.
    assert_eq!(
        fetch("a FETCH 1 (BINARY[] BINARY.PEEK[1.2]<0.10> BINARY.SIZE[3])\r\n").2,
        vec![
            Binary {
                peek: false,
                part: vec![],
                partial: None
            },
            Binary {
                peek: true,
                part: vec![1, 2],
                partial: Some(Partial { start: 0, len: 10 })
            },
            BinarySize { part: vec![3] },
        ]
    );
    for bad in [
        "a FETCH 1 BINARY[HEADER]\r\n",
        "a FETCH 1 BINARY[1.TEXT]\r\n",
        "a FETCH 1 BINARY[1.]\r\n",
        "a FETCH 1 BINARY.SIZE[1]<0.5>\r\n",
        "a FETCH 1 BINARY\r\n",
    ] {
        assert!(parse_command(bad.as_bytes()).is_err(), "{bad}");
    }
    // RFC 7162 section 3.1.4.1.
    let (uid, _, attrs, cs) = fetch("s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)\r\n");
    assert!(uid);
    assert_eq!((attrs, cs), (vec![Flags], Some(12345)));
    for bad in [
        "a FETCH 1 (ALL)\r\n",
        "a FETCH 1 BODY[MIME]\r\n",
        "a FETCH 1 BODY[1.]\r\n",
        "a FETCH 1 BODY[0]\r\n",
        "a FETCH 1 BODY[]<1.0>\r\n",
        "a FETCH 1 BODY.PEEK\r\n",
        "a FETCH 1 (FLAGS\r\n",
        "a FETCH 0 FLAGS\r\n",
    ] {
        assert!(parse_command(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn rfc3501_search() {
    use SearchKey::*;
    let search = |input| match parsed(input) {
        CommandBody::Search { uid, search } => (uid, search),
        other => panic!("{other:?}"),
    };
    let (uid, s) = search("A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n");
    assert!(!uid);
    assert_eq!(
        s,
        Search {
            charset: None,
            keys: vec![
                Flagged,
                Since(Date::parse(b"1-Feb-1994").unwrap()),
                Not(Box::new(From(b("Smith"))))
            ],
            returns: None
        }
    );
    assert_eq!(
        search("A283 SEARCH TEXT \"string not in mailbox\"\r\n")
            .1
            .keys,
        vec![Text(b("string not in mailbox"))]
    );
    // RFC 3501 section 6.4.4: a literal search string with a charset.
    let (_, s) = search("A284 SEARCH CHARSET UTF-8 TEXT {6}\r\nXXXXXX\r\n");
    assert_eq!(s.charset, Some(b("UTF-8")));
    assert_eq!(s.keys, vec![Text(b("XXXXXX"))]);
    // RFC 4731 ESEARCH.
    let (_, s) =
        search("A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n");
    assert_eq!(
        s.returns,
        Some(vec![SearchReturn::Min, SearchReturn::Count])
    );
    assert_eq!(
        search("a UID SEARCH RETURN () ALL\r\n").1.returns,
        Some(vec![SearchReturn::All])
    );
    // Every RFC 3501 key, nested lists, OR, sequence sets.
    let (uid, s) = search(
        "a UID SEARCH ALL ANSWERED BCC b BEFORE 1-Jan-2000 BODY x CC c DELETED DRAFT FLAGGED FROM f \
HEADER X-Spam yes KEYWORD $Junk LARGER 100 NEW NOT SEEN OLD ON \"2-Jan-2000\" OR RECENT (SEEN UNSEEN) \
SENTBEFORE 3-Jan-2000 SENTON 4-Jan-2000 SENTSINCE 5-Jan-2000 SMALLER 9 SUBJECT s TEXT t TO o UID 1:5 \
UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNKEYWORD $X UNSEEN 2,4:* $ MODSEQ 5\r\n",
    );
    assert!(uid);
    let d = |s: &str| Date::parse(s.as_bytes()).unwrap();
    assert_eq!(
        s.keys,
        vec![
            All,
            Answered,
            Bcc(b("b")),
            Before(d("1-Jan-2000")),
            Body(b("x")),
            Cc(b("c")),
            Deleted,
            Draft,
            Flagged,
            From(b("f")),
            Header(b("X-Spam"), b("yes")),
            Keyword(b"$Junk"),
            Larger(100),
            New,
            Not(Box::new(Seen)),
            Old,
            On(d("2-Jan-2000")),
            Or(Box::new(Recent), Box::new(And(vec![Seen, Unseen]))),
            SentBefore(d("3-Jan-2000")),
            SentOn(d("4-Jan-2000")),
            SentSince(d("5-Jan-2000")),
            Smaller(9),
            Subject(b("s")),
            Text(b("t")),
            To(b("o")),
            Uid(set("1:5")),
            Unanswered,
            Undeleted,
            Undraft,
            Unflagged,
            Unkeyword(b"$X"),
            Unseen,
            Sequence(set("2,4:*")),
            Sequence(SequenceArg::Saved),
            ModSeq {
                entry: None,
                modseq: 5
            },
        ]
    );
    // RFC 7162 section 3.1.5 example.
    let (_, s) = search("a SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338\r\n");
    assert_eq!(
        s.keys,
        vec![ModSeq {
            entry: Some((Cow::Owned(b"/flags/\\draft".to_vec()), b"all")),
            modseq: 620_162_338
        }]
    );
    // The flag's backslash unescaped, and no value after the entry type.
    let (_, s) = search("a SEARCH RETURN (ALL) 2:3 MODSEQ \"/flags/\\seen\" all\r\n");
    assert_eq!(s.returns, Some(vec![SearchReturn::All]));
    assert_eq!(
        s.keys[1],
        ModSeq {
            entry: Some((Cow::Owned(b"/flags/\\seen".to_vec()), b"all")),
            modseq: 0
        }
    );
    let (_, s) = search("a SEARCH MODSEQ \"/flags/\\Seen\" shared 7 UNSEEN\r\n");
    assert_eq!(
        s.keys,
        vec![
            ModSeq {
                entry: Some((Cow::Owned(b"/flags/\\Seen".to_vec()), b"shared")),
                modseq: 7
            },
            Unseen
        ]
    );
    assert_eq!(
        rejected("a SEARCH MODSEQ \"/flags/x\" bogus 5\r\n").reason,
        "invalid MODSEQ entry type"
    );
    assert_eq!(rejected("a SEARCH MODSEQ\r\n").reason, "expected a space");
    assert!(rejected("a SEARCH MODSEQ x\r\n").reason.contains("number"));
}

#[test]
fn parse_errors_carry_the_tag() {
    let e = rejected("a1 FROB\r\n");
    assert_eq!((e.tag, e.reason), (Some(&b"a1"[..]), "unknown command"));
    assert_eq!(rejected("+ NOOP\r\n").tag_or_star(), b"*");
    assert_eq!(rejected("\r\n").tag_or_star(), b"*");
    assert_eq!(rejected("a1\r\n").tag, None);
    assert_eq!(rejected("a2 NOOP extra\r\n").tag, Some(&b"a2"[..]));
    assert_eq!(rejected("a3 SEARCH FROB\r\n").reason, "unknown search key");
    assert_eq!(
        rejected("a4 LOGIN \"unterminated\r\n").reason,
        "invalid character in quoted string"
    );
    assert_eq!(
        rejected("a4 LOGIN \"unterminated").reason,
        "unterminated quoted string"
    );
    assert_eq!(
        rejected("a5 LOGIN {10}\r\nshort\r\n").reason,
        "literal data missing"
    );
    assert_eq!(
        rejected("a6 SELECT INBOX (UTF8)\r\n").reason,
        "unsupported SELECT parameter"
    );
    assert!(rejected("a7 LOGIN a \"b\\n\"\r\n")
        .reason
        .contains("escape"));
    // Nesting is bounded.
    let deep = format!("a8 SEARCH {}ALL{}\r\n", "(".repeat(40), ")".repeat(40));
    assert_eq!(rejected(&deep).reason, "command nested too deeply");
    let deep = format!("a9 SEARCH {}ALL\r\n", "NOT ".repeat(5000));
    assert_eq!(rejected(&deep).reason, "command nested too deeply");
    let ok = format!("a9 SEARCH {}ALL{}\r\n", "(".repeat(20), ")".repeat(20));
    assert!(parse_command(ok.as_bytes()).is_ok());
}

fn out(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut v = Vec::new();
    f(&mut v);
    String::from_utf8(v).unwrap()
}

#[test]
fn rfc3501_responses() {
    assert_eq!(
        out(|o| write_status(
            o,
            None,
            Status::Ok,
            Some(&Code::Unseen(17)),
            "Message 17 is the first unseen message"
        )),
        "* OK [UNSEEN 17] Message 17 is the first unseen message\r\n"
    );
    assert_eq!(
        out(|o| write_status(
            o,
            None,
            Status::Ok,
            Some(&Code::UidValidity(3_857_529_045)),
            "UIDs valid"
        )),
        "* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
    );
    assert_eq!(
        out(|o| write_status(
            o,
            None,
            Status::Ok,
            Some(&Code::UidNext(4392)),
            "Predicted next UID"
        )),
        "* OK [UIDNEXT 4392] Predicted next UID\r\n"
    );
    assert_eq!(
        out(|o| write_status(
            o,
            None,
            Status::Ok,
            Some(&Code::PermanentFlags(&[
                Flag::Deleted,
                Flag::Seen,
                Flag::MayCreate
            ])),
            "Limited"
        )),
        "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"
    );
    assert_eq!(
        out(|o| write_status(
            o,
            Some(b"A142"),
            Status::Ok,
            Some(&Code::ReadWrite),
            "SELECT completed"
        )),
        "A142 OK [READ-WRITE] SELECT completed\r\n"
    );
    assert_eq!(
        out(|o| write_status(
            o,
            Some(b"A932"),
            Status::Ok,
            Some(&Code::ReadOnly),
            "EXAMINE completed"
        )),
        "A932 OK [READ-ONLY] EXAMINE completed\r\n"
    );
    assert_eq!(
        out(|o| write_status(
            o,
            Some(b"A003"),
            Status::No,
            Some(&Code::TryCreate),
            "no such mailbox"
        )),
        "A003 NO [TRYCREATE] no such mailbox\r\n"
    );
    assert_eq!(
        out(|o| write_status(
            o,
            None,
            Status::Ok,
            Some(&Code::Alert),
            "System shutdown in 10 minutes"
        )),
        "* OK [ALERT] System shutdown in 10 minutes\r\n"
    );
    assert_eq!(
        out(|o| write_status(o, None, Status::Bye, None, "IMAP4rev1 Server logging out")),
        "* BYE IMAP4rev1 Server logging out\r\n"
    );
    assert_eq!(
        out(|o| write_status(
            o,
            None,
            Status::Ok,
            Some(&Code::Capability(&["IMAP4rev1", "STARTTLS", "AUTH=GSSAPI"])),
            "ready"
        )),
        "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI] ready\r\n"
    );
    // RFC 4315 section 3 examples.
    assert_eq!(
        out(|o| write_status(
            o,
            Some(b"A003"),
            Status::Ok,
            Some(&Code::AppendUid {
                validity: 38505,
                uid: 3955
            }),
            "APPEND completed"
        )),
        "A003 OK [APPENDUID 38505 3955] APPEND completed\r\n"
    );
    assert_eq!(
        out(|o| write_status(
            o,
            Some(b"A004"),
            Status::Ok,
            Some(&Code::CopyUid {
                validity: 38505,
                source: &[304, 319, 320],
                dest: &[3956, 3957, 3958]
            }),
            "Done"
        )),
        "A004 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n"
    );
    assert_eq!(
        out(|o| write_status(
            o,
            Some(b"a"),
            Status::Ok,
            Some(&Code::HighestModSeq(715_194_045_007)),
            "Highest"
        )),
        "a OK [HIGHESTMODSEQ 715194045007] Highest\r\n"
    );
    for (code, text) in [
        (Code::TooBig, "TOOBIG"),
        (Code::NonExistent, "NONEXISTENT"),
        (Code::AlreadyExists, "ALREADYEXISTS"),
        (
            Code::BadCharset(&["UTF-8", "US-ASCII"]),
            "BADCHARSET (UTF-8 US-ASCII)",
        ),
    ] {
        assert_eq!(
            out(|o| write_status(o, Some(b"t"), Status::No, Some(&code), "x")),
            format!("t NO [{text}] x\r\n")
        );
    }
    // Texts cannot break the line.
    assert_eq!(
        out(|o| write_status(o, Some(b"t"), Status::Bad, None, "a\r\nb OK")),
        "t BAD a  b OK\r\n"
    );
    assert_eq!(
        out(|o| write_continuation(o, "Ready for literal data")),
        "+ Ready for literal data\r\n"
    );
    assert_eq!(
        out(|o| write_capability(
            o,
            &["IMAP4rev1", "STARTTLS", "AUTH=GSSAPI", "LOGINDISABLED"]
        )),
        "* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI LOGINDISABLED\r\n"
    );
    assert_eq!(
        out(|o| write_flags(
            o,
            &[
                Flag::Answered,
                Flag::Flagged,
                Flag::Deleted,
                Flag::Seen,
                Flag::Draft
            ]
        )),
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
    );
    assert_eq!(out(|o| write_exists(o, 172)), "* 172 EXISTS\r\n");
    assert_eq!(out(|o| write_recent(o, 1)), "* 1 RECENT\r\n");
    assert_eq!(out(|o| write_expunge(o, 3)), "* 3 EXPUNGE\r\n");
    assert_eq!(
        out(|o| write_list(o, false, &["\\Noselect"], Some(b'/'), b"")),
        "* LIST (\\Noselect) \"/\" \"\"\r\n"
    );
    assert_eq!(
        out(|o| write_list(o, false, &["\\Noselect"], Some(b'.'), b"#news.")),
        "* LIST (\\Noselect) \".\" #news.\r\n"
    );
    assert_eq!(
        out(|o| write_list(o, true, &[], None, b"a b")),
        "* LSUB () NIL \"a b\"\r\n"
    );
    assert_eq!(
        out(|o| write_status_data(
            o,
            b"blurdybloop",
            &[(StatusItem::Messages, 231), (StatusItem::UidNext, 44292)]
        )),
        "* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n"
    );
    assert_eq!(
        out(|o| write_search(o, &[2, 84, 882], None)),
        "* SEARCH 2 84 882\r\n"
    );
    assert_eq!(out(|o| write_search(o, &[], None)), "* SEARCH\r\n");
    assert_eq!(
        out(|o| write_search(o, &[2, 5], Some(917_162_500))),
        "* SEARCH 2 5 (MODSEQ 917162500)\r\n"
    );
    // RFC 4731 section 3.1 examples.
    assert_eq!(
        out(|o| write_esearch(
            o,
            b"A282",
            false,
            &Esearch {
                min: Some(2),
                count: Some(3),
                ..Default::default()
            }
        )),
        "* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\r\n"
    );
    assert_eq!(
        out(|o| write_esearch(
            o,
            b"A283",
            true,
            &Esearch {
                all: Some(&[2, 10, 11]),
                ..Default::default()
            }
        )),
        "* ESEARCH (TAG \"A283\") UID ALL 2,10:11\r\n"
    );
    assert_eq!(
        out(|o| write_namespace(o, b"", b'/')),
        "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n"
    );
    assert_eq!(
        out(|o| write_enabled(o, &[b"CONDSTORE"])),
        "* ENABLED CONDSTORE\r\n"
    );
    assert_eq!(
        out(|o| write_id(o, Some(&[("name", Some("ringmail")), ("os", None)]))),
        "* ID (\"name\" \"ringmail\" \"os\" NIL)\r\n"
    );
    assert_eq!(out(|o| write_id(o, None)), "* ID NIL\r\n");
}

#[test]
fn fetch_response_and_string_forms() {
    // RFC 3501 section 7.4.2 example, first items.
    let text = out(|o| {
        let mut f = encode::FetchWriter::new(o, 12);
        f.flags(&[Flag::Seen]);
        f.internal_date(837_596_665, -420);
        f.rfc822_size(4286);
        f.uid(7);
        f.modseq(624_140_003);
        f.finish();
    });
    assert_eq!(
        text,
        "* 12 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 UID 7 MODSEQ (624140003))\r\n"
    );
    let section = Section {
        part: vec![1, 2],
        text: Some(SectionText::Mime),
    };
    let text = out(|o| {
        let mut f = encode::FetchWriter::new(o, 3);
        f.body_section(&section, Some(0), Some(b"abc"));
        f.body_section(&Section::default(), None, None);
        f.literal_item("RFC822.HEADER", b"X: y\r\n\r\n");
        f.finish();
    });
    assert_eq!(
        text,
        "* 3 FETCH (BODY[1.2.MIME]<0> {3}\r\nabc BODY[] NIL RFC822.HEADER {8}\r\nX: y\r\n\r\n)\r\n"
    );
    // Quote when safe, literal otherwise.
    assert_eq!(out(|o| write_astring(o, b"INBOX")), "INBOX");
    assert_eq!(out(|o| write_astring(o, b"a]b")), "a]b");
    assert_eq!(out(|o| write_astring(o, b"NIL")), "\"NIL\"");
    assert_eq!(out(|o| write_astring(o, b"")), "\"\"");
    assert_eq!(
        out(|o| write_astring(o, b"with space \"q\" \\")),
        "\"with space \\\"q\\\" \\\\\""
    );
    assert_eq!(
        out(|o| write_astring(o, "Entwürfe".as_bytes())),
        "{9}\r\nEntwürfe"
    );
    assert_eq!(
        out(|o| write_string(o, b"line\r\nbreak")),
        "{11}\r\nline\r\nbreak"
    );
    assert_eq!(out(|o| write_nstring(o, None)), "NIL");
    assert_eq!(out(|o| write_nstring(o, Some(b"x"))), "\"x\"");
    let long = "x".repeat(2000);
    assert!(out(|o| write_string(o, long.as_bytes())).starts_with("{2000}\r\n"));
}

#[test]
fn framer_rejection_answers() {
    let mut f = Framer::new(FramingLimits::NOT_AUTHENTICATED);
    let input = b"x1 APPEND INBOX {99999}\r\n";
    let Frame::Rejected(r) = f.feed(input) else {
        panic!()
    };
    let (status, code, text) = r.answer();
    let tag = &input[r.tag.clone().unwrap()];
    assert_eq!(
        out(|o| write_status(o, Some(tag), status, code.as_ref(), text)),
        "x1 NO [TOOBIG] Message too large\r\n"
    );
}

/// A generator of well-formed commands, rendered with literals of both kinds.
fn arb_astring() -> impl Strategy<Value = (Vec<u8>, u8)> {
    // (value, form: 0 atom-ish, 1 quoted, 2 sync literal, 3 non-sync literal)
    prop_oneof![
        "[a-zA-Z0-9_.-]{1,10}".prop_map(|s| (s.into_bytes(), 0u8)),
        "[ -~]{0,10}".prop_map(|s| (s.into_bytes(), 1u8)),
        (proptest::collection::vec(any::<u8>(), 0..20), 2u8..4),
    ]
}

fn render(v: &[u8], form: u8) -> Vec<u8> {
    match form {
        0 => v.to_vec(),
        1 => {
            let mut o = vec![b'"'];
            for &c in v {
                if c == b'"' || c == b'\\' {
                    o.push(b'\\');
                }
                o.push(c);
            }
            o.push(b'"');
            o
        }
        _ => {
            let mut o =
                format!("{{{}{}}}\r\n", v.len(), if form == 3 { "+" } else { "" }).into_bytes();
            o.extend_from_slice(v);
            o
        }
    }
}

proptest! {
    #[test]
    fn generated_login_literals_round_trip(user in arb_astring(), pass in arb_astring(), cuts in proptest::collection::vec(0usize..80, 0..4)) {
        let mut input = b"t LOGIN ".to_vec();
        input.extend(render(&user.0, user.1));
        input.push(b' ');
        input.extend(render(&pass.0, pass.1));
        input.extend_from_slice(b"\r\n");
        // Frame it in arbitrary pieces, answering continuations.
        let mut framer = Framer::new(FramingLimits::NOT_AUTHENTICATED);
        let mut points: Vec<usize> = cuts.into_iter().filter(|&c| c < input.len()).collect();
        points.push(input.len());
        points.sort_unstable();
        let mut continuations = 0;
        let mut framed = None;
        'outer: for p in points {
            loop {
                match framer.feed(&input[..p]) {
                    Frame::NeedMore => break,
                    Frame::Continue { .. } => continuations += 1,
                    Frame::Command(n) => { framed = Some(n); break 'outer; }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
        prop_assert_eq!(framed, Some(input.len()));
        prop_assert_eq!(continuations, usize::from(user.1 == 2) + usize::from(pass.1 == 2));
        let cmd = parse_command(&input).unwrap();
        prop_assert_eq!(cmd.body, CommandBody::Login { username: Cow::Owned(user.0), password: Cow::Owned(pass.0) });
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(input in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_command(&input);
        let _ = parse_sasl_response(&input);
    }

    #[test]
    fn mutated_commands_never_panic(idx in 0usize..12, pos in 0usize..120, byte in any::<u8>(), trunc in 0usize..120) {
        const SEEDS: [&str; 12] = [
            "a FETCH 1:* (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (A B)]<0.10>) (CHANGEDSINCE 5)\r\n",
            "a UID SEARCH RETURN (MIN) CHARSET UTF-8 OR (FROM x SINCE 1-Feb-1994) NOT TEXT {3}\r\nabc\r\n",
            "a APPEND INBOX (\\Seen) \" 7-Feb-1994 21:52:25 -0800\" {5}\r\nhello\r\n",
            "a LIST (SUBSCRIBED) \"\" (\"%\" x) RETURN (STATUS (MESSAGES))\r\n",
            "a UID STORE 1:3 (UNCHANGEDSINCE 9) +FLAGS.SILENT (\\Deleted x)\r\n",
            "a LOGIN \"us\\\"er\" {4+}\r\npass\r\n",
            "a ID (\"k\" NIL \"v\" \"w\")\r\n",
            "a CREATE x (USE (\\Sent))\r\n",
            "a SEARCH MODSEQ \"/flags/x\" priv 5 UID $\r\n",
            "a STATUS INBOX (UIDNEXT SIZE)\r\n",
            "a AUTHENTICATE PLAIN =\r\n",
            "a SELECT INBOX (CONDSTORE)\r\n",
        ];
        let mut v = SEEDS[idx].as_bytes().to_vec();
        let pos = pos % v.len();
        v[pos] = byte;
        let _ = parse_command(&v);
        v.truncate(trunc.min(v.len()));
        let _ = parse_command(&v);
    }
}

#[test]
fn rfc5256_sort_and_thread() {
    // RFC 5256 section 4 examples.
    match parsed("A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994\r\n") {
        CommandBody::Sort {
            uid,
            criteria,
            search,
        } => {
            assert!(!uid);
            assert_eq!(
                criteria,
                vec![SortCriterion {
                    reverse: false,
                    key: SortKey::Subject
                }]
            );
            assert_eq!(search.charset, Some(b("UTF-8")));
            assert_eq!(
                search.keys,
                vec![SearchKey::Since(Date::parse(b"1-Feb-1994").unwrap())]
            );
            assert_eq!(search.returns, None);
        }
        other => panic!("{other:?}"),
    }
    // A key given twice counts once.
    match parsed("A1 SORT (SUBJECT REVERSE SUBJECT DATE SUBJECT) UTF-8 ALL\r\n") {
        CommandBody::Sort { criteria, .. } => assert_eq!(
            criteria.iter().map(|c| c.key).collect::<Vec<_>>(),
            vec![SortKey::Subject, SortKey::Date]
        ),
        other => panic!("{other:?}"),
    }
    match parsed("A283 UID SORT (REVERSE DATE from) us-ascii ALL\r\n") {
        CommandBody::Sort { uid, criteria, .. } => {
            assert!(uid);
            assert_eq!(
                criteria,
                vec![
                    SortCriterion {
                        reverse: true,
                        key: SortKey::Date
                    },
                    SortCriterion {
                        reverse: false,
                        key: SortKey::From
                    }
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // RFC 5267 ESORT.
    match parsed("A301 SORT RETURN (MIN COUNT) (ARRIVAL) UTF-8 UNDELETED\r\n") {
        CommandBody::Sort { search, .. } => assert_eq!(
            search.returns,
            Some(vec![SearchReturn::Min, SearchReturn::Count])
        ),
        other => panic!("{other:?}"),
    }
    match parsed("A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000\r\n") {
        CommandBody::Thread { uid, algorithm, .. } => {
            assert!(!uid);
            assert_eq!(algorithm, Algorithm::OrderedSubject);
        }
        other => panic!("{other:?}"),
    }
    match parsed("A284 UID THREAD REFERENCES US-ASCII TEXT \"gewp\"\r\n") {
        CommandBody::Thread { uid, algorithm, .. } => {
            assert!(uid);
            assert_eq!(algorithm, Algorithm::References);
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        "a SORT SUBJECT UTF-8 ALL\r\n",            // criteria need parentheses
        "a SORT () UTF-8 ALL\r\n",                 // at least one key
        "a SORT (SUBJECT) ALL\r\n",                // the charset is required
        "a SORT (REVERSE) UTF-8 ALL\r\n",          // REVERSE needs a key
        "a SORT (REVERSE REVERSE DATE) UTF-8 ALL\r\n",
        "a SORT (COLOUR) UTF-8 ALL\r\n",
        "a SORT (DATE) UTF-8\r\n",                 // at least one search key
        "a THREAD GUESS UTF-8 ALL\r\n",
        "a THREAD REFERENCES ALL\r\n",
        "a SORT (DATE DATE DATE DATE DATE DATE DATE DATE DATE DATE DATE DATE DATE DATE DATE DATE DATE) UTF-8 ALL\r\n",
    ] {
        assert!(parse_command(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn rfc9208_quota_commands() {
    assert_eq!(
        parsed("G0001 GETQUOTA \"!partition.sda4\"\r\n"),
        CommandBody::GetQuota {
            root: b("!partition.sda4")
        }
    );
    assert_eq!(
        parsed("G0002 GETQUOTAROOT INBOX\r\n"),
        CommandBody::GetQuotaRoot {
            mailbox: Mailbox::Inbox
        }
    );
    assert_eq!(
        parsed("S0000 SETQUOTA \"User.Fred\" (STORAGE 510 MESSAGE 100)\r\n"),
        CommandBody::SetQuota
    );
    assert_eq!(parsed("S0001 SETQUOTA \"\" ()\r\n"), CommandBody::SetQuota);
    for bad in ["a SETQUOTA \"\" (STORAGE)\r\n", "a GETQUOTAROOT\r\n"] {
        assert!(parse_command(bad.as_bytes()).is_err(), "{bad}");
    }
    assert_eq!(
        out(|o| write_quotaroot(o, b"INBOX", &[b"" as &[u8]])),
        "* QUOTAROOT INBOX \"\"\r\n"
    );
    assert_eq!(
        out(|o| write_quota_storage(o, b"", 10, 512)),
        "* QUOTA \"\" (STORAGE 10 512)\r\n"
    );
    assert_eq!(
        out(|o| write_esearch(
            o,
            b"A1",
            true,
            &Esearch {
                all: Some(&[5, 6, 7, 2, 3, 9]),
                in_order: true,
                ..Default::default()
            }
        )),
        "* ESEARCH (TAG \"A1\") UID ALL 5:7,2:3,9\r\n"
    );
}

#[test]
fn rfc7162_qresync_forms() {
    // RFC 7162 3.2.5 examples.
    match parsed("A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n") {
        CommandBody::Select {
            qresync: Some(q), ..
        } => {
            assert_eq!(q.uidvalidity, 67890007);
            assert_eq!(q.modseq, 20050715194045000);
            assert_eq!(
                q.known_uids.unwrap().normalized(u32::MAX),
                vec![(41, 41), (43, 211), (214, 541)]
            );
            assert_eq!(q.seq_match, None);
        }
        other => panic!("{other:?}"),
    }
    match parsed(
        "B02 EXAMINE INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541 (1:10 41:50)))\r\n",
    ) {
        CommandBody::Examine {
            qresync: Some(q), ..
        } => {
            let (seqs, uids) = q.seq_match.unwrap();
            assert_eq!(seqs.normalized(u32::MAX), vec![(1, 10)]);
            assert_eq!(uids.normalized(u32::MAX), vec![(41, 50)]);
        }
        other => panic!("{other:?}"),
    }
    // The sequence-match data without known UIDs, and CONDSTORE beside.
    match parsed("C SELECT INBOX (CONDSTORE QRESYNC (666 111 (3 7)))\r\n") {
        CommandBody::Select {
            condstore: true,
            qresync: Some(q),
            ..
        } => assert!(q.known_uids.is_none() && q.seq_match.is_some()),
        other => panic!("{other:?}"),
    }
    match parsed("s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n") {
        CommandBody::Fetch {
            uid: true,
            changed_since: Some(12345),
            vanished: true,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    for bad in [
        "a FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n",
        "a UID FETCH 1:* (FLAGS) (VANISHED)\r\n",
        "a UID FETCH 1:* (FLAGS) (VANISHED VANISHED CHANGEDSINCE 1)\r\n",
        "a SELECT INBOX (QRESYNC (0 1))\r\n",
        "a SELECT INBOX (QRESYNC (1))\r\n",
        "a SELECT INBOX (QRESYNC (1 2 1:*))\r\n",
        "a SELECT INBOX (QRESYNC (1 2) QRESYNC (1 2))\r\n",
    ] {
        assert!(parse_command(bad.as_bytes()).is_err(), "{bad}");
    }
    assert_eq!(
        out(|o| write_vanished(o, true, &[(41, 41), (43, 116)])),
        "* VANISHED (EARLIER) 41,43:116\r\n"
    );
    assert_eq!(
        out(|o| write_vanished(o, false, &[(5, 5)])),
        "* VANISHED 5\r\n"
    );
    assert_eq!(out(|o| write_vanished(o, false, &[])), "");
}

#[test]
fn rfc8474_objectid_forms() {
    // Section 5: FETCH items; section 6: SEARCH keys; section 4: STATUS.
    let CommandBody::Fetch { attrs, .. } = parsed("a FETCH 1:* (EMAILID THREADID)\r\n") else {
        panic!()
    };
    assert_eq!(attrs, vec![FetchAttr::EmailId, FetchAttr::ThreadId]);
    let keys = |input| match parsed(input) {
        CommandBody::Search { search, .. } => search.keys,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        keys("a SEARCH EMAILID M6ed\r\n"),
        vec![SearchKey::EmailId(Some(0x6ed))]
    );
    assert_eq!(
        keys("a SEARCH EMAILID x-1_y\r\n"),
        vec![SearchKey::EmailId(None)]
    );
    // Not the canonical form of a number: no message has it.
    assert_eq!(
        keys("a SEARCH EMAILID M06ed\r\n"),
        vec![SearchKey::EmailId(None)]
    );
    // Case-sensitive (RFC 8474 section 7).
    assert_eq!(
        keys("a SEARCH EMAILID M6ED\r\n"),
        vec![SearchKey::EmailId(None)]
    );
    assert_eq!(keys("a SEARCH THREADID T64\r\n"), vec![SearchKey::ThreadId]);
    for bad in ["a SEARCH EMAILID M1.2\r\n", "a SEARCH EMAILID\r\n"] {
        assert!(parse_command(bad.as_bytes()).is_err(), "{bad}");
    }
    let long = format!("a SEARCH EMAILID {}\r\n", "a".repeat(256));
    assert!(parse_command(long.as_bytes()).is_err());
    let CommandBody::Status { items, .. } = parsed("a STATUS x (MAILBOXID MESSAGES)\r\n") else {
        panic!()
    };
    assert_eq!(items, vec![StatusItem::MailboxId, StatusItem::Messages]);
    let id = encode::mailbox_objectid(0x5f00_0001, 7);
    assert_eq!(
        out(|o| encode::write_status_data(o, b"x", &[(StatusItem::MailboxId, id)])),
        "* STATUS x (MAILBOXID (F5f00000100000007))\r\n"
    );
    assert_eq!(
        out(|o| write_status(
            o,
            Some(b"a"),
            Status::Ok,
            Some(&Code::MailboxId(id)),
            "done"
        )),
        "a OK [MAILBOXID (F5f00000100000007)] done\r\n"
    );
    let mut o = Vec::new();
    encode::write_email_objectid(&mut o, 0x6ed);
    assert_eq!(o, b"M6ed");
    assert_eq!(encode::parse_email_objectid(b"M6ed"), Some(0x6ed));
}
