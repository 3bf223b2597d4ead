//! Text people type that is stored and printed later: names and postal addresses, and the rule
//! every text field keeps.
//!
//! PostgreSQL refuses a NUL byte in a text column, a terminal or a PDF shows a control
//! character as nothing or as garbage, and a bidirectional override (U+202E) makes a printed
//! line read differently from what is stored. So such characters are refused where the text
//! enters, field by field, rather than discovered by the step that fails on them.

use std::fmt;

/// The longest surname or given name, in characters.
pub const NAME_MAX_CHARS: usize = 60;
/// The most lines a postal address has (an envelope's window holds five under the name).
pub const ADDRESS_MAX_LINES: usize = 5;
/// The longest postal address, in characters.
pub const ADDRESS_MAX_CHARS: usize = 300;
/// The longest excerpt of a refused value quoted back in an error.
pub const EXCERPT_MAX_CHARS: usize = 60;

/// A character no text field of any request may hold: a control character (NUL among them)
/// other than tab, line feed and carriage return, or a bidirectional override or isolate (which
/// makes a printed line read differently from what is stored).
pub fn is_forbidden(c: char) -> bool {
    (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A character that must not be in a stored name, address or contact: a [forbidden](is_forbidden)
/// one, tab and newlines unless `allow_newlines`, invisible format characters (zero-width
/// characters, the byte-order mark), private-use characters and the non-characters U+FFFE and
/// U+FFFF.
pub fn is_unprintable(c: char, allow_newlines: bool) -> bool {
    if is_forbidden(c) || (c.is_control() && !allow_newlines) {
        return true;
    }
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{2060}'..='\u{2064}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{FFFE}'
            | '\u{FFFF}'
            | '\u{E000}'..='\u{F8FF}'
    )
}

/// Why a text field is refused; safe to show (it never repeats the text).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("is required")]
    Missing,
    #[error("must not contain control or invisible characters")]
    Unprintable,
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("must be at most {0} lines")]
    TooManyLines(usize),
    #[error("may contain only letters, spaces, apostrophes and hyphens")]
    NotAName,
}

/// Checks that `text` has no character [`is_unprintable`] (newlines allowed or not).
pub fn printable(text: &str, allow_newlines: bool) -> Result<(), TextError> {
    if text.chars().any(|c| is_unprintable(c, allow_newlines)) {
        Err(TextError::Unprintable)
    } else {
        Ok(())
    }
}

/// Spaces trimmed and runs of whitespace made one space.
pub fn collapse_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One required line of free text: spaces collapsed, printable, at most `max` characters.
pub fn line(raw: &str, max: usize) -> Result<String, TextError> {
    printable(raw, false)?;
    let line = collapse_spaces(raw);
    if line.is_empty() {
        Err(TextError::Missing)
    } else if line.chars().count() > max {
        Err(TextError::TooLong(max))
    } else {
        Ok(line)
    }
}

