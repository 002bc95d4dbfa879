//! Maintenance windows (`--window`): when a member may start an upgrade turn.
//!
//! A window is a cron expression saying when it opens plus how long it stays open, e.g.
//! `"0 2 * * SAT 4h"` (Saturdays 02:00-06:00) or `"30 22 * * 1-5 90m"`. The expression is
//! standard 5-field cron (minute hour day-of-month month day-of-week, names and `L`/`#`/`W`
//! accepted), or 6 fields with seconds first; the last word is the length, as `--soak`
//! takes it (`4h`, `90m`, `1h30m`). Times are UTC on every host, so the members of one
//! cluster agree on a window whatever their local time zone (and no daylight-saving jump
//! opens a window twice or skips it).
//!
//! The decision is a pure function over plain data ([`state_at`]); the driver only asks it.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A `--window` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Only one word: the length is missing.
    #[error("window {0:?} needs a cron expression and a length, e.g. \"0 2 * * SAT 4h\"")]
    Shape(String),
    /// The length is not a duration, or is zero.
    #[error("window {spec:?}: the length {length:?} is not a duration such as 4h or 90m")]
    Length {
        /// The whole spec.
        spec: String,
        /// The last word.
        length: String,
    },
    /// The cron expression is not valid.
    #[error("window {spec:?}: {error} (cron: minute hour day-of-month month day-of-week, in UTC)")]
    Cron {
        /// The whole spec.
        spec: String,
        /// What croner said.
        error: String,
    },
}

/// One maintenance window: opens at each time `cron` matches (UTC), open for `length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    spec: String,
    cron: Cron,
    length: Duration,
}

impl Window {
    /// The spec as given.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// How long each opening lasts.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// The last opening at or before `now`, if the expression ever matched before.
    fn last_opening(&self, now: SystemTime) -> Option<SystemTime> {
        let now = DateTime::<Utc>::from(now);
        self.cron
            .find_previous_occurrence(&now, true)
            .ok()
            .map(SystemTime::from)
    }

    /// The first opening strictly after `now`, if the expression matches again.
    fn next_opening(&self, now: SystemTime) -> Option<SystemTime> {
        let now = DateTime::<Utc>::from(now);
        self.cron
            .find_next_occurrence(&now, false)
            .ok()
            .map(SystemTime::from)
    }
}

impl FromStr for Window {
    type Err = WindowError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let spec = spec.trim();
        let Some((expr, length)) = spec.rsplit_once(char::is_whitespace) else {
            return Err(WindowError::Shape(spec.to_owned()));
        };
        let length_err = || WindowError::Length {
            spec: spec.to_owned(),
            length: length.to_owned(),
        };
        let length_value = humantime::parse_duration(length).map_err(|_| length_err())?;
        if length_value.is_zero() {
            return Err(length_err());
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr.trim())
            .map_err(|e| WindowError::Cron {
                spec: spec.to_owned(),
                error: e.to_string(),
            })?;
        Ok(Self {
            spec: spec.to_owned(),
            cron,
            length: length_value,
        })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

/// Whether a turn may start now, as far as the windows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    /// No `--window` given: any time will do.
    Always,
    /// Inside a window, which closes at `closes` (a turn started before then finishes).
    Open {
        /// When the window that is open now closes (the latest, if several overlap).
        closes: SystemTime,
    },
    /// Outside every window.
    Closed {
        /// When the next window opens; `None` when no expression matches again.
        opens: Option<SystemTime>,
    },
}

impl WindowState {
    /// True unless outside every window.
    pub fn allows_start(&self) -> bool {
        !matches!(self, WindowState::Closed { .. })
    }
}

impl fmt::Display for WindowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |t: &SystemTime| humantime::format_rfc3339_seconds(*t).to_string();
        match self {
            WindowState::Always => f.write_str("no maintenance window set (any time)"),
            WindowState::Open { closes } => {
                write!(f, "inside a maintenance window until {}", at(closes))
            }
            WindowState::Closed { opens: Some(t) } => {
                write!(
                    f,
                    "outside the maintenance windows; the next opens at {}",
                    at(t)
                )
            }
            WindowState::Closed { opens: None } => {
                f.write_str("outside the maintenance windows; none opens again")
            }
        }
    }
}

