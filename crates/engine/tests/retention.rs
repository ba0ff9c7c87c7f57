//! Retention over calendars: month ends, leap days, ISO week 53, daylight-saving weeks.
//! Each case lists daily points (by local date), the rules, "now", and exactly which points
//! survive with which reasons.

use engine::retention::{PointFacts, Retention, Verdict};
use engine::schedule::time_zone;
use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use vault::PointKind;

struct Case {
    name: &'static str,
    zone: &'static str,
    /// Scheduled points every day from `first` to `last` at `at` (local time).
    first: &'static str,
    last: &'static str,
    at: &'static str,
    rules: [Option<&'static str>; 4],
    now: &'static str,
    /// (local date of a kept point, reasons joined by "; ").
    kept: &'static [(&'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        name: "month ends: day 31 falls back to each month's last day",
        zone: "UTC",
        first: "2026-01-01",
        last: "2026-04-30",
        at: "02:00",
        rules: [None, None, Some("3:31"), None],
        now: "2026-04-30T12:00:00Z",
        kept: &[
            ("2026-02-28", "monthly 2026-02"),
            ("2026-03-31", "monthly 2026-03"),
            ("2026-04-30", "monthly 2026-04"),
        ],
    },
    Case {
        name: "leap day is February's last day; first-of-month picks day 1",
        zone: "UTC",
        first: "2028-02-01",
        last: "2028-03-10",
        at: "02:00",
        rules: [None, None, Some("2:last"), Some("1:feb")],
        now: "2028-03-10T12:00:00Z",
        kept: &[("2028-02-29", "monthly 2028-02; yearly 2028"), ("2028-03-10", "monthly 2028-03")],
    },
    Case {
        name: "first point of each month",
        zone: "UTC",
        first: "2028-01-15",
        last: "2028-03-10",
        at: "02:00",
        rules: [None, None, Some("2:first"), None],
        now: "2028-03-10T12:00:00Z",
        kept: &[("2028-02-01", "monthly 2028-02"), ("2028-03-01", "monthly 2028-03")],
    },
    Case {
        name: "ISO week 53 of 2026 is a week like any other",
        zone: "UTC",
        first: "2026-12-14",
        last: "2027-01-05",
        at: "02:00",
        rules: [Some("2"), Some("2:sun"), None, None],
        now: "2027-01-05T12:00:00Z",
        kept: &[
            ("2027-01-03", "weekly 2026-W53"),
            ("2027-01-04", "daily 2027-01-04"),
            ("2027-01-05", "daily 2027-01-05"),
        ],
    },
    Case {
        name: "last point of the week when no day is given, across the year end",
        zone: "UTC",
        first: "2026-12-20",
        last: "2027-01-05",
        at: "02:00",
        rules: [None, Some("3"), None, None],
        now: "2027-01-05T12:00:00Z",
        kept: &[
            ("2026-12-27", "weekly 2026-W52"),
            ("2027-01-03", "weekly 2026-W53"),
            ("2027-01-05", "weekly 2027-W01"),
        ],
    },
    Case {
        // 00:30 on Sunday 29 March in Madrid is still Saturday in UTC (23:30Z, CET).
        name: "Madrid spring-forward week: Sunday is Sunday in Madrid",
        zone: "Europe/Madrid",
        first: "2026-03-20",
        last: "2026-04-01",
        at: "00:30",
        rules: [Some("3"), Some("2:sun"), None, None],
        now: "2026-04-01T10:00:00Z",
        kept: &[
            ("2026-03-29", "weekly 2026-W13"),
            ("2026-03-30", "daily 2026-03-30"),
            ("2026-03-31", "daily 2026-03-31"),
            ("2026-04-01", "daily 2026-04-01"),
        ],
    },
    Case {
        name: "Madrid fall-back week: daily days are local days",
        zone: "Europe/Madrid",
        first: "2026-10-20",
        last: "2026-10-26",
        at: "23:30",
        rules: [Some("2"), Some("2:sun"), None, None],
        now: "2026-10-26T23:45:00+01:00",
        kept: &[("2026-10-25", "daily 2026-10-25; weekly 2026-W43"), ("2026-10-26", "daily 2026-10-26")],
    },
    Case {
        // 23:30 EST on Sunday 1 November is Monday 04:30 in UTC.
        name: "New York fall-back week: the Sunday point is kept as Sunday's",
        zone: "America/New_York",
        first: "2026-10-28",
        last: "2026-11-02",
        at: "23:30",
        rules: [None, Some("2:sun"), None, None],
        now: "2026-11-03T12:00:00Z",
        kept: &[("2026-11-01", "weekly 2026-W44")],
    },
    Case {
        name: "New York spring-forward week, two weeks of Sundays",
        zone: "America/New_York",
        first: "2026-03-01",
        last: "2026-03-11",
        at: "23:30",
        rules: [None, Some("2:sun"), None, Some("1")],
        now: "2026-03-12T12:00:00Z",
        kept: &[("2026-03-08", "weekly 2026-W10"), ("2026-03-11", "yearly 2026")],
    },
    Case {
        name: "yearly keeps a chosen month's last point over several years",
        zone: "UTC",
        first: "2024-11-25",
        last: "2026-12-05",
        at: "02:00",
        rules: [None, None, None, Some("3:dec")],
        now: "2026-12-05T12:00:00Z",
        kept: &[("2024-12-31", "yearly 2024"), ("2025-12-31", "yearly 2025"), ("2026-12-05", "yearly 2026")],
    },
];

