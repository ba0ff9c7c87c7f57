//! `vmvault policy …`, `protect`, `unprotect`, `undelete`, `lock`, `unlock`, `items`.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use engine::catalog::Catalog;
use engine::catalog::item::ProtectedItem;
use engine::catalog::policy::Policy;
use engine::retention::Retention;
use engine::services::policies;
use engine::services::protection::{self, StopMode};
use jiff::Timestamp;

use crate::Context;

/// Retention rules as the CLI takes them.
#[derive(Args, Clone, Default)]
pub struct RuleArgs {
    /// Keep every scheduled point of the last N days.
    #[arg(long, value_name = "N")]
    keep_daily: Option<String>,
    /// Keep one point a week (the last, or the last on DAY) for N weeks.
    #[arg(long, value_name = "N[:DAY]")]
    keep_weekly: Option<String>,
    /// Keep one point a month (first, last, or the last on day DAY) for N months.
    #[arg(long, value_name = "N[:first|last|DAY]")]
    keep_monthly: Option<String>,
    /// Keep one point a year (the last, or the last in MONTH) for N years.
    #[arg(long, value_name = "N[:MONTH]")]
    keep_yearly: Option<String>,
}

impl RuleArgs {
    fn given(&self) -> bool {
        self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
    }

    fn retention(&self) -> engine::Result<Retention> {
        Retention::parse(
            self.keep_daily.as_deref(),
            self.keep_weekly.as_deref(),
            self.keep_monthly.as_deref(),
            self.keep_yearly.as_deref(),
        )
    }
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Create a policy: a schedule in a time zone and retention rules.
    Create {
        /// Its name.
        name: String,
        /// `daily HH:MM`, `weekly DAY[,DAY…] HH:MM`, or `every Nh from HH:MM for Mh` (N: 4, 6, 8, 12).
        #[arg(long)]
        schedule: String,
        /// IANA time zone of the schedule and of retention's calendar (e.g. Europe/Madrid).
        #[arg(long)]
        timezone: String,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// List policies.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a policy, and optionally its next run instants.
    Show {
        /// The policy.
        name: String,
        /// Print the next K runs (in the policy's zone and in UTC).
        #[arg(long, value_name = "K")]
        next: Option<usize>,
        /// Count runs from this RFC 3339 time instead of now.
        #[arg(long, value_name = "RFC3339")]
        from: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a policy's schedule, zone or rules (the rules given replace all rules).
    Set {
        /// The policy.
        name: String,
        /// New schedule.
        #[arg(long)]
        schedule: Option<String>,
        /// New time zone.
        #[arg(long)]
        timezone: Option<String>,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// Delete a policy that protects nothing.
    Delete {
        /// The policy.
        name: String,
    },
}

pub async fn run(context: &Context, command: PolicyCommand) -> Result<()> {
    let vault = crate::commands::open(context).await?;
    let catalog = Catalog::of(&vault);
    match command {
        PolicyCommand::Create { name, schedule, timezone, rules } => {
            let policy = Policy::new(&name, &schedule, &timezone, rules.retention()?)?;
            policies::create(catalog, &policy).await?;
            println!(
                "Created policy {name}: {} ({}); keeps {}.",
                policy.schedule,
                policy.timezone,
                policy.retention.describe()
            );
        }
        PolicyCommand::List { json } => {
            let all = catalog.list::<Policy>().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!(
                    "No policies yet. Create one with `vmvault policy create NAME --schedule 'daily 02:00' --timezone UTC --keep-daily 30`."
                );
            } else {
                println!("{:<16} {:<34} {:<20} RETENTION", "NAME", "SCHEDULE", "TIMEZONE");
                for p in all {
                    println!(
                        "{:<16} {:<34} {:<20} {}",
                        p.name,
                        p.schedule.to_string(),
                        p.timezone,
                        p.retention.describe()
                    );
                }
            }
        }
        PolicyCommand::Show { name, next, from, json } => {
            let policy: Policy = catalog.get(&name).await?;
            let from = match from {
                Some(text) => text.parse::<Timestamp>().map_err(|_| {
                    anyhow::anyhow!("--from {text:?}: give an RFC 3339 time such as 2026-03-28T12:00:00Z")
                })?,
                None => Timestamp::now(),
            };
            let tz = policy.tz()?;
            let runs = policy.schedule.upcoming(&tz, from, next.unwrap_or(0));
            if json {
                let runs: Vec<serde_json::Value> = runs
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "local": s.at.to_zoned(tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                            "utc": s.at.to_string(),
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "policy": policy, "next": runs }))?
                );
                return Ok(());
            }
            println!("Policy {}", policy.name);
            println!("  schedule   {}", policy.schedule);
            println!("  time zone  {}", policy.timezone);
            println!("  retention  {}", policy.retention.describe());
            if !runs.is_empty() {
                println!("  next runs (local, UTC):");
                for s in runs {
                    println!("    {}  {}", s.at.to_zoned(tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z"), s.at);
                }
            }
        }
        PolicyCommand::Set { name, schedule, timezone, rules } => {
            let retention = if rules.given() { Some(rules.retention()?) } else { None };
            let schedule: Option<engine::schedule::Schedule> = schedule.map(|s| s.parse()).transpose()?;
            if schedule.is_none() && timezone.is_none() && retention.is_none() {
                bail!("nothing to change: give --schedule, --timezone or --keep-* rules");
            }
            let policy = policies::update(catalog, &name, |p| {
                if let Some(s) = &schedule {
                    p.schedule = s.clone();
                }
                if let Some(tz) = &timezone {
                    p.timezone = tz.clone();
                }
                if let Some(r) = &retention {
                    p.retention = r.clone();
                }
                Ok(())
            })
            .await?;
            println!(
                "Policy {name}: {} ({}); keeps {}. Points a shorter retention no longer keeps expire at the next cleanup.",
                policy.schedule,
                policy.timezone,
                policy.retention.describe()
            );
        }
        PolicyCommand::Delete { name } => {
            policies::delete(catalog, &name).await?;
            println!("Deleted policy {name}.");
        }
    }
    Ok(())
}

/// `vmvault protect NAME --policy P`.
pub async fn protect(context: &Context, vm: &str, policy: &str, exclude: &[String]) -> Result<()> {
    let vault = crate::commands::open(context).await?;
    let item = protection::protect(Catalog::of(&vault), vm, policy, exclude, Timestamp::now()).await?;
    print!("VM {vm} is protected by policy {policy}");
    if !item.excluded_disks.is_empty() {
        print!(" (disks excluded: {})", item.excluded_disks.join(", "));
    }
    println!(".");
    Ok(())
}

/// `vmvault unprotect NAME --retain-data|--delete-data`.
pub async fn unprotect(context: &Context, vm: &str, delete_data: bool) -> Result<()> {
    let vault = crate::commands::open(context).await?;
    let mode = if delete_data { StopMode::DeleteData } else { StopMode::RetainData };
    let item = protection::unprotect(Catalog::of(&vault), vm, mode, Timestamp::now()).await?;
    match item.purge_after {
        Some(purge) if delete_data => println!(
            "Protection of VM {vm} stopped; its data is soft-deleted and will be purged after {purge}. \
             `vmvault undelete {vm}` brings it back until then."
        ),
        _ => println!("Protection of VM {vm} stopped; every recovery point is retained."),
    }
    Ok(())
}

/// `vmvault undelete NAME`.
pub async fn undelete(context: &Context, vm: &str) -> Result<()> {
    let vault = crate::commands::open(context).await?;
    protection::undelete(Catalog::of(&vault), vm).await?;
    println!(
        "VM {vm}'s data is back: protection stopped, data retained. Protect it again with `vmvault protect {vm} --policy P`."
    );
    Ok(())
}

/// `vmvault lock NAME` / `vmvault unlock NAME`.
pub async fn set_lock(context: &Context, vm: &str, locked: bool) -> Result<()> {
    let vault = crate::commands::open(context).await?;
    protection::set_delete_lock(Catalog::of(&vault), vm, locked).await?;
    if locked {
        println!("VM {vm} has a delete lock: no point expires and its data cannot be deleted.");
    } else {
        println!("VM {vm}'s delete lock is removed; retention applies at the next cleanup.");
    }
    Ok(())
}

/// `vmvault items`: every protected item and its state.
pub async fn items(context: &Context, json: bool) -> Result<()> {
    let vault = crate::commands::open(context).await?;
    let all = Catalog::of(&vault).list::<ProtectedItem>().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("No protected items. Protect a VM with `vmvault protect VM --policy P`.");
        return Ok(());
    }
    println!("{:<20} {:<16} {:<34} {:<6} PURGE-AFTER", "VM", "POLICY", "STATE", "LOCK");
    for i in all {
        println!(
            "{:<20} {:<16} {:<34} {:<6} {}",
            i.vm,
            i.policy.as_deref().unwrap_or("-"),
            i.state.as_str(),
            if i.delete_lock { "yes" } else { "no" },
            i.purge_after.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}
