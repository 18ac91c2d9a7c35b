//! [`Escaped`]: text from outside — PortOne's own messages inside an [`Error`](crate::Error) —
//! written into a log line with its control characters escaped, so it can neither start a
//! line of its own (a forged log entry) nor drive a terminal. Everything else, Korean
//! included, stays as it is, readable.

use std::fmt::{self, Write as _};

/// Displays `T` with control characters (`\n`, `\r`, ESC, …), Unicode line and paragraph
/// separators and bidirectional overrides escaped as `\n`, `\u{2028}`, ….
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaping(f), "{}", self.0)
    }
}

impl<T: fmt::Display> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some((at, c)) = rest.char_indices().find(|(_, c)| needs_escape(*c)) {
            self.0.write_str(&rest[..at])?;
            write!(self.0, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_cannot_be_forged() {
        let text = "실패\n2026-01-01T00:00:00Z  INFO forged\r\u{1b}[2K\u{2028}end\\";
        let shown = Escaped(text).to_string();
        assert_eq!(
            shown,
            "실패\\n2026-01-01T00:00:00Z  INFO forged\\r\\u{1b}[2K\\u{2028}end\\"
        );
        assert!(!shown.chars().any(needs_escape));
        assert_eq!(Escaped("plain text, 평문").to_string(), "plain text, 평문");
    }
}
