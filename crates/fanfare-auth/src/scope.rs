//! What a token allows: which videos (exact ids or `prefix*` patterns) and which actions.

use std::fmt;
use std::str::FromStr;

/// Something a token can allow on a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Like,
    Comment,
    /// Watch a private video's stream.
    View,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Like, Action::Comment, Action::View];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Like => "like",
            Action::Comment => "comment",
            Action::View => "view",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| format!("unknown action {text:?}: expected like, comment or view"))
    }
}

/// A video id, or every video id that starts with a prefix (`prefix*`; `*` alone is every
/// video). A `*` anywhere but at the end is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoPattern {
    Exact(String),
    Prefix(String),
}

impl VideoPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let (body, is_prefix) = match pattern.strip_suffix('*') {
            Some(body) => (body, true),
            None => (pattern, false),
        };
        if body.contains('*') {
            return Err(format!(
                "invalid video pattern {pattern:?}: '*' may only end a pattern"
            ));
        }
        if !is_prefix && body.is_empty() {
            return Err("an empty video pattern matches nothing".to_owned());
        }
        Ok(if is_prefix {
            VideoPattern::Prefix(body.to_owned())
        } else {
            VideoPattern::Exact(body.to_owned())
        })
    }

    pub fn matches(&self, video: &str) -> bool {
        match self {
            VideoPattern::Exact(id) => id == video,
            VideoPattern::Prefix(prefix) => video.starts_with(prefix.as_str()),
        }
    }
}

/// Whether any of `patterns` matches `video`.
pub(crate) fn any_matches(patterns: &[VideoPattern], video: &str) -> bool {
    patterns.iter().any(|pattern| pattern.matches(video))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_ids_and_prefixes_only() {
        let exact = VideoPattern::parse("talk-1").unwrap();
        assert!(exact.matches("talk-1"));
        assert!(!exact.matches("talk-10"));
        let prefix = VideoPattern::parse("talk-*").unwrap();
        assert!(prefix.matches("talk-10"));
        assert!(prefix.matches("talk-"));
        assert!(!prefix.matches("talk"));
        assert!(VideoPattern::parse("*").unwrap().matches("anything"));
        assert!(VideoPattern::parse("a*b").is_err());
        assert!(VideoPattern::parse("**").is_err());
        assert!(VideoPattern::parse("").is_err());
    }

    #[test]
    fn actions_parse_from_their_names() {
        for action in Action::ALL {
            assert_eq!(action.as_str().parse::<Action>(), Ok(action));
        }
        assert!("publish".parse::<Action>().is_err());
    }
}
