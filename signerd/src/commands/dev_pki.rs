//! `signerd dev-pki --out DIR [--client NAME]...`: a throwaway PKI for the local stack and tests.

use std::path::Path;

use anyhow::Context;

use crate::pki::DevPki;

/// Writes a fresh CA, a localhost server certificate and one client certificate per name.
pub fn run(out: &Path, clients: &[String]) -> anyhow::Result<()> {
    let pki = DevPki::generate("stellar-signer dev CA")?;
    pki.write_dir(out, clients)
        .with_context(|| format!("writing the dev PKI to {}", out.display()))?;
    println!(
        "wrote ca.pem, ca.key, server.pem, server.key{} to {}",
        clients
            .iter()
            .map(|c| format!(", {c}.pem, {c}.key"))
            .collect::<String>(),
        out.display()
    );
    Ok(())
}
