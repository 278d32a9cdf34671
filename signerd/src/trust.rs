//! What `SIGHUP` reloads, as one: the TLS server config (server certificate and key, client CA,
//! CRLs) and the ACL. A reload reads the whole config file again and builds both before it
//! swaps them in together, so a handshake and a request see either all of the old trust or all
//! of the new; a file that does not load leaves the old trust in place. Established connections
//! are held to the new CA and CRLs at their next request (see
//! [`crate::tls::PeerInfo::check_still_trusted`]). Other settings need a restart.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::server::danger::ClientCertVerifier;

use crate::authz::Acl;
use crate::config::Config;
use crate::error::Result;
use crate::tls;

/// The TLS server config and the ACL, built from one config file.
pub struct Trust {
    /// Tells one load from another (unique in the process), so that a connection knows whether
    /// its certificate was verified against this trust.
    pub generation: u64,
    /// What new connections are accepted with.
    pub tls: Arc<rustls::ServerConfig>,
    /// The client certificate verifier inside `tls`, to hold established connections to it.
    pub client_verifier: Arc<dyn ClientCertVerifier>,
    /// What requests are authorized against.
    pub acl: Arc<Acl>,
}

impl Trust {
    /// Loads the TLS material the config names and compiles its ACL.
    pub fn load(config: &Config) -> Result<Self> {
        static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
        let client_verifier = tls::client_verifier(&config.tls)?;
        Ok(Trust {
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            tls: Arc::new(tls::server_config(&config.tls, client_verifier.clone())?),
            client_verifier,
            acl: Arc::new(Acl::new(&config.acl)),
        })
    }
}

/// The current [`Trust`], swapped whole by [`ReloadableTrust::reload`].
pub struct ReloadableTrust {
    current: RwLock<Arc<Trust>>,
}

impl ReloadableTrust {
    /// Starts with `trust`.
    pub fn new(trust: Trust) -> Self {
        ReloadableTrust {
            current: RwLock::new(Arc::new(trust)),
        }
    }

    /// The trust in force now. Callers keep the snapshot for one handshake or one request.
    pub fn current(&self) -> Arc<Trust> {
        // A poisoned lock only means a panic mid-swap of an Arc; the value is still whole.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the config file again and, only when it loads and its TLS files load, replaces
    /// the TLS config and the ACL together. On any error nothing changes.
    pub fn reload(&self, config_path: &Path) -> Result<()> {
        let config = Config::load(config_path)?;
        let trust = Arc::new(Trust::load(&config)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = trust;
        Ok(())
    }
}
