//! Which recovery points a policy keeps: a pure function of the points, the rules, the time
//! zone and the present, so it can be tested over years of calendar in microseconds.
//!
//! Rules count calendar buckets in the policy's zone, the current one included:
//! - daily N: every scheduled point of the last N days;
//! - weekly N[:DAY]: per ISO week (Monday to Sunday) of the last N, the last point made on DAY
//!   (any day when none is given);
//! - monthly N[:first|last|DAY]: per month of the last N, its first point, its last, or the last
//!   made on day DAY of the month (a month shorter than DAY uses its last day);
//! - yearly N[:MONTH]: per year of the last N, the last point made in MONTH (the year's last
//!   point when none is given).
//!
//! A scheduled point is kept while any rule keeps it; an on-demand point until its
//! retain-until.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use vault::PointKind;

use crate::error::{EngineError, Result};
use crate::schedule::{parse_weekday, weekday_short};

/// Largest counts per rule (Azure's limits).
pub const MAX_DAILY: u32 = 9999;
/// See [`MAX_DAILY`].
pub const MAX_WEEKLY: u32 = 5163;
/// See [`MAX_DAILY`].
pub const MAX_MONTHLY: u32 = 1188;
/// See [`MAX_DAILY`].
pub const MAX_YEARLY: u32 = 99;

/// Which point of a month a monthly rule keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonthPick {
    /// The month's first point.
    First,
    /// The month's last point.
    Last,
    /// The last point made on this day of the month (clamped to the month's length).
    Day(i8),
}

/// The retention rules of a policy. Unset rules keep nothing. Stored as the rules' CLI
/// spelling (`{"weekly": "12:sun"}`), so catalog documents read like the commands that made them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RetentionSpec", into = "RetentionSpec")]
pub struct Retention {
    /// Days of scheduled points to keep.
    pub daily: Option<u32>,
    /// Weeks, and the weekday whose point is kept.
    pub weekly: Option<(u32, Option<Weekday>)>,
    /// Months, and which point of each is kept.
    pub monthly: Option<(u32, MonthPick)>,
    /// Years, and the month whose last point is kept.
    pub yearly: Option<(u32, Option<i8>)>,
}

/// The stored spelling of [`Retention`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RetentionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    daily: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weekly: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    monthly: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    yearly: Option<String>,
}

impl TryFrom<RetentionSpec> for Retention {
    type Error = EngineError;

    fn try_from(spec: RetentionSpec) -> Result<Retention> {
        Retention::parse(
            spec.daily.as_deref(),
            spec.weekly.as_deref(),
            spec.monthly.as_deref(),
            spec.yearly.as_deref(),
        )
    }
}

impl From<Retention> for RetentionSpec {
    fn from(r: Retention) -> RetentionSpec {
        RetentionSpec {
            daily: r.daily.map(|n| n.to_string()),
            weekly: r.weekly.map(|(n, day)| match day {
                Some(d) => format!("{n}:{}", weekday_short(d).to_ascii_lowercase()),
                None => n.to_string(),
            }),
            monthly: r.monthly.map(|(n, pick)| match pick {
                MonthPick::First => format!("{n}:first"),
                MonthPick::Last => format!("{n}:last"),
                MonthPick::Day(d) => format!("{n}:{d}"),
            }),
            yearly: r.yearly.map(|(n, month)| match month {
                Some(m) => format!("{n}:{}", MONTHS[(m - 1) as usize]),
                None => n.to_string(),
            }),
        }
    }
}

/// What retention knows of one point.
#[derive(Clone, Debug)]
pub struct PointFacts {
    /// Point id.
    pub id: String,
    /// Snapshot time.
    pub time: Timestamp,
    /// Scheduled or on-demand.
    pub kind: PointKind,
    /// Until when an on-demand point is kept.
    pub retain_until: Option<Timestamp>,
}

/// Keep or expire, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "verdict", content = "reasons", rename_all = "lowercase")]
pub enum Verdict {
    /// Kept, by these rules.
    Keep(Vec<String>),
    /// Expired, for this reason.
    Expire(String),
}

impl Verdict {
    /// Whether the point stays.
    pub fn keeps(&self) -> bool {
        matches!(self, Verdict::Keep(_))
    }
}

/// How long on-demand points are kept when the operator does not say.
pub const DEFAULT_ON_DEMAND_DAYS: i64 = 30;

