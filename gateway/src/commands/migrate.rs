//! `gateway migrate --config FILE`: applies pending migrations and exits. `serve` does the same
//! at start; this is for deploys that migrate before rolling out replicas.

use std::path::Path;

/// Applies the migrations and prints how many the schema has.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let store = super::open_store(config_path).await?;
        let known = crate::store::migrations::migrator(store.backend())
            .migrations
            .len();
        println!(
            "database migrated ({}, {known} migrations)",
            store.backend().as_str()
        );
        store.close().await;
        Ok(())
    })
}
