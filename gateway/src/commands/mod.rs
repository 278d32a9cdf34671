//! One module per `gateway` subcommand. `main.rs` only parses arguments and dispatches here.

pub mod api_key;
pub mod migrate;
pub mod serve;
pub mod worker;

use std::path::Path;

use anyhow::Context;

use crate::config::Config;
use crate::store::Store;

/// Loads the config and opens (and migrates) its database: what every command but `serve` needs.
pub async fn open_store(config_path: &Path) -> anyhow::Result<Store> {
    let config = Config::load(config_path)
        .with_context(|| format!("invalid config {}", config_path.display()))?;
    let url = config.database_url()?;
    let store = Store::connect(&url, &config.database)
        .await
        .with_context(|| format!("cannot open database {}", url.redacted()))?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

/// A small runtime for the one-shot commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
