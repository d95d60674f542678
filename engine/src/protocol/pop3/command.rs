//! Command parser: one line (without CRLF) to a borrowed [`Command`].
//!
//! RFC 1939 section 3: a command is a case-insensitive keyword, possibly
//! followed by arguments separated by a single space. We accept runs of
//! spaces between arguments and trailing spaces, except for PASS whose
//! argument is the rest of the line verbatim (RFC 1939 section 7 allows
//! spaces in the password). Message numbers are 1-based decimal; zero, signs,
//! non-digits and values that overflow `usize` are rejected.

use thiserror::Error;

/// A parsed command. Byte slices borrow from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `USER name`: one argument.
    User(&'a [u8]),
    /// `PASS string`: everything after `PASS ` (spaces included).
    Pass(&'a [u8]),
    /// `APOP name digest`: recognised so it gets a precise refusal; we never
    /// offer it (no timestamp in the greeting, RFC 1939 section 7).
    Apop,
    Stat,
    /// `LIST [msg]`; message numbers are 1-based.
    List(Option<usize>),
    Retr(usize),
    Dele(usize),
    Noop,
    Rset,
    Quit,
    /// `TOP msg n`: `lines` may be 0.
    Top {
        msg: usize,
        lines: usize,
    },
    Uidl(Option<usize>),
    Capa,
    /// `AUTH [mechanism [initial-response]]` (RFC 5034 section 4).
    Auth {
        mechanism: Option<&'a [u8]>,
        initial_response: Option<&'a [u8]>,
    },
    /// `STLS` (RFC 2595 section 4).
    Stls,
    /// Any other keyword (the first word of the line, possibly empty).
    Unknown(&'a [u8]),
}

/// Why a known command was rejected. The `Display` texts are the `-ERR`
/// reply texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("missing argument")]
    MissingArgument,
    #[error("too many arguments")]
    TooManyArguments,
    #[error("invalid message number")]
    InvalidMessageNumber,
    #[error("invalid line count")]
    InvalidNumber,
}

/// Parse one command line (terminator already removed).
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let kw = |name: &[u8]| keyword.eq_ignore_ascii_case(name);
    if kw(b"PASS") {
        // RFC 1939 section 7: the argument is the rest of the line.
        return if line.len() > keyword.len() {
            Ok(Command::Pass(rest))
        } else {
            Err(ParseError::MissingArgument)
        };
    }
    let mut args = rest.split(|&b| b == b' ').filter(|a| !a.is_empty());
    let mut next = || args.next();
    let command = if kw(b"USER") {
        Command::User(next().ok_or(ParseError::MissingArgument)?)
    } else if kw(b"STAT") {
        Command::Stat
    } else if kw(b"LIST") {
        Command::List(next().map(message_number).transpose()?)
    } else if kw(b"RETR") {
        Command::Retr(message_number(next().ok_or(ParseError::MissingArgument)?)?)
    } else if kw(b"DELE") {
        Command::Dele(message_number(next().ok_or(ParseError::MissingArgument)?)?)
    } else if kw(b"NOOP") {
        Command::Noop
    } else if kw(b"RSET") {
        Command::Rset
    } else if kw(b"QUIT") {
        Command::Quit
    } else if kw(b"TOP") {
        let msg = message_number(next().ok_or(ParseError::MissingArgument)?)?;
        let lines =
            number(next().ok_or(ParseError::MissingArgument)?).ok_or(ParseError::InvalidNumber)?;
        Command::Top { msg, lines }
    } else if kw(b"UIDL") {
        Command::Uidl(next().map(message_number).transpose()?)
    } else if kw(b"CAPA") {
        Command::Capa
    } else if kw(b"AUTH") {
        Command::Auth {
            mechanism: next(),
            initial_response: next(),
        }
    } else if kw(b"STLS") {
        Command::Stls
    } else if kw(b"APOP") {
        // Arguments are irrelevant: the command is refused either way.
        return Ok(Command::Apop);
    } else {
        return Ok(Command::Unknown(keyword));
    };
    if next().is_some() {
        return Err(ParseError::TooManyArguments);
    }
    Ok(command)
}

/// A plain decimal number: digits only, no sign, no overflow.
fn number(arg: &[u8]) -> Option<usize> {
    if arg.is_empty() {
        return None;
    }
    arg.iter().try_fold(0usize, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(usize::from(b - b'0'))
        } else {
            None
        }
    })
}

