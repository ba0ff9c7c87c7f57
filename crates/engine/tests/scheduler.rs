//! The scheduler over simulated weeks: exact run instants across both DST changes, restarts in
//! the middle of a day, never a run twice. The clock is simulated; the vault and catalog are
//! real; the runner records what it was asked to do (real backups are tested elsewhere).

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use engine::catalog::policy::Policy;
use engine::retention::Retention;
use engine::scheduler::{self, Clock, Runner, SchedulerOptions};
use engine::services::{policies, protection};
use jiff::Timestamp;

struct SimClock(Mutex<Timestamp>);

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
    async fn sleep_until(&self, until: Timestamp) {
        let mut now = self.0.lock().unwrap();
        *now = (*now).max(until);
    }
}

#[derive(Default)]
struct Recorder {
    clock: Option<Arc<SimClock>>,
    runs: Mutex<Vec<(String, Timestamp, Timestamp)>>,
}

impl Recorder {
    fn record(&self, what: &str, slot: Timestamp) {
        let at = self.clock.as_ref().unwrap().now();
        self.runs.lock().unwrap().push((what.to_string(), slot, at));
    }

    /// (what, run instant) of every backup, in order.
    fn backups(&self) -> Vec<(String, String)> {
        self.runs
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, ..)| w != "cleanup")
            .map(|(w, _, at)| (w.clone(), at.to_string()))
            .collect()
    }
}

