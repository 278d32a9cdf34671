//! Who may do what. The caller's identity is taken from its verified client certificate (see
//! [`crate::tls`]); the ACL from the config maps identities to grants. Deny by default: an
//! identity that is not listed may do nothing at all, not even list keys.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use wildmatch::WildMatch;

use crate::config::AclEntry;
use crate::error::{Error, Result};
use crate::keys::KeyId;

/// The authenticated identity of a caller, typed by the certificate field it came from, so that
/// a subject CN can never pass for a SAN: `uri:spiffe://…` (a SAN URI), `dns:host.example`
/// (a SAN DNS name, lower-cased) or `cn:gateway` (the subject CN of a certificate without a
/// SAN extension). The text form is what the ACL, the logs and the audit log carry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct CallerIdentity(String);

impl CallerIdentity {
    /// The identity of a certificate named by a SAN URI.
    pub fn uri(uri: &str) -> std::result::Result<Self, String> {
        Self::typed("uri", uri)
    }

    /// The identity of a certificate named by a SAN DNS name (DNS names compare without case).
    pub fn dns(name: &str) -> std::result::Result<Self, String> {
        Self::typed("dns", &name.to_ascii_lowercase())
    }

    /// The identity of a certificate without a SAN extension, named by its subject CN.
    pub fn common_name(cn: &str) -> std::result::Result<Self, String> {
        Self::typed("cn", cn)
    }

    /// Parses the text form `kind:name` (`uri:`, `dns:` or `cn:`).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        match text.split_once(':') {
            Some(("uri", name)) => Self::uri(name),
            Some(("dns", name)) => Self::dns(name),
            Some(("cn", name)) => Self::common_name(name),
            _ => Err(format!(
                "{text:?} does not say which certificate name it is: write \"uri:<SAN URI>\", \
                 \"dns:<SAN DNS name>\" or \"cn:<subject CN>\" (the CN is only read from a \
                 certificate without a SAN), e.g. \"cn:{text}\""
            )),
        }
    }

    fn typed(kind: &str, name: &str) -> std::result::Result<Self, String> {
        if name.is_empty() {
            return Err(format!("the {kind} name is empty"));
        }
        if name.len() > 1024 || name.chars().any(char::is_control) {
            return Err(format!(
                "the {kind} name is longer than 1024 bytes or holds control characters"
            ));
        }
        Ok(CallerIdentity(format!("{kind}:{name}")))
    }

    /// The text form, `kind:name`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CallerIdentity {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Self, String> {
        Self::parse(&text).map_err(|why| format!("acl.identity: {why}"))
    }
}

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
    grants: HashMap<CallerIdentity, Grant>,
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
        let Some(grant) = self.grants.get(caller) else {
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

    /// Allows `caller` to list keys (the listing shows only keys its patterns cover) when the
    /// ACL names it at all; an unlisted identity is refused like for every other call.
    pub fn authorize_listing(&self, caller: &CallerIdentity) -> Result<()> {
        if self.grants.contains_key(caller) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "identity {caller} is not in the acl"
            )))
        }
    }

    /// Whether `caller` may see `key` (used to filter listings without leaking other ids).
    pub fn may_use(&self, caller: &CallerIdentity, key: &KeyId) -> bool {
        self.grants
            .get(caller)
            .is_some_and(|grant| grant.covers(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl() -> Acl {
        Acl::new(&[
            AclEntry {
                identity: who("gateway"),
                create_keys: true,
                keys: vec!["wallet-*".into()],
                blind_sign: Vec::new(),
            },
            AclEntry {
                identity: who("ops"),
                create_keys: false,
                keys: vec!["ops-?".into(), "hot-*".into()],
                blind_sign: vec!["ops-?".into()],
            },
        ])
    }

    fn key(id: &str) -> KeyId {
        KeyId::parse(id).unwrap_or_else(|e| panic!("{e}"))
    }

    fn who(cn: &str) -> CallerIdentity {
        CallerIdentity::common_name(cn).unwrap_or_else(|e| panic!("{e}"))
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

    #[test]
    fn unlisted_identity_may_not_list() {
        let acl = acl();
        assert!(acl.authorize_listing(&who("gateway")).is_ok());
        let err = acl.authorize_listing(&who("stranger"));
        assert!(matches!(err, Err(Error::PermissionDenied(m)) if m.contains("not in the acl")));
    }

    #[test]
    fn identities_are_typed_and_kinds_never_match_each_other() {
        let cn = CallerIdentity::parse("cn:spiffe://x/gateway").unwrap_or_else(|e| panic!("{e}"));
        let uri = CallerIdentity::parse("uri:spiffe://x/gateway").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(cn, uri);
        assert_eq!(uri.as_str(), "uri:spiffe://x/gateway");
        assert_eq!(
            CallerIdentity::parse("dns:Payments.Example").map(|i| i.to_string()),
            Ok("dns:payments.example".to_owned())
        );
        for bad in [
            "gateway",
            "spiffe://x/gateway",
            "email:a@b",
            "cn:",
            "uri:a\nb",
            "",
        ] {
            let err = CallerIdentity::parse(bad).err();
            assert!(err.is_some(), "{bad:?} was accepted");
        }
        let err = CallerIdentity::parse("gateway").err().unwrap_or_default();
        assert!(
            err.contains("cn:gateway"),
            "the error does not show the fix: {err}"
        );
    }
}
