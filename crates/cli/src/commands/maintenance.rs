//! `vmvault prune`, `gc`, `verify` and `serve`: keeping a vault in shape, by hand or on a schedule.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use engine::jobs::{Operation, run_job};
use engine::scheduler::{SchedulerOptions, SystemClock, VaultRunner};
use engine::{NoProgress, prune};
use jiff::Timestamp;
use server::api::{GcAnswer, GcRequest, PruneAnswer, PruneRequest};
use vault::gc::GcOptions;
use vault::verify::VerifyScope;

use crate::Context;
use crate::commands::vault::human_bytes;

/// `vmvault prune [NAME] [--dry-run]`.
pub async fn prune(context: &Context, vm: Option<&str>, dry_run: bool, json: bool) -> Result<()> {
    let (reports, job_id) = match context.location.server() {
        // A served vault is cleaned up by its server, which needs no key.
        Some(server) => {
            let request = PruneRequest { vm: vm.map(str::to_string), dry_run };
            let answer: PruneAnswer = server.run_on_server("prune", &request).await?;
            (answer.reports, answer.job)
        }
        None => {
            let vault = crate::commands::unlock(context).await?;
            let (reports, job) = prune::prune_job(&vault, vm, Timestamp::now(), dry_run).await?;
            (reports, job.id)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    let verb = if dry_run { "would expire" } else { "expired" };
    for report in &reports {
        let expired: Vec<_> = report.expired().collect();
        if report.purged {
            println!("VM {}: soft-delete period over; all {} points purged.", report.vm, expired.len());
            continue;
        }
        println!(
            "VM {}: {} points kept, {} {verb}.",
            report.vm,
            report.points.len() - expired.len(),
            expired.len()
        );
        for d in &report.damaged {
            println!(
                "  DAMAGED {}  left alone: {} (remove it: `vmvault points delete {} --point {} --damaged`)",
                d.point, d.problem, report.vm, d.point
            );
        }
        for p in &report.points {
            match &p.verdict {
                engine::retention::Verdict::Keep(reasons) => {
                    println!("  keep   {}  {}", p.point, reasons.join(", "))
                }
                engine::retention::Verdict::Expire(reason) => println!("  expire {}  {reason}", p.point),
            }
        }
    }
    if !dry_run {
        println!("Job {job_id}. Space is freed by `vmvault gc`.");
    }
    Ok(())
}

/// `vmvault gc`.
pub async fn gc(context: &Context, dry_run: bool, max_wait: u64, json: bool) -> Result<()> {
    let (report, job_id) = match context.location.server() {
        Some(server) => {
            let answer: GcAnswer =
                server.run_on_server("gc", &GcRequest { dry_run, max_wait_s: max_wait }).await?;
            (answer.report, answer.job)
        }
        None => {
            let vault = crate::commands::open(context).await?;
            let options =
                GcOptions { dry_run, max_wait: Duration::from_secs(max_wait), ..Default::default() };
            let (report, job) = prune::gc_job(vault, options).await?;
            (report, job.id)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} {} unreferenced chunks ({}) of {}; {} kept because backups reused them or new points use them. Job {}.",
        if dry_run { "Would delete" } else { "Deleted" },
        report.deleted,
        human_bytes(report.bytes_freed),
        report.chunks,
        report.rescued + report.referenced_meanwhile,
        job_id
    );
    for damaged in &report.damaged_points {
        println!("DAMAGED point {damaged}: its chunks were kept (see `vmvault verify`)");
    }
    Ok(())
}

/// `vmvault verify [NAME] [--point ID] [--read-data]`; fails when anything is damaged.
pub async fn run_verify(
    context: &Context,
    vm: Option<String>,
    point: Option<String>,
    read_data: bool,
    json: bool,
) -> Result<()> {
    let vault = Arc::new(crate::commands::unlock(context).await?);
    engine::verify::check_scope(&vault, vm.as_deref(), point.as_deref()).await?;
    let backend = Arc::clone(vault.vault().backend());
    let (report, job) = run_job(backend, Operation::Verify, vm.as_deref(), Arc::new(NoProgress), |job| {
        let vault = Arc::clone(&vault);
        let scope = VerifyScope { vm: vm.clone(), point, read_data, cancel: job.cancel_flag() };
        async move {
            let report = engine::verify::run(&vault, &scope, Some(&job.id())).await?;
            for damage in &report.damage {
                job.warn(format!("{}: {}", damage.object, damage.problem));
            }
            Ok(report)
        }
    })
    .await?;
    crate::commands::emit(json, &report, |report| {
        println!(
            "Checked {} points, {} chunks ({} read){}. Job {}.",
            report.points,
            report.chunks,
            human_bytes(report.bytes_read),
            if report.read_data { ", every chunk decrypted and re-hashed" } else { "" },
            job.id
        );
        for damage in &report.damage {
            println!("DAMAGED {}: {}", damage.object, damage.problem);
            for u in &damage.affects {
                let offsets: Vec<String> = u.offsets.iter().map(|o| format!("{:#x}", o)).collect();
                match u.disk.as_str() {
                    "" if u.point.is_empty() => println!("  affects VM {}", u.vm),
                    "" => println!("  affects VM {} point {} (the whole point)", u.vm, u.point),
                    disk => println!(
                        "  affects VM {} point {} disk {disk} at offsets {}",
                        u.vm,
                        u.point,
                        offsets.join(", ")
                    ),
                }
            }
        }
    })?;
    if !report.damage.is_empty() {
        bail!(
            "{} damaged objects affect points {}; restore those points elsewhere or back up again",
            report.damage.len(),
            report.affected_points().join(", ")
        );
    }
    Ok(())
}

/// `vmvault serve`: scheduled backups and the daily cleanup, until interrupted.
/// Parse `--cleanup-at HH:MM`.
pub fn cleanup_time(text: &str) -> Result<jiff::civil::Time> {
    let (h, m) = text
        .split_once(':')
        .and_then(|(h, m)| Some((h.parse::<i8>().ok()?, m.parse::<i8>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--cleanup-at {text:?}: write HH:MM (UTC)"))?;
    Ok(jiff::civil::Time::new(h, m, 0, 0)?)
}

pub async fn serve(context: &Context, cleanup_at: &str) -> Result<()> {
    let vault = Arc::new(crate::commands::unlock(context).await?);
    // A served vault is cleaned up by its server (`vmvault server --scheduler`).
    let options = SchedulerOptions {
        cleanup_at: cleanup_time(cleanup_at)?,
        cleanup: context.location.server().is_none(),
        ..Default::default()
    };
    let runner = VaultRunner { vault: Arc::clone(&vault), gc: GcOptions::default() };
    eprintln!(
        "vmvault: scheduler running on {} (cleanup daily at {cleanup_at} UTC); jobs appear in `vmvault jobs`.",
        vault.vault().location()
    );
    tokio::select! {
        result = engine::scheduler::run(vault.vault(), &SystemClock, &runner, &options) => result?,
        _ = tokio::signal::ctrl_c() => eprintln!("vmvault: scheduler stopped."),
    }
    Ok(())
}
