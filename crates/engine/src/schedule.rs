//! When a policy's backups run: wall-clock times in the policy's IANA time zone, turned into
//! instants with daylight-saving rules an operator can predict.
//!
//! - A time that does not exist (spring forward: 02:30 in Madrid on the last Sunday of March)
//!   runs once, at the first valid instant after it: the instant the clocks jump (03:00).
//! - A time that occurs twice (fall back) runs once, at its first occurrence.
//! - Two slots that land on one instant (02:00 and 02:30 both in a gap) run once.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

use crate::error::{EngineError, Result};

/// Hours between runs an hourly schedule may use (Azure's choices).
pub const HOURLY_INTERVALS: [u8; 4] = [4, 6, 8, 12];

/// How often a policy runs, in wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Every day at one time.
    Daily { at: Time },
    /// On some weekdays at one time.
    Weekly { days: Vec<Weekday>, at: Time },
    /// Every `every` hours from `from`, for `window` hours each day.
    Hourly { every: u8, from: Time, window: u8 },
}

/// One scheduled run: when it is due and until when a missed run may still be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The run instant.
    pub at: Timestamp,
    /// End of the day (daily, weekly) or window (hourly) the run belongs to.
    pub window_end: Timestamp,
}

impl Schedule {
    /// Wall-clock slots whose window starts on `date`, with the civil end of that window.
    fn civil_slots(&self, date: Date) -> Vec<(DateTime, DateTime)> {
        let end_of_day = date.tomorrow().map(|d| d.to_datetime(Time::midnight())).unwrap_or(DateTime::MAX);
        match self {
            Schedule::Daily { at } => vec![(date.to_datetime(*at), end_of_day)],
            Schedule::Weekly { days, at } if days.contains(&date.weekday()) => {
                vec![(date.to_datetime(*at), end_of_day)]
            }
            Schedule::Weekly { .. } => vec![],
            Schedule::Hourly { every, from, window } => {
                let start = date.to_datetime(*from);
                let end = start.checked_add(i64::from(*window).hours()).unwrap_or(DateTime::MAX);
                (0..24 / *every)
                    .map(|k| i64::from(k) * i64::from(*every))
                    .filter(|offset| *offset <= i64::from(*window))
                    .filter_map(|offset| start.checked_add(offset.hours()).ok())
                    .map(|at| (at, end))
                    .collect()
            }
        }
    }

    /// Every run instant of windows starting from `first` to `last` (local dates), in order.
    fn slots_between(&self, tz: &TimeZone, first: Date, last: Date) -> Vec<Slot> {
        let mut out: Vec<Slot> = Vec::new();
        let mut date = first;
        while date <= last {
            for (at, end) in self.civil_slots(date) {
                out.push(Slot { at: resolve(tz, at), window_end: resolve(tz, end) });
            }
            match date.tomorrow() {
                Ok(next) => date = next,
                Err(_) => break,
            }
        }
        out.sort_by_key(|s| s.at);
        out.dedup_by_key(|s| s.at);
        out
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, tz: &TimeZone, after: Timestamp) -> Option<Slot> {
        let today = tz.to_datetime(after).date();
        // A weekly schedule runs at least once in 8 days; windows reach at most a day back.
        let first = today.yesterday().unwrap_or(today);
        let last = today.checked_add(8.days()).unwrap_or(today);
        self.slots_between(tz, first, last).into_iter().find(|s| s.at > after)
    }

    /// The `count` runs after `after`.
    pub fn upcoming(&self, tz: &TimeZone, after: Timestamp, count: usize) -> Vec<Slot> {
        let mut out = Vec::with_capacity(count);
        let mut from = after;
        while out.len() < count {
            let Some(slot) = self.next_after(tz, from) else { break };
            from = slot.at;
            out.push(slot);
        }
        out
    }

    /// The latest run at or before `now`.
    pub fn latest_at_or_before(&self, tz: &TimeZone, now: Timestamp) -> Option<Slot> {
        let today = tz.to_datetime(now).date();
        let first = today.checked_sub(8.days()).unwrap_or(today);
        self.slots_between(tz, first, today).into_iter().rev().find(|s| s.at <= now)
    }

