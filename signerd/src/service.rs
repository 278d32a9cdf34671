//! The `signer.v1.Signer` gRPC service: turns requests into typed values, asks the ACL, and calls
//! the keyring. Every handler starts from the identity the TLS layer established.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use signer_proto::v1 as pb;
use signer_proto::v1::signer_server::Signer;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::authz::{Acl, Action, CallerIdentity};
use crate::backend::Keyring;
use crate::error::Error;
use crate::keys::{KeyId, KeyInfo};
use crate::stellar::{NetworkPassphrase, ParsedTransaction, SignedPayload};
use crate::tls::PeerInfo;

/// The gRPC metadata entry carrying the caller's request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// The `Signer` service.
pub struct SignerService {
    keyring: Arc<Keyring>,
    acl: Arc<Acl>,
}

impl SignerService {
    /// Builds the service over a keyring and an ACL.
    pub fn new(keyring: Arc<Keyring>, acl: Arc<Acl>) -> Self {
        SignerService { keyring, acl }
    }

    /// Authorises `action` for `caller`; a denial is logged before it is returned.
    fn authorize(&self, ctx: &CallContext, action: Action<'_>) -> Result<(), Status> {
        self.acl.authorize(&ctx.caller, action).map_err(|e| {
            tracing::warn!(request_id = %ctx.request_id, identity = %ctx.caller, rpc = ctx.rpc, reason = %e, "denied");
            Status::from(e)
        })
    }
}

/// Who is calling, with which request id, for which RPC.
struct CallContext {
    caller: CallerIdentity,
    request_id: String,
    rpc: &'static str,
}

impl CallContext {
    fn of<T>(request: &Request<T>, rpc: &'static str) -> Result<Self, Status> {
        // Every connection passes through the TLS acceptor, which attaches PeerInfo; a request
        // without it did not come through that path and is refused.
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .ok_or_else(|| Status::unauthenticated("no verified client certificate"))?;
        Ok(CallContext {
            caller: peer.identity.clone(),
            request_id: request_id(request.metadata()),
            rpc,
        })
    }
}

/// The caller's request id when it sent a sane one, else a fresh one.
fn request_id(metadata: &MetadataMap) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let sane = |id: &&str| {
        !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    match metadata
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(sane)
    {
        Some(id) => id.to_owned(),
        None => format!(
            "signerd-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ),
    }
}

fn key_to_proto(key: &KeyInfo) -> pb::Key {
    pb::Key {
        key_id: key.id.to_string(),
        public_key: key.public_key.account_id(),
        public_key_bytes: key.public_key.0.to_vec(),
        backend: key.backend.to_owned(),
    }
}

fn signed_payload_to_proto(payload: SignedPayload) -> pb::SignedPayload {
    match payload {
        SignedPayload::Transaction => pb::SignedPayload::Transaction,
        SignedPayload::FeeBump => pb::SignedPayload::FeeBump,
        SignedPayload::InnerTransaction => pb::SignedPayload::InnerTransaction,
    }
}

#[tonic::async_trait]
impl Signer for SignerService {
    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let ctx = CallContext::of(&request, "CreateKey")?;
        let req = request.into_inner();
        let key_id = KeyId::parse(&req.key_id)?;
        self.authorize(&ctx, Action::CreateKey(&key_id))?;
        let backend = Some(req.backend.as_str()).filter(|b| !b.is_empty());
        let (key, created) = self.keyring.create_key(&key_id, backend).await?;
        tracing::info!(request_id = %ctx.request_id, identity = %ctx.caller, key_id = %key_id, created, "CreateKey");
        Ok(Response::new(pb::CreateKeyResponse {
            key: Some(key_to_proto(&key)),
            created,
        }))
    }

    async fn get_key(
        &self,
        request: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::GetKeyResponse>, Status> {
        let ctx = CallContext::of(&request, "GetKey")?;
        let key_id = KeyId::parse(&request.get_ref().key_id)?;
        self.authorize(&ctx, Action::UseKey(&key_id))?;
        let (key, _) = self.keyring.find(&key_id).await?;
        Ok(Response::new(pb::GetKeyResponse {
            key: Some(key_to_proto(&key)),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let ctx = CallContext::of(&request, "ListKeys")?;
        let req = request.into_inner();
        let page_size = match req.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(KeyId::parse(&req.page_token).map_err(|_| {
                Status::invalid_argument("page_token is not one this server issued")
            })?)
        };
        let visible = self
            .keyring
            .list_keys()
            .await?
            .into_iter()
            .filter(|key| after.as_ref().is_none_or(|after| key.id > *after))
            .filter(|key| self.acl.may_use(&ctx.caller, &key.id));
        let mut keys: Vec<KeyInfo> = visible.take(page_size + 1).collect();
        let next_page_token = if keys.len() > page_size {
            keys.truncate(page_size);
            keys.last().map(|k| k.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListKeysResponse {
            keys: keys.iter().map(key_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn sign_transaction(
        &self,
        request: Request<pb::SignTransactionRequest>,
    ) -> Result<Response<pb::SignTransactionResponse>, Status> {
        let ctx = CallContext::of(&request, "SignTransaction")?;
        let req = request.into_inner();
        let key_id = KeyId::parse(&req.key_id)?;
        self.authorize(&ctx, Action::UseKey(&key_id))?;
        let network = NetworkPassphrase::parse(&req.network_passphrase)?;
        let tx = ParsedTransaction::decode(&req.envelope_xdr, &network)?;
        let (key, backend) = self.keyring.find(&key_id).await?;
        let (payload, signed_hash) = tx.payload_for(&key.public_key);
        let signature = backend.sign(&key_id, &signed_hash).await?;
        tracing::debug!(
            request_id = %ctx.request_id,
            identity = %ctx.caller,
            key_id = %key_id,
            tx_hash = %hex::encode(tx.tx_hash),
            source = %tx.source.account_id(),
            sequence = tx.sequence,
            "SignTransaction signed"
        );
        Ok(Response::new(pb::SignTransactionResponse {
            signature: signature.to_vec(),
            hint: key.public_key.hint().to_vec(),
            signed_hash: signed_hash.to_vec(),
            tx_hash: tx.tx_hash.to_vec(),
            signed_payload: signed_payload_to_proto(payload).into(),
        }))
    }

    async fn sign_hash(
        &self,
        request: Request<pb::SignHashRequest>,
    ) -> Result<Response<pb::SignHashResponse>, Status> {
        let ctx = CallContext::of(&request, "SignHash")?;
        let req = request.into_inner();
        let key_id = KeyId::parse(&req.key_id)?;
        self.authorize(&ctx, Action::BlindSign(&key_id))?;
        let hash: [u8; 32] = req.hash.as_slice().try_into().map_err(|_| {
            Status::from(Error::InvalidArgument(format!(
                "hash must be 32 bytes, got {}",
                req.hash.len()
            )))
        })?;
        let (key, backend) = self.keyring.find(&key_id).await?;
        let signature = backend.sign(&key_id, &hash).await?;
        tracing::warn!(request_id = %ctx.request_id, identity = %ctx.caller, key_id = %key_id, hash = %hex::encode(hash), "SignHash: blind signature issued");
        Ok(Response::new(pb::SignHashResponse {
            signature: signature.to_vec(),
            hint: key.public_key.hint().to_vec(),
        }))
    }
}
