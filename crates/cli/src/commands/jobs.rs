//! `vmvault jobs` and `vmvault job show|wait|cancel`.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Subcommand;
use engine::catalog::{Catalog, job};
use engine::jobs::{JobRecord, JobStatus};

use crate::Context;
use crate::commands::vault::human_bytes;

#[derive(Subcommand)]
pub enum JobCommand {
    /// Show one job: phases, per-disk progress, warnings, error.
    Show {
        /// Job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Wait until a job ends; exit status 0 only if it completed.
    Wait {
        /// Job id.
        id: String,
    },
    /// Ask a running job to stop (it commits nothing).
    Cancel {
        /// Job id.
        id: String,
    },
}

/// `vmvault jobs`.
pub async fn list(context: &Context, vm: Option<&str>, status: Option<&str>, json: bool) -> Result<()> {
    let vault = crate::commands::open(context).await?;
    let status = status.map(JobStatus::parse).transpose()?;
    let all = job::list(Catalog::of(&vault), vm, status).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("No jobs.");
        return Ok(());
    }
    println!("{:<24} {:<9} {:<14} {:<24} {:<10} {:>7}", "ID", "OPERATION", "VM", "STATUS", "PHASE", "DONE");
    for job in &all {
        println!(
            "{:<24} {:<9} {:<14} {:<24} {:<10} {:>7}",
            job.id,
            serde_json::to_value(job.operation)?.as_str().unwrap_or("?"),
            job.vm.as_deref().unwrap_or("-"),
            job.status.as_str(),
            job.phase().unwrap_or("-"),
            percent(job)
        );
    }
    Ok(())
}

fn percent(job: &JobRecord) -> String {
    let total: u64 = job.disks.iter().map(|d| d.total).sum();
    let done: u64 = job.disks.iter().map(|d| d.done).sum();
    if total == 0 { "-".into() } else { format!("{:.0}%", done as f64 * 100.0 / total as f64) }
}

pub async fn run(context: &Context, command: JobCommand) -> Result<()> {
    let vault = crate::commands::open(context).await?;
    let catalog = Catalog::of(&vault);
    match command {
        JobCommand::Show { id, json } => {
            let job = job::get(catalog, &id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print_job(&job);
            }
        }
        JobCommand::Wait { id } => {
            let job = job::wait(catalog, &id, Duration::from_millis(500)).await?;
            print_job(&job);
            if !matches!(job.status, JobStatus::Completed | JobStatus::CompletedWithWarnings) {
                bail!("job {id} ended {}", job.status.as_str());
            }
        }
        JobCommand::Cancel { id } => {
            job::request_cancel(catalog, &id).await?;
            println!(
                "Cancel requested; job {id} stops within a few seconds and commits nothing (`vmvault job wait {id}`)."
            );
        }
    }
    Ok(())
}

fn print_job(job: &JobRecord) {
    println!("Job {} — {}", job.id, job.status.as_str());
    println!(
        "  operation  {}",
        serde_json::to_value(job.operation)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    );
    if let Some(vm) = &job.vm {
        println!("  vm         {vm}");
    }
    println!("  started    {}", job.started);
    if let Some(ended) = job.ended {
        println!("  ended      {ended} ({:.1} s)", ended.duration_since(job.started).as_secs_f64());
    }
    println!("  host       {}", job.host);
    for phase in &job.phases {
        let took = phase.ended.map(|e| format!("{:.2} s", e.duration_since(phase.started).as_secs_f64()));
        println!("  phase      {:<10} {}", phase.name, took.unwrap_or_else(|| "running".into()));
    }
    for d in &job.disks {
        println!("  disk       {:<10} {} of {}", d.label, human_bytes(d.done), human_bytes(d.total));
    }
    if let Some(point) = &job.point {
        println!("  point      {point}");
    }
    if let Some(ms) = job.freeze_to_thaw_ms {
        println!("  paused     {ms} ms (freeze to thaw)");
    }
    for w in &job.warnings {
        println!("  warning    {w}");
    }
    if let Some(e) = &job.error {
        println!("  error      {e}");
    }
}
