//! `signerd inspect-key --config FILE KEY_ID`: reads a key's protection attributes straight from
//! the PKCS#11 token and prints them as JSON, so a security reviewer can check for themselves that
//! a key is sensitive, was never extractable, cannot be copied or destroyed, and that its value
//! cannot be read. For the audit key it also prints the audit anchor kept beside it
//! (`audit_anchor`: the anchored checkpoint's seq and hash, and the data object's flags).

use std::path::Path;

use anyhow::{Context, bail};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};

use crate::audit::anchor::AuditAnchor;
use crate::backend::pkcs11::anchor_template;
use crate::config::Config;
use crate::keys::KeyId;

/// Prints the protection attributes of the private key `key_id`.
pub fn run(config_path: &Path, key_id: &str) -> anyhow::Result<()> {
    let config = Config::load(config_path)
        .with_context(|| format!("invalid config {}", config_path.display()))?;
    let key_id = KeyId::parse(key_id)?;
    let p11 = config
        .backend
        .pkcs11
        .as_ref()
        .context("no [backend.pkcs11] in the config")?;
    let pin = p11.read_pin()?;
    let pkcs11 = Pkcs11::new(&p11.module)?;
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = pkcs11
        .get_slots_with_token()?
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|t| t.label() == p11.token_label)
        })
        .with_context(|| format!("no token labelled {:?}", p11.token_label))?;
    let session = pkcs11.open_ro_session(slot)?;
    session.login(UserType::User, Some(&pin))?;
    let handles = session.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Id(key_id.as_str().as_bytes().to_vec()),
    ])?;
    let [handle] = handles.as_slice() else {
        bail!(
            "expected one private key with CKA_ID {key_id}, found {}",
            handles.len()
        );
    };
    let mut report = serde_json::Map::new();
    report.insert("key_id".into(), key_id.as_str().into());
    let flags = session.get_attributes(
        *handle,
        &[
            AttributeType::Token,
            AttributeType::Private,
            AttributeType::Sensitive,
            AttributeType::AlwaysSensitive,
            AttributeType::Extractable,
            AttributeType::NeverExtractable,
            AttributeType::Copyable,
            AttributeType::Modifiable,
            AttributeType::Destroyable,
        ],
    )?;
    for attr in flags {
        let (name, value) = match attr {
            Attribute::Token(v) => ("token", v),
            Attribute::Private(v) => ("private", v),
            Attribute::Sensitive(v) => ("sensitive", v),
            Attribute::AlwaysSensitive(v) => ("always_sensitive", v),
            Attribute::Extractable(v) => ("extractable", v),
            Attribute::NeverExtractable(v) => ("never_extractable", v),
            Attribute::Copyable(v) => ("copyable", v),
            Attribute::Modifiable(v) => ("modifiable", v),
            Attribute::Destroyable(v) => ("destroyable", v),
            _ => continue,
        };
        report.insert(name.into(), value.into());
    }
    // CKA_VALUE of an Ed25519 private key is its seed: the token must refuse to return it.
    let value = match session
        .get_attribute_info(*handle, &[AttributeType::Value])?
        .first()
    {
        Some(AttributeInfo::Sensitive) => "sensitive",
        Some(AttributeInfo::Available(_)) => "readable",
        Some(AttributeInfo::Unavailable) => "unavailable",
        Some(AttributeInfo::TypeInvalid) => "type-invalid",
        None => "missing",
    };
    report.insert("value".into(), value.into());
    let returned = session
        .get_attributes(*handle, &[AttributeType::Value])
        .is_ok_and(|attrs| attrs.iter().any(|a| matches!(a, Attribute::Value(_))));
    report.insert("value_returned".into(), returned.into());
    if key_id.as_str() == config.audit.key_id {
        report.insert("audit_anchor".into(), audit_anchor(&session, &key_id)?);
    }
    println!("{}", serde_json::Value::Object(report));
    Ok(())
}

/// The audit anchor object of `audit_key`, as JSON (`null` when there is none).
fn audit_anchor(session: &Session, audit_key: &KeyId) -> anyhow::Result<serde_json::Value> {
    let handles = session.find_objects(&anchor_template(audit_key))?;
    // Two only for a moment (or after a crash) while signerd replaces the anchor.
    let [handle] = handles.as_slice() else {
        if handles.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        bail!("{} audit anchor objects, expected one", handles.len());
    };
    let mut anchor = serde_json::Map::new();
    for attr in session.get_attributes(
        *handle,
        &[
            AttributeType::Token,
            AttributeType::Private,
            AttributeType::Value,
        ],
    )? {
        match attr {
            Attribute::Token(v) => {
                anchor.insert("token".into(), v.into());
            }
            Attribute::Private(v) => {
                anchor.insert("private".into(), v.into());
            }
            Attribute::Value(bytes) => {
                // A generation number (u64 BE), then the anchor.
                let parsed = bytes
                    .get(8..)
                    .and_then(AuditAnchor::from_bytes)
                    .context("the audit anchor object holds unreadable bytes")?;
                anchor.insert("seq".into(), parsed.seq.into());
                anchor.insert("hash".into(), hex::encode(parsed.hash).into());
            }
            _ => {}
        }
    }
    Ok(serde_json::Value::Object(anchor))
}