impl Runner for Recorder {
    async fn backup(&self, vm: &str, slot: Timestamp) -> engine::Result<()> {
        self.record(vm, slot);
        Ok(())
    }
    async fn cleanup(&self, slot: Timestamp) -> engine::Result<()> {
        self.record("cleanup", slot);
        Ok(())
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

async fn protected(lab: &Lab, vm: &str, schedule: &str, zone: &str, since: Timestamp) {
    let image = lab.path(&format!("{vm}.raw"));
    create(&image, "raw", "1M");
    lab.register(vm, &[("vda", &image)]).await;
    let policy = Policy::new(
        &format!("{vm}-policy"),
        schedule,
        zone,
        Retention::parse(Some("7"), None, None, None).unwrap(),
    )
    .unwrap();
    policies::create(lab.catalog(), &policy).await.unwrap();
    protection::protect(lab.catalog(), vm, &policy.name, &[], since).await.unwrap();
}

async fn run(lab: &Lab, clock: &Arc<SimClock>, recorder: &Recorder, from: &str, until: &str) {
    *clock.0.lock().unwrap() = ts(from);
    let rescan = jiff::SignedDuration::from_hours(6);
    let options = SchedulerOptions { until: Some(ts(until)), rescan, ..Default::default() };
    scheduler::run(lab.vault.vault(), clock.as_ref(), recorder, &options).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_happen_at_exact_instants_across_both_dst_changes() {
    let lab = Lab::new(false).await;
    let start = ts("2026-03-26T00:00:00Z");
    protected(&lab, "madrid", "daily 02:30", "Europe/Madrid", start).await;
    protected(&lab, "newyork", "weekly sun 01:30", "America/New_York", start).await;
    let clock = Arc::new(SimClock(Mutex::new(start)));
    let recorder = Recorder { clock: Some(Arc::clone(&clock)), ..Default::default() };

    run(&lab, &clock, &recorder, "2026-03-26T00:00:00Z", "2026-04-01T00:00:00Z").await;
    let spring: Vec<(String, String)> = recorder.backups();
    let expected_spring = [
        ("madrid", "2026-03-26T01:30:00Z"),
        ("madrid", "2026-03-27T01:30:00Z"),
        ("madrid", "2026-03-28T01:30:00Z"),
        ("madrid", "2026-03-29T01:00:00Z"), // 02:30 does not exist: 03:00 CEST
        ("newyork", "2026-03-29T05:30:00Z"), // 01:30 EDT
        ("madrid", "2026-03-30T00:30:00Z"),
        ("madrid", "2026-03-31T00:30:00Z"),
    ];
    let expected: Vec<(String, String)> =
        expected_spring.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(spring, expected);
    let cleanups = recorder.runs.lock().unwrap().iter().filter(|(w, ..)| w == "cleanup").count();
    assert_eq!(cleanups, 6, "one cleanup a day at 03:00 UTC");

    // Autumn: six months later, both fall-back weekends.
    recorder.runs.lock().unwrap().clear();
    run(&lab, &clock, &recorder, "2026-10-23T00:00:00Z", "2026-11-03T00:00:00Z").await;
    let autumn = recorder.backups();
    let madrid: Vec<&str> = autumn.iter().filter(|(w, _)| w == "madrid").map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        madrid,
        [
            "2026-10-23T00:30:00Z",
            "2026-10-24T00:30:00Z",
            "2026-10-25T00:30:00Z", // 02:30 happens twice: the first (CEST) only
            "2026-10-26T01:30:00Z", // CET from here on
            "2026-10-27T01:30:00Z",
            "2026-10-28T01:30:00Z",
            "2026-10-29T01:30:00Z",
            "2026-10-30T01:30:00Z",
            "2026-10-31T01:30:00Z",
            "2026-11-01T01:30:00Z",
            "2026-11-02T01:30:00Z",
        ]
    );
    let newyork: Vec<&str> = autumn.iter().filter(|(w, _)| w == "newyork").map(|(_, t)| t.as_str()).collect();
    // 1 November: 01:30 happens twice; it runs once, at the first (EDT).
    assert_eq!(newyork, ["2026-10-25T05:30:00Z", "2026-11-01T05:30:00Z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_make_a_missed_run_once_while_its_day_is_open_and_never_twice() {
    let lab = Lab::new(false).await;
    protected(&lab, "vm", "daily 02:00", "UTC", ts("2026-06-01T00:00:00Z")).await;
    let clock = Arc::new(SimClock(Mutex::new(ts("2026-06-01T00:00:00Z"))));
    let recorder = Recorder { clock: Some(Arc::clone(&clock)), ..Default::default() };

    // Monday and Tuesday run on time; the scheduler stops Tuesday noon.
    run(&lab, &clock, &recorder, "2026-06-01T00:00:00Z", "2026-06-02T12:00:00Z").await;
    // Restarted the same afternoon: Tuesday's run was made, so nothing now; Wednesday on time.
    run(&lab, &clock, &recorder, "2026-06-02T15:00:00Z", "2026-06-03T12:00:00Z").await;
    // Down from Wednesday noon to Thursday 09:00: Thursday's 02:00 run is made at start.
    run(&lab, &clock, &recorder, "2026-06-04T09:00:00Z", "2026-06-05T01:00:00Z").await;
    // Restarted again at once: nothing is made twice.
    run(&lab, &clock, &recorder, "2026-06-04T09:30:00Z", "2026-06-05T01:00:00Z").await;
    // Down over Friday: Friday's run is not made up on Saturday; Saturday's is, at start.
    run(&lab, &clock, &recorder, "2026-06-06T10:00:00Z", "2026-06-06T23:00:00Z").await;

    let runs: Vec<(String, String, String)> = recorder
        .runs
        .lock()
        .unwrap()
        .iter()
        .filter(|(w, ..)| w == "vm")
        .map(|(w, slot, at)| (w.clone(), slot.to_string(), at.to_string()))
        .collect();
    let expected = [
        ("2026-06-01T02:00:00Z", "2026-06-01T02:00:00Z"),
        ("2026-06-02T02:00:00Z", "2026-06-02T02:00:00Z"),
        ("2026-06-03T02:00:00Z", "2026-06-03T02:00:00Z"),
        ("2026-06-04T02:00:00Z", "2026-06-04T09:00:00Z"),
        ("2026-06-06T02:00:00Z", "2026-06-06T10:00:00Z"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(slot, at)| ("vm".to_string(), slot.to_string(), at.to_string())).collect();
    assert_eq!(runs, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_runner_makes_scheduled_points_and_cleanups_as_jobs() {
    let lab = Lab::new(true).await;
    protected(&lab, "vm", "daily 02:00", "UTC", ts("2026-06-01T00:00:00Z")).await;
    qemu_io(&lab.path("vm.raw"), "raw", "write -P 0x3c 0 512k");
    let clock = SimClock(Mutex::new(ts("2026-06-01T00:00:00Z")));
    let runner = scheduler::VaultRunner { vault: Arc::clone(&lab.vault), gc: Default::default() };
    let options = SchedulerOptions { until: Some(ts("2026-06-02T04:00:00Z")), ..Default::default() };
    scheduler::run(lab.vault.vault(), &clock, &runner, &options).await.unwrap();

    let made = engine::points::list(&lab.vault, "vm").await.unwrap();
    assert_eq!(made.len(), 2);
    assert!(made.iter().all(|m| m.kind == vault::PointKind::Scheduled));
    let jobs = engine::catalog::job::list(lab.catalog(), None, None).await.unwrap();
    let ops: Vec<String> = jobs
        .iter()
        .map(|j| serde_json::to_value(j.operation).unwrap().as_str().unwrap().to_string())
        .collect();
    assert_eq!(ops, ["backup", "prune", "gc", "backup", "prune", "gc"]);
    assert!(jobs.iter().all(|j| j.status == engine::jobs::JobStatus::Completed), "{jobs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_scheduler_runs_only_the_cleanup_without_the_key() {
    let lab = Lab::new(true).await;
    protected(&lab, "vm", "daily 02:00", "UTC", ts("2026-06-01T00:00:00Z")).await;
    let keyless = Arc::new(vault::Vault::open(Arc::clone(lab.vault.vault().backend())).await.unwrap());
    let clock = SimClock(Mutex::new(ts("2026-06-01T00:00:00Z")));
    let runner = scheduler::CleanupRunner { vault: keyless, gc: Default::default() };
    let options =
        SchedulerOptions { until: Some(ts("2026-06-03T04:00:00Z")), backups: false, ..Default::default() };
    scheduler::run(lab.vault.vault(), &clock, &runner, &options).await.unwrap();

    assert!(engine::points::list(&lab.vault, "vm").await.unwrap().is_empty(), "a server made a backup");
    let jobs = engine::catalog::job::list(lab.catalog(), None, None).await.unwrap();
    let ops: Vec<String> = jobs
        .iter()
        .map(|j| serde_json::to_value(j.operation).unwrap().as_str().unwrap().to_string())
        .collect();
    assert_eq!(ops, ["prune", "gc", "prune", "gc", "prune", "gc"], "one cleanup a day at 03:00, three days");
    assert!(jobs.iter().all(|j| j.status == engine::jobs::JobStatus::Completed), "{jobs:?}");
}