/// A 1-based message number (RFC 1939 section 3: "msg" is never 0).
fn message_number(arg: &[u8]) -> Result<usize, ParseError> {
    match number(arg) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(ParseError::InvalidMessageNumber),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Command as C;

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(parse_command(b"stat"), Ok(C::Stat));
        assert_eq!(parse_command(b"StAt"), Ok(C::Stat));
        assert_eq!(parse_command(b"quit"), Ok(C::Quit));
        assert_eq!(parse_command(b"capa"), Ok(C::Capa));
        assert_eq!(parse_command(b"stls"), Ok(C::Stls));
        assert_eq!(parse_command(b"noop"), Ok(C::Noop));
        assert_eq!(parse_command(b"rset"), Ok(C::Rset));
        assert_eq!(
            parse_command(b"apop mrose c4c9334bac560ecc979e58001b3e22fb"),
            Ok(C::Apop)
        );
    }

    #[test]
    fn user_and_pass() {
        assert_eq!(parse_command(b"USER mrose"), Ok(C::User(b"mrose")));
        assert_eq!(parse_command(b"USER"), Err(ParseError::MissingArgument));
        assert_eq!(
            parse_command(b"USER a b"),
            Err(ParseError::TooManyArguments)
        );
        assert_eq!(parse_command(b"PASS secret"), Ok(C::Pass(b"secret")));
        assert_eq!(
            parse_command(b"pass  two words "),
            Ok(C::Pass(b" two words "))
        );
        assert_eq!(parse_command(b"PASS "), Ok(C::Pass(b"")));
        assert_eq!(parse_command(b"PASS"), Err(ParseError::MissingArgument));
    }

    #[test]
    fn message_numbers() {
        assert_eq!(parse_command(b"RETR 1"), Ok(C::Retr(1)));
        assert_eq!(parse_command(b"retr 007"), Ok(C::Retr(7)));
        assert_eq!(parse_command(b"DELE 2 "), Ok(C::Dele(2)));
        assert_eq!(parse_command(b"LIST"), Ok(C::List(None)));
        assert_eq!(parse_command(b"LIST 3"), Ok(C::List(Some(3))));
        assert_eq!(parse_command(b"UIDL"), Ok(C::Uidl(None)));
        assert_eq!(parse_command(b"UIDL 12"), Ok(C::Uidl(Some(12))));
        for bad in [
            &b"RETR 0"[..],
            b"RETR 00",
            b"RETR +1",
            b"RETR -1",
            b"RETR 1x",
            b"LIST a",
        ] {
            assert_eq!(
                parse_command(bad),
                Err(ParseError::InvalidMessageNumber),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_command(b"RETR 99999999999999999999999999"),
            Err(ParseError::InvalidMessageNumber)
        );
        assert_eq!(parse_command(b"RETR"), Err(ParseError::MissingArgument));
        assert_eq!(
            parse_command(b"RETR 1 2"),
            Err(ParseError::TooManyArguments)
        );
        assert_eq!(parse_command(b"STAT 1"), Err(ParseError::TooManyArguments));
    }

    #[test]
    fn top() {
        assert_eq!(parse_command(b"TOP 1 10"), Ok(C::Top { msg: 1, lines: 10 }));
        assert_eq!(parse_command(b"top 1 0"), Ok(C::Top { msg: 1, lines: 0 }));
        assert_eq!(
            parse_command(b"TOP 0 1"),
            Err(ParseError::InvalidMessageNumber)
        );
        assert_eq!(parse_command(b"TOP 1"), Err(ParseError::MissingArgument));
        assert_eq!(parse_command(b"TOP 1 -1"), Err(ParseError::InvalidNumber));
        assert_eq!(
            parse_command(b"TOP 1 2 3"),
            Err(ParseError::TooManyArguments)
        );
    }

    #[test]
    fn auth() {
        assert_eq!(
            parse_command(b"AUTH"),
            Ok(C::Auth {
                mechanism: None,
                initial_response: None
            })
        );
        assert_eq!(
            parse_command(b"AUTH PLAIN"),
            Ok(C::Auth {
                mechanism: Some(b"PLAIN"),
                initial_response: None
            })
        );
        assert_eq!(
            parse_command(b"auth plain AGZvbwBiYXI="),
            Ok(C::Auth {
                mechanism: Some(b"plain"),
                initial_response: Some(b"AGZvbwBiYXI=")
            })
        );
        assert_eq!(
            parse_command(b"AUTH PLAIN a b"),
            Err(ParseError::TooManyArguments)
        );
    }

    #[test]
    fn unknown() {
        assert_eq!(parse_command(b"XYZZY 1 2"), Ok(C::Unknown(b"XYZZY")));
        assert_eq!(parse_command(b""), Ok(C::Unknown(b"")));
        assert_eq!(parse_command(b" STAT"), Ok(C::Unknown(b"")));
        assert_eq!(parse_command(b"STATS"), Ok(C::Unknown(b"STATS")));
    }
}
