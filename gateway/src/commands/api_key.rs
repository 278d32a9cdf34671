//! `gateway api-key create|list|revoke`: manage bearer API keys. `create` prints the new key on
//! stdout, once (the database keeps only its SHA-256); the id goes to stderr, so
//! `KEY=$(gateway api-key create --role service)` captures just the key.

use std::path::Path;

use anyhow::Context;

use crate::api_key::{ApiKeySecret, Role};
use crate::model::ApiKeyId;
use crate::store::AuditContext;

/// Creates a key with `role` and prints it.
pub fn create(config_path: &Path, role: &str, name: &str) -> anyhow::Result<()> {
    let role = Role::parse(role)?;
    super::runtime()?.block_on(async {
        let store = super::open_store(config_path).await?;
        let secret = ApiKeySecret::generate()?;
        let id = store
            .create_api_key(name, role, &secret.hash(), &AuditContext::cli())
            .await
            .context("cannot store the API key")?;
        store.close().await;
        eprintln!("created API key {id} (role {role}, name {name:?}); it is shown only once:");
        println!("{}", secret.expose());
        Ok(())
    })
}

/// Prints every key (id, role, name, dates; never the key or its hash) as JSON lines.
pub fn list(config_path: &Path) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let store = super::open_store(config_path).await?;
        for key in store.list_api_keys().await? {
            println!("{}", serde_json::to_string(&key)?);
        }
        store.close().await;
        Ok(())
    })
}

/// Revokes a key by id; it stops working at once.
pub fn revoke(config_path: &Path, id: &str) -> anyhow::Result<()> {
    let id = ApiKeyId::parse(id)?;
    super::runtime()?.block_on(async {
        let store = super::open_store(config_path).await?;
        let revoked = store.revoke_api_key(id, &AuditContext::cli()).await?;
        store.close().await;
        anyhow::ensure!(revoked, "no active API key with id {id}");
        println!("revoked API key {id}");
        Ok(())
    })
}
