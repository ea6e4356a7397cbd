//! The `hivegraph` command line.

use clap::{Parser, Subcommand};

use crate::config::{Config, DatabaseConfig, RegistryPolicy, ServeConfig, SyncConfig};

/// hivegraph: a GraphQL gateway for ToolHive registries of MCP servers.
#[derive(Debug, Parser)]
#[command(name = "hivegraph", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        serve: Box<ServeConfig>,
    },
    /// Apply pending database migrations.
    Migrate {
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Print the GraphQL schema (SDL), identical to schema.graphql.
    Schema,
    /// Manage registries.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Manage the keys that encrypt secrets at rest.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-encrypt every stored secret with the current key (`HIVEGRAPH_SECRET_KEY`); older keys
    /// must be listed in `HIVEGRAPH_SECRET_KEY_PREVIOUS` until this has run.
    Rotate {
        #[command(flatten)]
        database: DatabaseConfig,
    },
}

/// Registry subcommands.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Sync one registry (by name or id), or every registry with --all.
    Sync {
        /// Registry name or id.
        #[arg(required_unless_present = "all")]
        target: Option<String>,
        /// Sync every registry.
        #[arg(long, conflicts_with = "target")]
        all: bool,
        /// Print the results as JSON on stdout (with elapsed time and peak memory).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        sync: SyncConfig,
        #[command(flatten)]
        registries: RegistryPolicy,
    },
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { database, serve } => {
            crate::server::serve(Config {
                database,
                serve: *serve,
            })
            .await
        }
        Command::Migrate { database } => {
            let applied = crate::db::run_migrations(database.url()).await?;
            if applied.is_empty() {
                println!("migrations: up to date");
            } else {
                for v in applied {
                    println!("applied {v}");
                }
            }
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Rotate { database },
        } => {
            // A rotation without a real key would seal everything under a throwaway key.
            let keys = crate::secrets::Keyring::load(crate::config::Mode::Production)?;
            let report = crate::keys::rotate(database.url(), &keys).await?;
            println!(
                "keys: {} secrets re-encrypted under key {}, {} already current",
                report.rotated,
                keys.current_key_id(),
                report.current
            );
            Ok(())
        }
        Command::Schema => {
            print!("{}", crate::graphql::sdl());
            Ok(())
        }
        Command::Registry {
            command:
                RegistryCommand::Sync {
                    target,
                    all,
                    json,
                    database,
                    sync,
                    registries,
                },
        } => {
            crate::sync::cli::run(crate::sync::cli::SyncCommand {
                target,
                all,
                json,
                database,
                sync,
                policy: registries,
            })
            .await
        }
    }
}