impl Retention {
    /// Parse the CLI's rule arguments and check their limits.
    pub fn parse(
        daily: Option<&str>,
        weekly: Option<&str>,
        monthly: Option<&str>,
        yearly: Option<&str>,
    ) -> Result<Retention> {
        let retention = Retention {
            daily: daily.map(|s| count(s, "daily", MAX_DAILY)).transpose()?,
            weekly: weekly
                .map(|s| {
                    let (n, day) = split_rule(s);
                    Ok::<_, EngineError>((
                        count(n, "weekly", MAX_WEEKLY)?,
                        day.map(parse_weekday).transpose()?,
                    ))
                })
                .transpose()?,
            monthly: monthly
                .map(|s| {
                    let (n, pick) = split_rule(s);
                    Ok::<_, EngineError>((count(n, "monthly", MAX_MONTHLY)?, parse_month_pick(pick)?))
                })
                .transpose()?,
            yearly: yearly
                .map(|s| {
                    let (n, month) = split_rule(s);
                    Ok::<_, EngineError>((
                        count(n, "yearly", MAX_YEARLY)?,
                        month.map(parse_month).transpose()?,
                    ))
                })
                .transpose()?,
        };
        retention.check()?;
        Ok(retention)
    }

    /// At least one rule, each within its limit.
    pub fn check(&self) -> Result<()> {
        if self.daily.is_none() && self.weekly.is_none() && self.monthly.is_none() && self.yearly.is_none() {
            return Err(EngineError::Invalid(
                "a policy needs at least one retention rule (--keep-daily, --keep-weekly, --keep-monthly \
                 or --keep-yearly)"
                    .into(),
            ));
        }
        let limits = [
            ("daily", self.daily, MAX_DAILY),
            ("weekly", self.weekly.map(|w| w.0), MAX_WEEKLY),
            ("monthly", self.monthly.map(|m| m.0), MAX_MONTHLY),
            ("yearly", self.yearly.map(|y| y.0), MAX_YEARLY),
        ];
        for (rule, value, max) in limits {
            if let Some(n) = value {
                check_count(n, rule, max)?;
            }
        }
        Ok(())
    }

    /// The rules as the CLI writes them, for listings.
    pub fn describe(&self) -> String {
        let spec = RetentionSpec::from(self.clone());
        [("daily", spec.daily), ("weekly", spec.weekly), ("monthly", spec.monthly), ("yearly", spec.yearly)]
            .into_iter()
            .filter_map(|(rule, value)| value.map(|v| format!("{rule} {v}")))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The verdict on every point (same order as `points`) at `now`.
    pub fn evaluate(&self, points: &[PointFacts], tz: &TimeZone, now: Timestamp) -> Vec<Verdict> {
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); points.len()];
        let local: Vec<Date> = points.iter().map(|p| tz.to_datetime(p.time).date()).collect();
        let today = tz.to_datetime(now).date();
        let scheduled: Vec<usize> =
            (0..points.len()).filter(|&i| points[i].kind == PointKind::Scheduled).collect();

        if let Some(days) = self.daily {
            for &i in &scheduled {
                if day_number(today) - day_number(local[i]) < i64::from(days) {
                    reasons[i].push(format!("daily {}", local[i]));
                }
            }
        }
        if let Some((weeks, day)) = self.weekly {
            let this_week = week_number(today);
            let eligible = scheduled.iter().copied().filter(|&i| {
                this_week - week_number(local[i]) < i64::from(weeks)
                    && day.is_none_or(|d| local[i].weekday() == d)
            });
            for (_, i) in per_bucket(eligible, |i| week_number(local[i]), points, false) {
                let iso = local[i].iso_week_date();
                reasons[i].push(format!("weekly {}-W{:02}", iso.year(), iso.week()));
            }
        }
        if let Some((months, pick)) = self.monthly {
            let this_month = month_number(today);
            let in_range = scheduled
                .iter()
                .copied()
                .filter(|&i| this_month - month_number(local[i]) < i64::from(months))
                .filter(|&i| match pick {
                    MonthPick::Day(d) => local[i].day() == d.min(local[i].days_in_month()),
                    _ => true,
                });
            let earliest = pick == MonthPick::First;
            for (_, i) in per_bucket(in_range, |i| month_number(local[i]), points, earliest) {
                reasons[i].push(format!("monthly {}-{:02}", local[i].year(), local[i].month()));
            }
        }
        if let Some((years, month)) = self.yearly {
            let eligible = scheduled.iter().copied().filter(|&i| {
                i64::from(today.year()) - i64::from(local[i].year()) < i64::from(years)
                    && month.is_none_or(|m| local[i].month() == m)
            });
            for (_, i) in per_bucket(eligible, |i| i64::from(local[i].year()), points, false) {
                reasons[i].push(format!("yearly {}", local[i].year()));
            }
        }