fn daily_points(zone: &str, first: &str, last: &str, at: &str) -> Vec<PointFacts> {
    let tz = time_zone(zone).unwrap();
    let mut date: Date = first.parse().unwrap();
    let last: Date = last.parse().unwrap();
    let mut out = Vec::new();
    while date <= last {
        let local: DateTime = format!("{date}T{at}").parse().unwrap();
        let time = engine::schedule::resolve(&tz, local);
        out.push(PointFacts { id: date.to_string(), time, kind: PointKind::Scheduled, retain_until: None });
        date = date.tomorrow().unwrap();
    }
    out
}

#[test]
fn retention_table() {
    for case in CASES {
        let [d, w, m, y] = case.rules;
        let retention = Retention::parse(d, w, m, y).unwrap();
        let points = daily_points(case.zone, case.first, case.last, case.at);
        let tz = time_zone(case.zone).unwrap();
        let now: Timestamp = case.now.parse().unwrap();
        let verdicts = retention.evaluate(&points, &tz, now);
        let kept: Vec<(String, String)> = points
            .iter()
            .zip(&verdicts)
            .filter_map(|(p, v)| match v {
                Verdict::Keep(reasons) => Some((p.id.clone(), reasons.join("; "))),
                Verdict::Expire(_) => None,
            })
            .collect();
        let expected: Vec<(String, String)> =
            case.kept.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(kept, expected, "case: {}", case.name);
        for (p, v) in points.iter().zip(&verdicts) {
            if let Verdict::Expire(reason) = v {
                assert!(
                    reason.contains("no rule of the policy"),
                    "{}: {} expired for {reason}",
                    case.name,
                    p.id
                );
            }
        }
    }
}

#[test]
fn on_demand_points_expire_at_their_retain_until() {
    let retention = Retention::parse(Some("7"), None, None, None).unwrap();
    let tz = time_zone("UTC").unwrap();
    let t = |s: &str| s.parse::<Timestamp>().unwrap();
    let points = vec![
        PointFacts {
            id: "a".into(),
            time: t("2026-01-01T00:00:00Z"),
            kind: PointKind::OnDemand,
            retain_until: None,
        },
        PointFacts {
            id: "b".into(),
            time: t("2026-01-01T00:00:00Z"),
            kind: PointKind::OnDemand,
            retain_until: Some(t("2026-06-01T00:00:00Z")),
        },
    ];
    // Default: 30 days.
    let v = retention.evaluate(&points, &tz, t("2026-01-30T23:59:59Z"));
    assert!(v[0].keeps() && v[1].keeps());
    let v = retention.evaluate(&points, &tz, t("2026-01-31T00:00:00Z"));
    assert!(!v[0].keeps() && v[1].keeps(), "{v:?}");
    let v = retention.evaluate(&points, &tz, t("2026-06-01T00:00:00Z"));
    assert!(!v[1].keeps());
}

#[test]
fn retention_limits_are_enforced() {
    assert!(Retention::parse(None, None, None, None).unwrap_err().to_string().contains("at least one"));
    for (rules, limit) in [
        ([Some("10000"), None, None, None], "9999"),
        ([None, Some("5164"), None, None], "5163"),
        ([None, None, Some("1189"), None], "1188"),
        ([None, None, None, Some("100")], "99"),
        ([Some("0"), None, None, None], "9999"),
    ] {
        let [d, w, m, y] = rules;
        let err = Retention::parse(d, w, m, y).unwrap_err().to_string();
        assert!(err.contains(limit), "{err}");
    }
    assert!(Retention::parse(Some("9999"), Some("5163:sat"), Some("1188:first"), Some("99:jan")).is_ok());
    assert!(Retention::parse(None, Some("4:someday"), None, None).is_err());
    assert!(Retention::parse(None, None, Some("4:32"), None).is_err());
    // The stored spelling reads back to the same rules.
    let r = Retention::parse(Some("30"), Some("12:sun"), Some("60:last"), Some("10:jan")).unwrap();
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(json, r#"{"daily":"30","weekly":"12:sun","monthly":"60:last","yearly":"10:jan"}"#);
    assert_eq!(serde_json::from_str::<Retention>(&json).unwrap(), r);
}
