//! `vmvault group …`: consistency groups, backed up at one instant with `backup --group`.

use anyhow::Result;
use clap::Subcommand;
use engine::catalog::Catalog;
use engine::catalog::group::ConsistencyGroup;
use engine::services::groups;

use crate::Context;
use crate::commands::emit;

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Create a group of registered VMs (two or more) that `backup --group` snapshots together.
    Create {
        /// Its name.
        name: String,
        /// Its VMs.
        #[arg(required = true, num_args = 1..)]
        vms: Vec<String>,
    },
    /// List groups.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a group.
    Show {
        /// The group.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget a group; its VMs and their points stay.
    Delete {
        /// The group.
        name: String,
    },
}

pub async fn run(context: &Context, command: GroupCommand) -> Result<()> {
    let vault = crate::commands::open(context).await?;
    let catalog = Catalog::of(&vault);
    match command {
        GroupCommand::Create { name, vms } => {
            let created = groups::create(catalog, &name, &vms).await?;
            println!(
                "Consistency group {} created: {}. Back it up with `vmvault backup --group {}`.",
                created.name,
                created.members.join(", "),
                created.name
            );
        }
        GroupCommand::List { json } => emit(json, &catalog.list::<ConsistencyGroup>().await?, |groups| {
            if groups.is_empty() {
                println!("No consistency groups. Create one with `vmvault group create NAME VM VM…`.");
            }
            groups.iter().for_each(print_group);
        })?,
        GroupCommand::Show { name, json } => {
            emit(json, &catalog.get::<ConsistencyGroup>(&name).await?, print_group)?
        }
        GroupCommand::Delete { name } => {
            groups::delete(catalog, &name).await?;
            println!("Consistency group {name} deleted; its VMs and their points stay.");
        }
    }
    Ok(())
}

fn print_group(group: &ConsistencyGroup) {
    println!("{:<20} {}  (created {})", group.name, group.members.join(", "), group.created);
}
