//! Glob patterns for event names and room names: `*` matches any run of characters
//! (including none); every other character matches itself.

/// A compiled glob. Matching is linear in the name's length times the pattern's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
}

/// Longest pattern accepted; patterns come from config and backends, never from browsers.
pub const MAX_PATTERN_LEN: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("pattern is empty")]
    Empty,
    #[error("pattern is {0} bytes, over the limit of {MAX_PATTERN_LEN}")]
    TooLong(usize),
}

impl Pattern {
    pub fn new(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(PatternError::TooLong(text.len()));
        }
        Ok(Self { text: text.to_owned() })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Iterative wildcard matching with single-star backtracking: no recursion, so no
    /// pattern can blow the stack or go exponential.
    pub fn matches(&self, name: &str) -> bool {
        let (p, s) = (self.text.as_bytes(), name.as_bytes());
        let (mut pi, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, si));
                pi += 1;
            } else if pi < p.len() && p[pi] == s[si] {
                pi += 1;
                si += 1;
            } else if let Some((star_pi, star_si)) = star {
                pi = star_pi + 1;
                si = star_si + 1;
                star = Some((star_pi, star_si + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

/// True when `patterns` is empty (meaning "everything") or one of them matches.
pub fn any_matches(patterns: &[Pattern], name: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p).unwrap().matches(s)
    }

    #[test]
    fn literal_and_star_matching() {
        assert!(m("chat", "chat"));
        assert!(!m("chat", "chats"));
        assert!(m("chat.*", "chat.message"));
        assert!(m("chat.*", "chat."));
        assert!(!m("chat.*", "chat"));
        assert!(m("*", ""));
        assert!(m("*.done", "a.b.done"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("**", "anything"));
    }

    #[test]
    fn adversarial_pattern_is_fast() {
        let p = Pattern::new(&"*a".repeat(100)).unwrap();
        assert!(!p.matches(&"a".repeat(99)));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!(Pattern::new(""), Err(PatternError::Empty));
        assert_eq!(Pattern::new(&"x".repeat(300)), Err(PatternError::TooLong(300)));
    }

    #[test]
    fn empty_list_matches_everything() {
        assert!(any_matches(&[], "x"));
        assert!(!any_matches(&[Pattern::new("y").unwrap()], "x"));
    }
}