/// A value quoted back in an error message: at most [`EXCERPT_MAX_CHARS`] characters, as a
/// debug string (so that control characters show as escapes), with `…` when cut. An import's
/// row errors quote the cell they are about; a cell may be a megabyte long.
pub fn excerpt(text: &str) -> String {
    let mut cut: String = text.chars().take(EXCERPT_MAX_CHARS).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn truncated(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A surname or given name as written: letters of the Latin script (accented ones and Latin
/// Extended included: the fiscal code is computed from them), spaces, apostrophes and hyphens,
/// 1 to [`NAME_MAX_CHARS`] characters. Surrounding spaces are dropped, runs of spaces collapsed
/// and typographic apostrophes (’ ‘ ʼ `) turned into `'`.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        printable(raw, false)?;
        let name: String = collapse_spaces(raw)
            .chars()
            .map(|c| match c {
                '\u{2019}' | '\u{2018}' | '\u{02BC}' | '`' => '\'',
                c => c,
            })
            .collect();
        if name.is_empty() {
            return Err(TextError::Missing);
        }
        if name.chars().count() > NAME_MAX_CHARS {
            return Err(TextError::TooLong(NAME_MAX_CHARS));
        }
        let allowed = |c: char| is_name_letter(c) || matches!(c, ' ' | '\'' | '-');
        if !name.chars().all(allowed) || !name.chars().any(is_name_letter) {
            return Err(TextError::NotAName);
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A letter of the Latin script: ASCII, Latin-1 Supplement and Latin Extended-A/B, and Latin
/// Extended Additional (Vietnamese and other precomposed letters).
pub fn is_name_letter(c: char) -> bool {
    c.is_ascii_alphabetic()
        || (c.is_alphabetic()
            && (('\u{C0}'..='\u{24F}').contains(&c) || ('\u{1E00}'..='\u{1EFF}').contains(&c)))
}

/// A postal address as it goes on an envelope: 1 to [`ADDRESS_MAX_LINES`] non-blank lines, each
/// trimmed with its spaces collapsed, at most [`ADDRESS_MAX_CHARS`] characters in all, in any
/// script, with no control or invisible characters but the newlines between lines.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PostalAddress(String);

impl PostalAddress {
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        printable(raw, true)?;
        let lines: Vec<String> =
            raw.lines().map(collapse_spaces).filter(|l| !l.is_empty()).collect();
        let address = lines.join("\n");
        if lines.is_empty() {
            Err(TextError::Missing)
        } else if lines.len() > ADDRESS_MAX_LINES {
            Err(TextError::TooManyLines(ADDRESS_MAX_LINES))
        } else if address.chars().count() > ADDRESS_MAX_CHARS {
            Err(TextError::TooLong(ADDRESS_MAX_CHARS))
        } else {
            Ok(Self(address))
        }
    }

    /// The lines, joined by `\n`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.0.lines()
    }
}

macro_rules! text_value {
    ($($t:ident),*) => {$(
        impl TryFrom<String> for $t {
            type Error = TextError;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                Self::parse(&text)
            }
        }
        impl From<$t> for String {
            fn from(value: $t) -> Self {
                value.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        // Personal data: debug output shows only how long it is.
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "({} chars)"), self.0.chars().count())
            }
        }
    )*};
}
text_value!(PersonName, PostalAddress);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_written_are_kept_with_their_letters() {
        for name in ["Łucja", "Ștefan", "Țurcanu", "Jürgen Müller", "Çelik Núñez", "D'Annunzio"]
        {
            assert_eq!(PersonName::parse(name).map(|n| n.0), Ok(name.to_owned()));
        }
        assert_eq!(PersonName::parse("  de  Sanctis ").map(|n| n.0), Ok("de Sanctis".into()));
        assert_eq!(PersonName::parse("D’Amico").map(|n| n.0), Ok("D'Amico".into()));
    }

    #[test]
    fn control_and_invisible_characters_are_refused_in_names_and_addresses() {
        for bad in ["Ma\0rio", "Mario\u{1}", "Mario\u{202e}", "Ma\u{200b}rio", "Mario\u{7f}"] {
            assert_eq!(PersonName::parse(bad), Err(TextError::Unprintable), "{bad:?}");
            assert_eq!(PostalAddress::parse(bad), Err(TextError::Unprintable), "{bad:?}");
            assert_eq!(line(bad, 100), Err(TextError::Unprintable), "{bad:?}");
        }
    }

    #[test]
    fn names_are_bounded_and_made_of_letters() {
        assert_eq!(PersonName::parse(" "), Err(TextError::Missing));
        assert_eq!(PersonName::parse(&"a".repeat(61)), Err(TextError::TooLong(60)));
        assert_eq!(PersonName::parse("R2D2"), Err(TextError::NotAName));
        assert_eq!(PersonName::parse("'-"), Err(TextError::NotAName));
    }

    #[test]
    fn an_address_keeps_up_to_five_lines_in_any_script() {
        let a = PostalAddress::parse("ул. Ленина, 268\n\n  630090 Новосибирск  \nРоссия")
            .expect("address");
        assert_eq!(
            a.lines().collect::<Vec<_>>(),
            ["ул. Ленина, 268", "630090 Новосибирск", "Россия"]
        );
        assert_eq!(PostalAddress::parse("1\n2\n3\n4\n5\n6"), Err(TextError::TooManyLines(5)));
        assert_eq!(PostalAddress::parse(&"x".repeat(301)), Err(TextError::TooLong(300)));
    }

    #[test]
    fn an_excerpt_of_a_megabyte_cell_is_short_and_shows_escapes() {
        let cell = "x".repeat(1 << 20);
        assert!(excerpt(&cell).chars().count() <= EXCERPT_MAX_CHARS + 3);
        assert_eq!(excerpt("a\0b"), "\"a\\0b\"");
        assert_eq!(truncated("abcdef", 4), "abc…");
        assert_eq!(truncated("abc", 4), "abc");
    }
}
