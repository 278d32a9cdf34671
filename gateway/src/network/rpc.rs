//! The Stellar RPC backend of [`super::Network`] (JSON-RPC 2.0). Not implemented yet.

use crate::config::NetworkConfig;
use crate::metrics::Metrics;

/// The Stellar RPC client.
pub struct StellarRpc;

impl StellarRpc {
    /// Not implemented yet.
    pub fn new(_config: &NetworkConfig, _metrics: Metrics) -> crate::error::Result<Self> {
        Err(crate::error::Error::Config(
            "network.kind: rpc is not implemented yet".into(),
        ))
    }
}
