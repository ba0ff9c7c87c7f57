//! `vmvault backup` and `vmvault points`.

use engine::EngineError;
use engine::catalog::Catalog;
use engine::catalog::vm::VmRecord;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use engine::backup::{BackupOptions, BackupSummary};
use engine::points::{self, RecoveryPoint};
use vault::PointKind;

use crate::Context;
use crate::commands::vault::human_bytes;

/// `vmvault backup NAME`.
pub async fn backup(
    context: &Context,
    vm: &str,
    disks: Vec<String>,
    until: Option<&str>,
    scratch: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let vault = Arc::new(crate::commands::unlock(context).await?);
    let options = BackupOptions { disks, ..on_demand(until, scratch)? };
    let (summary, job) =
        engine::backup::backup_job(vault, vm, options, crate::progress::for_terminal(json)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
        println!("  job {}", job.id);
    }
    Ok(())
}

/// Options of an on-demand backup kept until `until` (default: 30 days), its fleecing
/// overlays in `scratch` (default: [`engine::backup::default_scratch`]).
fn on_demand(until: Option<&str>, scratch: Option<PathBuf>) -> Result<BackupOptions> {
    let retain_until = match until {
        Some(text) => parse_until(text)?,
        None => engine::retention::default_retain_until(jiff::Timestamp::now()),
    };
    let now = jiff::Timestamp::now();
    if retain_until <= now {
        return Err(EngineError::Invalid(format!("--retain-until {retain_until} is in the past")).into());
    }
    let latest = engine::limits::latest_retain_until(now);
    if retain_until > latest {
        return Err(EngineError::Limit(format!(
            "--retain-until {}: an on-demand point is kept at most {} years, until {} at the latest",
            until.unwrap_or_default(),
            engine::limits::MAX_RETAIN_YEARS,
            latest.strftime("%Y-%m-%d")
        ))
        .into());
    }
    let defaults = BackupOptions::default();
    Ok(BackupOptions {
        kind: PointKind::OnDemand,
        retain_until: Some(retain_until),
        scratch: scratch.unwrap_or(defaults.scratch.clone()),
        ..defaults
    })
}

/// `vmvault backup --group GROUP`: every member at one instant, one job each.
pub async fn backup_group(
    context: &Context,
    group: &str,
    until: Option<&str>,
    scratch: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let vault = Arc::new(crate::commands::unlock(context).await?);
    let outcomes = engine::backup::group::backup_group(vault, group, on_demand(until, scratch)?, |_| {
        Arc::new(engine::NoProgress)
    })
    .await?;
    let mut failed = Vec::new();
    let mut summaries = Vec::new();
    for outcome in outcomes {
        match outcome.result {
            Ok((summary, job)) => {
                if !json {
                    print_summary(&summary);
                    println!("  job {}", job.id);
                }
                summaries.push(summary);
            }
            Err(e) => {
                if !json {
                    println!("VM {}: backup failed: {e}", outcome.vm);
                }
                failed.push(outcome.vm);
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&summaries)?);
    } else if let Some(instant) = summaries.first().and_then(|s| s.group.as_ref()).map(|g| g.instant) {
        println!("Consistency group {group}: snapshot instant {instant}.");
    }
    if !failed.is_empty() {
        bail!("consistency group {group}: the backup of {} failed (see above)", failed.join(", "));
    }
    Ok(())
}

fn print_summary(s: &BackupSummary) {
    println!("Recovery point {} of VM {} ({}-consistent).", s.point_id, s.vm, s.consistency.as_str());
    for d in &s.disks {
        println!(
            "  {:<10} {:<11} read {:>10}  zeros {:>10}  new in vault {:>10}",
            d.label,
            format!("{:?}", d.mode).to_lowercase(),
            human_bytes(d.bytes_read),
            human_bytes(d.bytes_zero),
            human_bytes(d.bytes_new)
        );
    }
    let rate = if s.duration_s > 0.0 { s.bytes_read as f64 / s.duration_s / 1e6 } else { 0.0 };
    println!(
        "  {} read of {} in {:.1} s ({rate:.0} MB/s); {} added to the vault.",
        human_bytes(s.bytes_read),
        human_bytes(s.logical_bytes),
        s.duration_s,
        human_bytes(s.bytes_new)
    );
    if let Some(ms) = s.freeze_to_thaw_ms {
        println!("  the guest was paused for the snapshot {ms} ms (freeze to thaw).");
    }
    if let Some(group) = &s.group {
        println!("  consistency group {} at {}.", group.name, group.instant);
    }
    for note in &s.notes {
        println!("  note: {note}");
    }
}