    /// A run that was due since `done_until` and whose day or window is still open at `now`:
    /// the one a scheduler that was down makes once when it starts.
    pub fn missed(&self, tz: &TimeZone, done_until: Timestamp, now: Timestamp) -> Option<Slot> {
        self.latest_at_or_before(tz, now).filter(|s| s.at > done_until && now < s.window_end)
    }
}

/// The instant of a wall-clock time in `tz`: a time in a gap becomes the instant the gap ends,
/// a time in a fold its first occurrence.
pub fn resolve(tz: &TimeZone, dt: DateTime) -> Timestamp {
    let ambiguous = tz.to_ambiguous_timestamp(dt);
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { .. } | AmbiguousOffset::Fold { .. } => {
            ambiguous.earlier().unwrap_or(Timestamp::MAX)
        }
        AmbiguousOffset::Gap { .. } => {
            // `earlier` maps the missing time to an instant before the jump; the jump itself is
            // the next transition after it.
            let before_jump = ambiguous.earlier().unwrap_or(Timestamp::MIN);
            tz.following(before_jump).next().map(|t| t.timestamp()).unwrap_or(before_jump)
        }
    }
}

/// Parse an IANA time zone name, with an error that says what was wrong.
pub fn time_zone(name: &str) -> Result<TimeZone> {
    TimeZone::get(name).map_err(|_| {
        EngineError::Invalid(format!(
            "{name:?} is not a known IANA time zone (examples: Europe/Madrid, America/New_York, UTC)"
        ))
    })
}

fn parse_time(text: &str) -> Result<Time> {
    let bad = || EngineError::Invalid(format!("{text:?} is not a time of day; write HH:MM, e.g. 02:30"));
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h.to_string().len() > 2 || m.to_string().len() > 2 {
        return Err(bad());
    }
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// Parse a weekday name: `mon`, `Monday`, `tue`…
pub fn parse_weekday(text: &str) -> Result<Weekday> {
    let lower = text.to_ascii_lowercase();
    let days = [
        ("mon", Weekday::Monday),
        ("tue", Weekday::Tuesday),
        ("wed", Weekday::Wednesday),
        ("thu", Weekday::Thursday),
        ("fri", Weekday::Friday),
        ("sat", Weekday::Saturday),
        ("sun", Weekday::Sunday),
    ];
    days.iter()
        .find(|(short, day)| lower == *short || lower == weekday_name(*day).to_ascii_lowercase())
        .map(|(_, day)| *day)
        .ok_or_else(|| EngineError::Invalid(format!("{text:?} is not a weekday (mon, tue, … sun)")))
}

/// Three-letter name of a weekday, as schedules and rules write it.
pub fn weekday_short(day: Weekday) -> &'static str {
    &weekday_name(day)[..3]
}

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "Monday",
        Weekday::Tuesday => "Tuesday",
        Weekday::Wednesday => "Wednesday",
        Weekday::Thursday => "Thursday",
        Weekday::Friday => "Friday",
        Weekday::Saturday => "Saturday",
        Weekday::Sunday => "Sunday",
    }
}

impl FromStr for Schedule {
    type Err = EngineError;

