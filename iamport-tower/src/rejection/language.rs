//! [`Language`]: the language a rejection is written in, chosen from `Accept-Language`.

use http::HeaderMap;
use http::header::ACCEPT_LANGUAGE;

/// A language rejection bodies (`title`, `detail`) are written in.
///
/// The layer answers each request in the language its `Accept-Language` header prefers
/// ([`negotiate`](Self::negotiate)); English when it names neither Korean nor English.
///
/// ```
/// use iamport_tower::Language;
///
/// assert_eq!(Language::negotiate("ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7"), Language::Korean);
/// assert_eq!(Language::negotiate("en-US,en;q=0.9,ko;q=0.8"), Language::English);
/// assert_eq!(Language::negotiate("fr-FR, ko;q=0.5"), Language::Korean);
/// assert_eq!(Language::negotiate("de"), Language::English); // nothing matches
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Language {
    /// English (`en`), the default.
    #[default]
    English,
    /// Korean (`ko`), in the polite style Korean sites write messages in.
    Korean,
}

impl Language {
    /// Every language, in the order a tie is broken in (English first).
    pub const ALL: [Self; 2] = [Self::English, Self::Korean];

    /// The primary language subtag: `"en"` or `"ko"` (what `Content-Language` says).
    pub const fn tag(self) -> &'static str {
        match self {
            Self::English => "en",
            Self::Korean => "ko",
        }
    }

    /// The language an `Accept-Language` value prefers (RFC 9110 §12.5.4), English when it
    /// names neither.
    ///
    /// A range matches by its primary subtag (`ko`, `ko-KR` and `KO-kr` all mean Korean);
    /// quality values are honoured (`q=0` refuses a language; a malformed one drops its
    /// range); a language named explicitly takes its quality from its own ranges, not from
    /// `*`; between equal qualities the range named first wins, and `*` alone means English.
    pub fn negotiate(accept_language: &str) -> Self {
        // (quality in thousandths, position of the first range giving it) per language.
        let mut explicit: [Option<(u16, usize)>; 2] = [None, None];
        let mut wildcard: Option<(u16, usize)> = None;
        for (position, item) in accept_language.split(',').enumerate() {
            let mut parts = item.split(';');
            let range = parts.next().unwrap_or("").trim();
            if range.is_empty() {
                continue;
            }
            let Some(quality) = quality(parts) else {
                continue;
            };
            if range == "*" {
                wildcard = Some(wildcard.map_or((quality, position), |w| w.max_first(quality)));
                continue;
            }
            let primary = range.split('-').next().unwrap_or("");
            for (index, language) in Self::ALL.iter().enumerate() {
                if primary.eq_ignore_ascii_case(language.tag()) {
                    explicit[index] =
                        Some(explicit[index].map_or((quality, position), |e| e.max_first(quality)));
                }
            }
        }
        let mut best: Option<(u16, usize, Self)> = None;
        for (index, language) in Self::ALL.into_iter().enumerate() {
            let Some((quality, position)) = explicit[index].or(wildcard) else {
                continue;
            };
            if quality == 0 {
                continue;
            }
            let better = match best {
                None => true,
                Some((q, p, _)) => quality > q || (quality == q && position < p),
            };
            if better {
                best = Some((quality, position, language));
            }
        }
        best.map_or(Self::English, |(_, _, language)| language)
    }

    /// The language the request's `Accept-Language` header(s) prefer; English without one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut values = headers
            .get_all(ACCEPT_LANGUAGE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        match (values.next(), values.next()) {
            (None, _) => Self::English,
            (Some(only), None) => Self::negotiate(only),
            (Some(first), Some(second)) => {
                // Several header lines are one comma-separated list (RFC 9110 §5.3).
                let mut joined = format!("{first},{second}");
                for value in values {
                    joined.push(',');
                    joined.push_str(value);
                }
                Self::negotiate(&joined)
            }
        }
    }
}

/// `(quality, position)`: keep the higher quality, and for equal ones the earlier range.
trait MaxFirst {
    fn max_first(self, quality: u16) -> Self;
}

impl MaxFirst for (u16, usize) {
    fn max_first(self, quality: u16) -> Self {
        if quality > self.0 {
            (quality, self.1)
        } else {
            self
        }
    }
}

/// The `q` parameter of one range, in thousandths (1000 without one); `None` when it is
/// not a valid qvalue (`0`, `0.5`, `1.000`, …).
fn quality<'a>(parameters: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut quality = 1000;
    for parameter in parameters {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("q") {
            continue;
        }
        quality = parse_qvalue(value.trim())?;
    }
    Some(quality)
}

fn parse_qvalue(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::Language::{self, English, Korean};

    #[test]
    fn browsers_defaults() {
        // Chrome and Firefox on a Korean system, then on an English one.
        assert_eq!(Language::negotiate("ko-KR,ko;q=0.9"), Korean);
        assert_eq!(
            Language::negotiate("ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7"),
            Korean
        );
        assert_eq!(Language::negotiate("ko,en-US;q=0.7,en;q=0.3"), Korean);
        assert_eq!(Language::negotiate("en-US,en;q=0.9"), English);
        assert_eq!(Language::negotiate("en"), English);
        assert_eq!(Language::negotiate("en-US,en;q=0.9,ko;q=0.8"), English);
    }

    #[test]
    fn quality_values_are_honoured() {
        assert_eq!(Language::negotiate("en;q=0.5, ko;q=0.8"), Korean);
        assert_eq!(Language::negotiate("ko;q=0.5, en;q=0.8"), English);
        assert_eq!(Language::negotiate("fr, de;q=0.9, ko;q=0.1"), Korean);
        assert_eq!(Language::negotiate("KO-kr"), Korean, "case-insensitive");
        assert_eq!(Language::negotiate("ko ; q=0.7 , en ; q=0.6"), Korean);
        assert_eq!(Language::negotiate("en;q=0.500,ko;q=0.499"), English);
        assert_eq!(
            Language::negotiate("ko;q=1.0,en"),
            Korean,
            "tie: first named"
        );
        assert_eq!(Language::negotiate("en,ko"), English);
        // q=0 refuses, even when `*` would accept; a named language beats `*`.
        assert_eq!(Language::negotiate("ko;q=0, *"), English);
        assert_eq!(Language::negotiate("*;q=0.1, ko"), Korean);
        assert_eq!(Language::negotiate("en;q=0, *;q=0.5"), Korean);
        assert_eq!(Language::negotiate("en;q=0, ko;q=0"), English, "fallback");
    }

    #[test]
    fn nothing_usable_means_english() {
        for header in [
            "",
            "*",
            "fr-FR",
            ",,,",
            "ko;q=2",
            "ko;q=0.1234",
            "ko;q=abc",
            "ko;q=",
            "korean",
        ] {
            assert_eq!(Language::negotiate(header), English, "{header:?}");
        }
        // A malformed range is dropped; the others still count.
        assert_eq!(Language::negotiate("en;q=7, ko;q=0.2"), Korean);
    }

    #[test]
    fn several_header_lines_are_one_list() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(Language::from_headers(&headers), English);
        headers.append("accept-language", "en;q=0.4".parse().unwrap());
        headers.append("accept-language", "ko;q=0.6".parse().unwrap());
        assert_eq!(Language::from_headers(&headers), Korean);
    }
}
