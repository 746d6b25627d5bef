//! The `regex` API that `mysql_common` uses, over `regex-automata` with Unicode off.
//!
//! Why: `mysql_common` parses the server version from the handshake with two regexes
//! that the real `regex` crate compiles with Unicode classes (`\d` is every script's
//! digits) on every process's first connection: about 0.9 ms of CPU and 230 page
//! faults, a third of a whole `mmvip health` run. keepalived starts that process every
//! second. Compiled ASCII-only, the same patterns cost microseconds.
//!
//! The workspace swaps this crate in for `regex` with `[patch.crates-io]`, so it
//! offers exactly what `mysql_common` calls (`bytes::Regex::new`, `is_match`,
//! `captures`, `Captures::get`, `Match::as_bytes`): a newer `mysql_common` that needs
//! more fails to compile rather than behave differently, and the host's
//! `driver_regex` test fails when it brings a pattern nobody has reviewed.
//!
//! Matching differs from the real crate only where Unicode would: `\d`, `\w` and `\s`
//! are ASCII, and `.` is any byte but `\n`. Every pattern `mysql_common` has parses
//! ASCII digits out of server text, so that is the meaning it wants (with Unicode
//! `\d`, a non-ASCII digit matched the regex and then panicked in its integer parser).

pub mod bytes {
    use std::fmt;

    use regex_automata::meta;
    use regex_automata::util::captures;
    use regex_automata::util::syntax;

    /// A compiled pattern, matched against bytes.
    pub struct Regex(meta::Regex);

    /// Why a pattern did not compile.
    #[derive(Debug)]
    pub struct Error(String);

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Error {}

    impl Regex {
        pub fn new(pattern: &str) -> Result<Regex, Error> {
            meta::Regex::builder()
                // ASCII classes can match bytes that are not UTF-8 on their own
                // (`[^-]`), which the UTF-8 mode would reject at compile time.
                .syntax(syntax::Config::new().unicode(false).utf8(false))
                .build(pattern)
                .map(Regex)
                .map_err(|error| Error(error.to_string()))
        }

        pub fn is_match(&self, haystack: &[u8]) -> bool {
            self.0.is_match(haystack)
        }

        pub fn captures<'h>(&self, haystack: &'h [u8]) -> Option<Captures<'h>> {
            let mut groups = self.0.create_captures();
            self.0.captures(haystack, &mut groups);
            groups.is_match().then_some(Captures { haystack, groups })
        }
    }

    /// The groups of one match; group 0 is the whole match.
    pub struct Captures<'h> {
        haystack: &'h [u8],
        groups: captures::Captures,
    }

    impl<'h> Captures<'h> {
        /// The text of group `index`, if that group took part in the match.
        pub fn get(&self, index: usize) -> Option<Match<'h>> {
            let span = self.groups.get_group(index)?;
            Some(Match {
                bytes: &self.haystack[span.range()],
            })
        }
    }

    /// The text one group matched.
    pub struct Match<'h> {
        bytes: &'h [u8],
    }

    impl<'h> Match<'h> {
        pub fn as_bytes(&self) -> &'h [u8] {
            self.bytes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bytes::Regex;

    fn groups(pattern: &str, text: &str) -> Option<Vec<Option<String>>> {
        let regex = Regex::new(pattern).expect("pattern compiles");
        let captures = regex.captures(text.as_bytes())?;
        Some(
            (0..4)
                .map(|index| {
                    captures
                        .get(index)
                        .map(|m| String::from_utf8(m.as_bytes().to_vec()).unwrap())
                })
                .collect(),
        )
    }

    #[test]
    fn captures_report_each_group_and_the_whole_match() {
        let found = groups(r"^(\d{1,2})\.(\d{1,2})\.(\d{1,3})", "10.11.19-MariaDB").unwrap();
        let expected = ["10.11.19", "10", "11", "19"].map(|s| Some(s.to_string()));
        assert_eq!(found, expected);
    }

    #[test]
    fn a_group_outside_the_match_is_none() {
        let found = groups(r"^(a)|(b)", "b").unwrap();
        assert_eq!(found[1], None);
        assert_eq!(found[2].as_deref(), Some("b"));
    }

    #[test]
    fn no_match_gives_no_captures() {
        assert_eq!(groups(r"^\d+$", "12a"), None);
    }

    #[test]
    fn digits_are_ascii_only() {
        // Arabic-Indic digits: Unicode `\d` would accept them.
        let regex = Regex::new(r"^\d+$").unwrap();
        assert!(regex.is_match(b"0123456789"));
        assert!(!regex.is_match("١٠".as_bytes()));
    }

    #[test]
    fn negated_classes_match_any_other_byte() {
        let regex = Regex::new("^A([^-]*)B$").unwrap();
        assert!(regex.is_match(b"A\xff\n xB"));
        assert!(!regex.is_match(b"A-B"));
    }

    #[test]
    // The point is an invalid pattern, which clippy would refuse at build time.
    #[allow(clippy::invalid_regex)]
    fn a_bad_pattern_is_an_error_with_a_reason() {
        let error = Regex::new("(unclosed").err().expect("refused");
        assert!(!error.to_string().is_empty());
    }
}
