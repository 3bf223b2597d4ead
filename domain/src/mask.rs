//! Masking of contacts for listings, operators' screens and logs (DOMAIN.md §6): enough to
//! recognise a contact, not enough to reuse it.

/// `mario.rossi@example.it` → `m***@e***.it`.
pub fn email(address: &str) -> String {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return "***".to_owned();
    };
    let first = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
    let (host, tld) = domain.rsplit_once('.').unwrap_or((domain, ""));
    let tld = if tld.is_empty() { String::new() } else { format!(".{tld}") };
    format!("{}***@{}***{tld}", first(local), first(host))
}

/// `+39 333 1234567` → `+39 *** *** 4567`: the country prefix and the last four digits.
pub fn phone(number: &str) -> String {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 6 {
        return "***".to_owned();
    }
    let prefix = if number.trim_start().starts_with('+') {
        // Italian and most European prefixes are two digits; that is all a mask needs to show.
        format!("+{} ", &digits[..2])
    } else {
        String::new()
    };
    format!("{prefix}*** *** {}", &digits[digits.len() - 4..])
}

/// A postal address: only the first three characters.
pub fn postal(address: &str) -> String {
    let start: String = address.chars().take(3).collect();
    format!("{start}***")
}

/// A fiscal code for logs: `RSS***********2S`, the first three and last two characters.
pub fn fiscal_code(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    if chars.len() < 6 {
        return "***".to_owned();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 5))
}

/// Masks whatever kind of contact `address` is.
pub fn any(address: &str) -> String {
    if address.contains('@') {
        email(address)
    } else if address.trim_start().starts_with('+') {
        phone(address)
    } else {
        postal(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_keep_only_first_letters_and_the_top_level_domain() {
        assert_eq!(email("mario.rossi@example.it"), "m***@e***.it");
        assert_eq!(email("m@pec.inps.gov.it"), "m***@p***.it");
        assert_eq!(email("not-an-email"), "***");
    }

    #[test]
    fn phones_keep_the_prefix_and_last_four_digits() {
        assert_eq!(phone("+39 333 1234567"), "+39 *** *** 4567");
        assert_eq!(phone("+393331234567"), "+39 *** *** 4567");
        assert_eq!(phone("12"), "***");
    }

    #[test]
    fn fiscal_codes_keep_three_leading_and_two_trailing_characters() {
        assert_eq!(fiscal_code("RSSMRA85T10A562S"), "RSS***********2S");
        assert_eq!(fiscal_code("AB"), "***");
    }

    #[test]
    fn any_contact_is_masked_by_its_kind() {
        assert_eq!(any("a@b.it"), "a***@b***.it");
        assert_eq!(any("+39 06 164164"), "+39 *** *** 4164");
        assert_eq!(any("Via Roma 1, 00100 Roma RM"), "Via***");
    }
}