/// Where `now` falls against `windows`: a window whose last opening is at or before `now`
/// and which has not yet run its length is open; else the earliest next opening.
pub fn state_at(windows: &[Window], now: SystemTime) -> WindowState {
    if windows.is_empty() {
        return WindowState::Always;
    }
    let closes = windows
        .iter()
        .filter_map(|w| {
            let closes = w.last_opening(now)?.checked_add(w.length)?;
            (closes > now).then_some(closes)
        })
        .max();
    if let Some(closes) = closes {
        return WindowState::Open { closes };
    }
    WindowState::Closed {
        opens: windows.iter().filter_map(|w| w.next_opening(now)).min(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2027-01-15T08:00:00Z, a Friday.
    fn friday_8am() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    fn windows(specs: &[&str]) -> Vec<Window> {
        specs.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_fixture_time_is_what_the_tests_say() {
        assert_eq!(friday_8am(), at("2027-01-15T08:00:00Z"));
    }

    /// A window names itself as the operator wrote it (the hold reason, `plan`, the logs);
    /// the mutant that printed nothing went unseen before this test.
    #[test]
    fn a_window_displays_its_spec() {
        let w: Window = "0 2 * * SAT 4h".parse().unwrap();
        assert_eq!(w.to_string(), "0 2 * * SAT 4h");
    }

    #[test]
    fn no_window_means_any_time() {
        assert_eq!(state_at(&[], friday_8am()), WindowState::Always);
        assert!(WindowState::Always.allows_start());
    }

    #[test]
    fn inside_a_window_until_its_length_has_run() {
        let w = windows(&["0 7 * * FRI 2h"]);
        let open = state_at(&w, friday_8am());
        assert_eq!(
            open,
            WindowState::Open {
                closes: at("2027-01-15T09:00:00Z")
            }
        );
        assert!(open.allows_start());
        // The opening instant itself is inside; the closing instant is not.
        assert!(state_at(&w, at("2027-01-15T07:00:00Z")).allows_start());
        assert_eq!(
            state_at(&w, at("2027-01-15T09:00:00Z")),
            WindowState::Closed {
                opens: Some(at("2027-01-22T07:00:00Z"))
            }
        );
    }

    #[test]
    fn outside_says_when_the_next_window_opens() {
        let w = windows(&["0 2 * * SAT 4h"]);
        let closed = state_at(&w, friday_8am());
        assert_eq!(
            closed,
            WindowState::Closed {
                opens: Some(at("2027-01-16T02:00:00Z"))
            }
        );
        assert!(!closed.allows_start());
        assert_eq!(
            closed.to_string(),
            "outside the maintenance windows; the next opens at 2027-01-16T02:00:00Z"
        );
    }

    #[test]
    fn the_earliest_of_several_windows_opens_next_and_any_open_one_allows() {
        let w = windows(&["0 2 * * SAT 4h", "30 22 * * 1-5 90m"]);
        assert_eq!(
            state_at(&w, friday_8am()),
            WindowState::Closed {
                opens: Some(at("2027-01-15T22:30:00Z"))
            }
        );
        assert_eq!(
            state_at(&w, at("2027-01-15T23:00:00Z")),
            WindowState::Open {
                closes: at("2027-01-16T00:00:00Z")
            }
        );
        assert_eq!(
            state_at(&w, at("2027-01-16T03:00:00Z")),
            WindowState::Open {
                closes: at("2027-01-16T06:00:00Z")
            }
        );
    }

    #[test]
    fn a_window_spanning_midnight_and_seconds_granularity() {
        let w = windows(&["0 23 * * * 2h"]);
        assert!(state_at(&w, at("2027-01-16T00:30:00Z")).allows_start());
        assert!(!state_at(&w, at("2027-01-16T01:00:00Z")).allows_start());
        let w = windows(&["5 0 8 * * * 10s"]);
        assert_eq!(
            state_at(&w, friday_8am()),
            WindowState::Closed {
                opens: Some(at("2027-01-15T08:00:05Z"))
            }
        );
        assert!(state_at(&w, at("2027-01-15T08:00:14Z")).allows_start());
        assert!(!state_at(&w, at("2027-01-15T08:00:15Z")).allows_start());
    }

    #[test]
    fn a_window_that_never_matches_never_opens() {
        let w = windows(&["0 0 30 2 * 1h"]);
        assert_eq!(
            state_at(&w, friday_8am()),
            WindowState::Closed { opens: None }
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, want) in [
            ("4h", "needs a cron expression and a length"),
            ("0 2 * * SAT", "is not a duration"),
            ("0 2 * * SAT 0s", "is not a duration"),
            ("0 25 * * SAT 4h", "cron"),
            ("0 2 * * 4h", "cron"),
            ("0 2 * * SAT 2027 4h", "cron"),
            ("", "needs a cron expression"),
        ] {
            let err = spec.parse::<Window>().unwrap_err().to_string();
            assert!(err.contains(want), "{spec:?}: {err}");
        }
        let w: Window = " 0 2 * * sat 4h ".parse().unwrap();
        assert_eq!(w.spec(), "0 2 * * sat 4h");
        assert_eq!(w.length(), Duration::from_secs(4 * 3600));
    }
}
