//! `[console]`: the web console on the operations port — whether status
//! badges are public, and how long a sign-in lasts.

use std::time::Duration;

use serde::Deserialize;

use super::{duration_in, ConfigError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// Serve `/badge/{environment}/{cube}.svg` to anyone, without sign-in.
    pub public_badges: bool,
    /// How long a console session lasts after sign-in.
    pub session_ttl: Duration,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            public_badges: false,
            session_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    public_badges: Option<bool>,
    session_ttl: Option<String>,
}

pub(super) fn parse_console(raw: RawConsole) -> Result<ConsoleSettings, ConfigError> {
    Ok(ConsoleSettings {
        public_badges: raw.public_badges.unwrap_or(false),
        session_ttl: duration_in(
            "console.session_ttl",
            raw.session_ttl,
            "12h",
            Duration::from_secs(60)..=Duration::from_secs(30 * 86_400),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_last_twelve_hours_unless_configured() {
        let defaults = parse_console(RawConsole::default()).unwrap();
        assert_eq!(defaults, ConsoleSettings::default());
        let raw: RawConsole =
            toml::from_str("public_badges = true\nsession_ttl = \"30m\"").unwrap();
        let set = parse_console(raw).unwrap();
        assert!(set.public_badges);
        assert_eq!(set.session_ttl, Duration::from_secs(1800));
        let raw: RawConsole = toml::from_str("session_ttl = \"1s\"").unwrap();
        let refused = parse_console(raw).unwrap_err().to_string();
        assert!(refused.contains("console.session_ttl"), "{refused}");
    }
}