    fn from_str(text: &str) -> Result<Self> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let usage = || {
            EngineError::Invalid(format!(
                "{text:?} is not a schedule; write `daily HH:MM`, `weekly DAY[,DAY…] HH:MM` or \
                 `every Nh from HH:MM for Mh` (N: 4, 6, 8 or 12)"
            ))
        };
        match words.as_slice() {
            ["daily", at] => Ok(Schedule::Daily { at: parse_time(at)? }),
            ["weekly", days, at] => {
                let mut days = days.split(',').map(parse_weekday).collect::<Result<Vec<_>>>()?;
                days.sort_by_key(|d| d.to_monday_zero_offset());
                days.dedup();
                Ok(Schedule::Weekly { days, at: parse_time(at)? })
            }
            ["every", every, "from", from, "for", window] => {
                let hours = |s: &str| s.strip_suffix('h').and_then(|n| n.parse::<u8>().ok());
                let every = hours(every).ok_or_else(usage)?;
                let window = hours(window).ok_or_else(usage)?;
                if !HOURLY_INTERVALS.contains(&every) {
                    return Err(EngineError::Limit(format!(
                        "an hourly schedule runs every 4, 6, 8 or 12 hours, not every {every}"
                    )));
                }
                if window == 0 || window > 24 {
                    return Err(EngineError::Limit(format!(
                        "an hourly window lasts 1 to 24 hours, not {window}"
                    )));
                }
                Ok(Schedule::Hourly { every, from: parse_time(from)?, window })
            }
            _ => Err(usage()),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |t: &Time| format!("{:02}:{:02}", t.hour(), t.minute());
        match self {
            Schedule::Daily { at } => write!(f, "daily {}", hm(at)),
            Schedule::Weekly { days, at } => {
                let days: Vec<&str> = days.iter().map(|d| weekday_short(*d)).collect();
                write!(f, "weekly {} {}", days.join(",").to_ascii_lowercase(), hm(at))
            }
            Schedule::Hourly { every, from, window } => {
                write!(f, "every {every}h from {} for {window}h", hm(from))
            }
        }
    }
}

impl serde::Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn runs(spec: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        let schedule: Schedule = spec.parse().unwrap();
        let tz = time_zone(zone).unwrap();
        schedule.upcoming(&tz, ts(from), n).iter().map(|s| s.at.to_string()).collect()
    }

    #[test]
    fn schedules_parse_and_print_back() {
        for spec in ["daily 02:30", "weekly mon,fri 23:00", "every 4h from 08:00 for 12h"] {
            assert_eq!(spec.parse::<Schedule>().unwrap().to_string(), spec);
        }
        assert_eq!(
            "weekly Fri,mon,fri 01:00".parse::<Schedule>().unwrap().to_string(),
            "weekly mon,fri 01:00"
        );
        for bad in ["daily 25:00", "daily 2", "hourly 3", "every 5h from 08:00 for 12h", "weekly xyz 01:00"] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
        assert!(time_zone("Mars/Olympus").is_err());
    }

    #[test]
    fn spring_forward_runs_once_when_the_clocks_jump() {
        // Madrid, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00Z).
        assert_eq!(
            runs("daily 02:30", "Europe/Madrid", "2026-03-27T12:00:00Z", 4),
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // 02:30 does not exist: 03:00 CEST
                "2026-03-30T00:30:00Z", // 02:30 CEST
                "2026-03-31T00:30:00Z",
            ]
        );
    }

    #[test]
    fn fall_back_runs_once_at_the_first_occurrence() {
        // New York, 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens twice.
        assert_eq!(
            runs("daily 01:30", "America/New_York", "2026-10-31T00:00:00Z", 3),
            ["2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
    }

    #[test]
    fn hourly_window_in_a_gap_runs_each_instant_once() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00Z).
        assert_eq!(
            runs("every 4h from 22:00 for 8h", "America/New_York", "2026-03-07T12:00:00Z", 4),
            [
                "2026-03-08T03:00:00Z", // 22:00 EST on the 7th
                "2026-03-08T07:00:00Z", // 02:00 does not exist: 03:00 EDT
                "2026-03-08T10:00:00Z", // 06:00 EDT
                "2026-03-09T02:00:00Z", // 22:00 EDT on the 8th
            ]
        );
    }

    #[test]
    fn missed_run_is_made_only_while_its_day_is_open() {
        let schedule: Schedule = "daily 02:00".parse().unwrap();
        let tz = time_zone("UTC").unwrap();
        let done = ts("2026-05-01T02:00:00Z");
        let missed = schedule.missed(&tz, done, ts("2026-05-02T09:00:00Z")).unwrap();
        assert_eq!(missed.at, ts("2026-05-02T02:00:00Z"));
        assert_eq!(schedule.missed(&tz, missed.at, ts("2026-05-02T10:00:00Z")), None);
        // Down over midnight: yesterday's run is not made any more.
        assert_eq!(schedule.missed(&tz, done, ts("2026-05-03T01:00:00Z")), None);
    }
}
