//! Who may do what. The caller's identity is taken from its verified client certificate (see
//! [`crate::tls`]); the ACL from the config maps identities to grants. Deny by default: an
//! identity that is not listed may do nothing at all.

use std::collections::HashMap;
use std::fmt;

use wildmatch::WildMatch;

use crate::config::AclEntry;
use crate::error::{Error, Result};
use crate::keys::KeyId;

/// The authenticated identity of a caller: its certificate's SAN URI, else SAN DNS name, else CN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CallerIdentity(pub String);

impl fmt::Display for CallerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An action a caller asks for.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    /// Create (or fetch by creating again) a key.
    CreateKey(&'a KeyId),
    /// Read a key's public half, or sign a transaction with it.
    UseKey(&'a KeyId),
    /// Sign a bare hash with a key.
    BlindSign(&'a KeyId),
}

struct Grant {
    create_keys: bool,
    /// Keys this identity may blind-sign with (each also needs `keys`).
    blind_sign: Vec<WildMatch>,
    keys: Vec<WildMatch>,
}

impl Grant {
    fn covers(&self, key: &KeyId) -> bool {
        self.keys.iter().any(|p| p.matches(key.as_str()))
    }

    fn may_blind_sign(&self, key: &KeyId) -> bool {
        self.blind_sign.iter().any(|p| p.matches(key.as_str()))
    }
}

/// The access control list, compiled once from the config.
pub struct Acl {
    grants: HashMap<String, Grant>,
}

impl Acl {
    /// Compiles the ACL entries (already checked by the config loader).
    pub fn new(entries: &[AclEntry]) -> Self {
        let grants = entries
            .iter()
            .map(|e| {
                let grant = Grant {
                    create_keys: e.create_keys,
                    blind_sign: e.blind_sign.iter().map(|p| WildMatch::new(p)).collect(),
                    keys: e.keys.iter().map(|p| WildMatch::new(p)).collect(),
                };
                (e.identity.clone(), grant)
            })
            .collect();
        Acl { grants }
    }

    /// Allows or denies `action` for `caller`; a denial says why.
    pub fn authorize(&self, caller: &CallerIdentity, action: Action<'_>) -> Result<()> {
        let deny = |why: String| Err(Error::PermissionDenied(why));
        let Some(grant) = self.grants.get(&caller.0) else {
            return deny(format!("identity {caller} is not in the acl"));
        };
        match action {
            Action::CreateKey(key) if !grant.create_keys => {
                deny(format!("identity {caller} may not create keys ({key})"))
            }
            Action::BlindSign(key) if !grant.may_blind_sign(key) => {
                deny(format!("identity {caller} may not blind-sign ({key})"))
            }
            Action::CreateKey(key) | Action::UseKey(key) | Action::BlindSign(key)
                if !grant.covers(key) =>
            {
                deny(format!(
                    "key {key} is outside the patterns of identity {caller}"
                ))
            }
            _ => Ok(()),
        }
    }

    /// Whether `caller` may see `key` (used to filter listings without leaking other ids).
    pub fn may_use(&self, caller: &CallerIdentity, key: &KeyId) -> bool {
        self.grants
            .get(&caller.0)
            .is_some_and(|grant| grant.covers(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl() -> Acl {
        Acl::new(&[
            AclEntry {
                identity: "gateway".into(),
                create_keys: true,
                keys: vec!["wallet-*".into()],
                blind_sign: Vec::new(),
            },
            AclEntry {
                identity: "ops".into(),
                create_keys: false,
                keys: vec!["ops-?".into(), "hot-*".into()],
                blind_sign: vec!["ops-?".into()],
            },
        ])
    }

    fn key(id: &str) -> KeyId {
        KeyId::parse(id).unwrap_or_else(|e| panic!("{e}"))
    }

    fn who(id: &str) -> CallerIdentity {
        CallerIdentity(id.into())
    }

    #[test]
    fn grants_within_patterns() {
        let acl = acl();
        assert!(
            acl.authorize(&who("gateway"), Action::CreateKey(&key("wallet-1")))
                .is_ok()
        );
        assert!(
            acl.authorize(&who("gateway"), Action::UseKey(&key("wallet-1")))
                .is_ok()
        );
        assert!(
            acl.authorize(&who("ops"), Action::BlindSign(&key("ops-1")))
                .is_ok()
        );
    }

    #[test]
    fn denies_by_default() {
        let acl = acl();
        let err = acl.authorize(&who("stranger"), Action::UseKey(&key("wallet-1")));
        assert!(matches!(err, Err(Error::PermissionDenied(m)) if m.contains("not in the acl")));
        assert!(
            acl.authorize(&who("gateway"), Action::UseKey(&key("ops-1")))
                .is_err()
        );
        assert!(
            acl.authorize(&who("gateway"), Action::BlindSign(&key("wallet-1")))
                .is_err()
        );
        assert!(
            acl.authorize(&who("ops"), Action::CreateKey(&key("ops-1")))
                .is_err()
        );
        assert!(
            acl.authorize(&who("ops"), Action::BlindSign(&key("ops-12")))
                .is_err()
        );
        // Blind signing is per key pattern: a key the identity may use is not enough.
        assert!(
            acl.authorize(&who("ops"), Action::UseKey(&key("hot-1")))
                .is_ok()
        );
        assert!(
            acl.authorize(&who("ops"), Action::BlindSign(&key("hot-1")))
                .is_err()
        );
    }
}