        points
            .iter()
            .zip(reasons)
            .map(|(point, reasons)| match point.kind {
                PointKind::OnDemand => on_demand_verdict(point, now),
                PointKind::Scheduled if reasons.is_empty() => {
                    Verdict::Expire(format!("no rule of the policy ({}) keeps it", self.describe()))
                }
                PointKind::Scheduled => Verdict::Keep(reasons),
            })
            .collect()
    }
}

/// On-demand points live until their retain-until date (the default when they have none).
pub fn on_demand_verdict(point: &PointFacts, now: Timestamp) -> Verdict {
    let until = point.retain_until.unwrap_or_else(|| default_retain_until(point.time));
    if now < until {
        Verdict::Keep(vec![format!("on-demand until {until}")])
    } else {
        Verdict::Expire(format!("on-demand retention ended {until}"))
    }
}

/// When an on-demand point made at `time` expires if the operator did not say.
pub fn default_retain_until(time: Timestamp) -> Timestamp {
    time.checked_add(jiff::SignedDuration::from_hours(24 * DEFAULT_ON_DEMAND_DAYS)).unwrap_or(Timestamp::MAX)
}

fn day_number(d: Date) -> i64 {
    i64::from(d.since(Date::ZERO).map(|s| s.get_days()).unwrap_or(0))
}

/// Weeks counted by their Monday, so ISO week 53 and year ends need no special case.
fn week_number(d: Date) -> i64 {
    (day_number(d) - i64::from(d.weekday().to_monday_zero_offset())).div_euclid(7)
}

fn month_number(d: Date) -> i64 {
    i64::from(d.year()) * 12 + i64::from(d.month())
}

/// Per bucket, the earliest (`earliest`) or the latest point among `indices`.
fn per_bucket(
    indices: impl Iterator<Item = usize>,
    bucket: impl Fn(usize) -> i64,
    points: &[PointFacts],
    earliest: bool,
) -> BTreeMap<i64, usize> {
    let mut out: BTreeMap<i64, usize> = BTreeMap::new();
    for i in indices {
        let entry = out.entry(bucket(i)).or_insert(i);
        let better = if earliest {
            points[i].time < points[*entry].time
        } else {
            points[i].time >= points[*entry].time
        };
        if better {
            *entry = i;
        }
    }
    out
}

const MONTHS: [&str; 12] =
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

fn split_rule(text: &str) -> (&str, Option<&str>) {
    match text.split_once(':') {
        Some((n, rest)) => (n, Some(rest)),
        None => (text, None),
    }
}

fn count(text: &str, rule: &str, max: u32) -> Result<u32> {
    let n: u32 = text.trim().parse().map_err(|_| {
        EngineError::Invalid(format!("--keep-{rule} {text:?}: the count must be a whole number"))
    })?;
    check_count(n, rule, max)?;
    Ok(n)
}

fn check_count(n: u32, rule: &str, max: u32) -> Result<()> {
    if n == 0 || n > max {
        return Err(EngineError::Limit(format!("--keep-{rule} {n}: keep between 1 and {max}")));
    }
    Ok(())
}

fn parse_month_pick(text: Option<&str>) -> Result<MonthPick> {
    match text.map(str::to_ascii_lowercase).as_deref() {
        None | Some("last") => Ok(MonthPick::Last),
        Some("first") => Ok(MonthPick::First),
        Some(day) => match day.parse::<i8>() {
            Ok(d @ 1..=31) => Ok(MonthPick::Day(d)),
            _ => Err(EngineError::Invalid(format!(
                "--keep-monthly N:{day}: say first, last or a day of the month (1-31)"
            ))),
        },
    }
}

fn parse_month(text: &str) -> Result<i8> {
    let lower = text.to_ascii_lowercase();
    if let Ok(n @ 1..=12) = lower.parse::<i8>() {
        return Ok(n);
    }
    MONTHS.iter().position(|m| lower.starts_with(m) && lower.len() >= 3).map(|i| i as i8 + 1).ok_or_else(
        || EngineError::Invalid(format!("--keep-yearly N:{text}: say a month (jan … dec or 1-12)")),
    )
}
