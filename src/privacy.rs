//! Log-safe renderings of private identifiers.
//!
//! Device tokens and account ids identify a person's phone. They are never
//! written to logs above debug level; at debug they appear shortened to the
//! first and last four characters, enough to match `xapsd devices` output.

use std::fmt;
use std::fmt::Write as _;

/// Displays a private identifier shortened: `2918…2829`.
pub struct Short<'a>(pub &'a str);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let n = s.chars().count();
        if n <= 10 {
            // Too short to shorten meaningfully: show only its length.
            return write!(f, "<{n} chars>");
        }
        let head: String = s.chars().take(4).collect();
        let tail: String = s.chars().skip(n - 4).collect();
        write!(f, "{head}…{tail}")
    }
}

/// A stable, non-reversible tag for a device token (first 6 hex digits of
/// its SHA-256). Info-level logs use it so an admin can follow one device
/// through the log without the token itself ever appearing there.
pub fn tag(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = String::with_capacity(7);
    out.push('#');
    for byte in &digest.as_ref()[..3] {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Short;

    #[test]
    fn shortens_long_identifiers() {
        let token = "2918390218931890821908309283098109381029309829018310983092892829";
        assert_eq!(Short(token).to_string(), "2918…2829");
    }

    #[test]
    fn hides_short_identifiers_entirely() {
        assert_eq!(Short("abc").to_string(), "<3 chars>");
        assert_eq!(Short("").to_string(), "<0 chars>");
    }

    #[test]
    fn tags_are_stable_and_hide_the_token() {
        let token = "2918390218931890821908309283098109381029309829018310983092892829";
        let t = super::tag(token);
        assert_eq!(t, super::tag(token));
        assert_eq!(t.len(), 7);
        assert!(
            !token.contains(&t[1..]),
            "tag must not be a piece of the token"
        );
        assert_ne!(t, super::tag("abab"));
    }
}