/// What `vmvault points delete` does.
#[derive(clap::Subcommand)]
pub enum PointsAction {
    /// Remove a damaged point at once (intact points go only by retention).
    Delete {
        /// The VM.
        name: String,
        /// The damaged point.
        #[arg(long)]
        point: String,
        /// Say that the point is damaged; required.
        #[arg(long, required = true)]
        damaged: bool,
    },
}

/// `vmvault points delete VM --point ID --damaged`.
pub async fn points_action(context: &Context, action: PointsAction) -> Result<()> {
    let PointsAction::Delete { name, point, .. } = action;
    let vault = crate::commands::unlock(context).await?;
    let why = points::delete_damaged(&vault, &name, &point).await?;
    println!("Damaged point {point} of VM {name} removed ({why}). Its chunks are freed by `vmvault gc`.");
    Ok(())
}

/// `vmvault points NAME`: intact points, then damaged ones (DAMAGED, with what is wrong: a
/// manifest that does not read, or what the last verify found).
pub async fn list_points(context: &Context, vm: &str, json: bool) -> Result<()> {
    let vault = crate::commands::unlock(context).await?;
    let points::Survey { intact, damaged, .. } = points::survey(&vault, vm).await?;
    if intact.is_empty() && damaged.is_empty() {
        Catalog::of(vault.vault()).get::<VmRecord>(vm).await?;
    }
    let summaries: Vec<RecoveryPoint> = intact.iter().map(RecoveryPoint::from).collect();
    if json {
        let mut rows = Vec::new();
        for summary in &summaries {
            let mut row = serde_json::to_value(summary)?;
            row["state"] = "intact".into();
            rows.push(row);
        }
        for d in &damaged {
            rows.push(
                serde_json::json!({ "id": d.point, "state": "damaged", "problem": d.cause.to_string() }),
            );
        }
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if summaries.is_empty() && damaged.is_empty() {
        println!("VM {vm} has no recovery points yet. Make one with `vmvault backup {vm}`.");
        return Ok(());
    }
    println!(
        "{:<22} {:<20} {:<9} {:<11} {:>10} {:>10}  {:<12}  GROUP",
        "ID", "TIME", "KIND", "CONSISTENCY", "LOGICAL", "STORED", "RETAIN-UNTIL"
    );
    for p in summaries {
        println!(
            "{:<22} {:<20} {:<9} {:<11} {:>10} {:>10}  {:<12}  {}",
            p.id,
            p.time.strftime("%Y-%m-%d %H:%M:%S"),
            p.kind.as_str(),
            p.consistency.as_str(),
            human_bytes(p.logical_bytes),
            human_bytes(p.stored_bytes),
            p.retain_until.map(|t| t.strftime("%Y-%m-%d").to_string()).unwrap_or_else(|| "-".into()),
            p.group.map(|g| format!("{} @ {}", g.name, g.instant)).unwrap_or_else(|| "-".into())
        );
    }
    for d in &damaged {
        println!("{:<22} DAMAGED: {}", d.point, d.cause);
    }
    if !damaged.is_empty() {
        println!(
            "A damaged point can be removed at once: `vmvault points delete {vm} --point ID --damaged`."
        );
    }
    Ok(())
}

/// Parse `--retain-until`: an RFC 3339 time, or a date (kept through the end of that day, UTC).
pub fn parse_until(text: &str) -> Result<jiff::Timestamp> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    if let Ok(d) = text.parse::<jiff::civil::Date>() {
        // The last day jiff can hold has no end of day in UTC: no retention reaches it anyway.
        return Ok(d
            .at(23, 59, 59, 0)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map_or(jiff::Timestamp::MAX, |z| z.timestamp()));
    }
    bail!("--retain-until {text:?}: give a date (2027-01-31) or an RFC 3339 time (2027-01-31T12:00:00Z)")
}
