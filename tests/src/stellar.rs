//! Building Stellar transactions for tests, with stellar-xdr: the same types signerd decodes.

use stellar_xdr::{
    AccountId, Asset, BumpSequenceOp, ContractId, CreateAccountOp, Duration, FeeBumpTransaction,
    FeeBumpTransactionEnvelope, FeeBumpTransactionExt, FeeBumpTransactionInnerTx, Hash,
    HostFunction, InvokeContractArgs, InvokeHostFunctionOp, Limits, ManageSellOfferOp, Memo,
    MuxedAccount, MuxedAccountMed25519, Operation, OperationBody, PaymentOp, Preconditions,
    PreconditionsV2, Price, PublicKey, ScAddress, ScSymbol, ScVal, SequenceNumber, SetOptionsOp,
    Signer, SignerKey, TimeBounds, TimePoint, Transaction, TransactionEnvelope, TransactionExt,
    TransactionV1Envelope, Uint256, WriteXdr,
};

/// Now, in Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The 32 raw bytes of a key returned by signerd.
pub fn key_bytes(key: &signer_proto::v1::Key) -> [u8; 32] {
    key.public_key_bytes
        .as_slice()
        .try_into()
        .unwrap_or([0; 32])
}

/// A plain (not multiplexed) account.
pub fn muxed(key: [u8; 32]) -> MuxedAccount {
    MuxedAccount::Ed25519(Uint256(key))
}

/// A native payment of `stroops` to `destination`.
pub fn payment(destination: [u8; 32], stroops: i64) -> Operation {
    Operation {
        source_account: None,
        body: OperationBody::Payment(PaymentOp {
            destination: muxed(destination),
            asset: Asset::Native,
            amount: stroops,
        }),
    }
}

/// A native payment of `stroops` to the multiplexed account `(destination, id)` (an `M...`
/// address).
pub fn payment_to_muxed(destination: [u8; 32], id: u64, stroops: i64) -> Operation {
    Operation {
        source_account: None,
        body: OperationBody::Payment(PaymentOp {
            destination: MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
                id,
                ed25519: Uint256(destination),
            }),
            asset: Asset::Native,
            amount: stroops,
        }),
    }
}

/// Creates `destination` with a starting balance.
pub fn create_account(destination: [u8; 32], stroops: i64) -> Operation {
    Operation {
        source_account: None,
        body: OperationBody::CreateAccount(CreateAccountOp {
            destination: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(destination))),
            starting_balance: stroops,
        }),
    }
}

/// Adds `signer` as a signer with weight 1: a change of authority.
pub fn add_signer(signer: [u8; 32]) -> Operation {
    Operation {
        source_account: None,
        body: OperationBody::SetOptions(SetOptionsOp {
            signer: Some(Signer {
                key: SignerKey::Ed25519(Uint256(signer)),
                weight: 1,
            }),
            ..SetOptionsOp::default()
        }),
    }
}

/// Sets only the home domain: a harmless set_options.
pub fn set_home_domain(domain: &str) -> Operation {
    Operation {
        source_account: None,
        body: OperationBody::SetOptions(SetOptionsOp {
            home_domain: domain
                .as_bytes()
                .to_vec()
                .try_into()
                .ok()
                .map(stellar_xdr::String32),
            ..SetOptionsOp::default()
        }),
    }
}

/// Merges the source account into `destination`.
pub fn account_merge(destination: [u8; 32]) -> Operation {
    Operation {
        source_account: None,
        body: OperationBody::AccountMerge(muxed(destination)),
    }
}

/// Bumps the source account's sequence to `to` (`i64::MAX`: the account can never transact
/// again).
pub fn bump_sequence(to: i64) -> Operation {
    Operation {
        source_account: None,
        body: OperationBody::BumpSequence(BumpSequenceOp {
            bump_to: SequenceNumber(to),
        }),
    }
}

/// An offer selling `stroops` of XLM for `buying` at 1/1000 of a unit: any price is signable.
pub fn sell_offer(buying_issuer: [u8; 32], stroops: i64) -> Operation {
    Operation {
        source_account: None,
        body: OperationBody::ManageSellOffer(ManageSellOfferOp {
            selling: Asset::Native,
            buying: Asset::CreditAlphanum4(stellar_xdr::AlphaNum4 {
                asset_code: stellar_xdr::AssetCode4(*b"USDC"),
                issuer: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(buying_issuer))),
            }),
            amount: stroops,
            price: Price { n: 1, d: 1000 },
            offer_id: 0,
        }),
    }
}

/// A Soroban call of `function` on contract `contract` with one address argument (e.g. a token
/// `approve` for `spender`).
pub fn invoke_contract(contract: [u8; 32], function: &str, spender: [u8; 32]) -> Operation {
    let address = ScAddress::Account(AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(spender))));
    Operation {
        source_account: None,
        body: OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
            host_function: HostFunction::InvokeContract(InvokeContractArgs {
                contract_address: ScAddress::Contract(ContractId(Hash(contract))),
                function_name: ScSymbol(function.try_into().unwrap_or_default()),
                args: vec![ScVal::Address(address)].try_into().unwrap_or_default(),
            }),
            auth: Default::default(),
        }),
    }
}

/// `op` with its own source account.
pub fn with_source(mut op: Operation, source: [u8; 32]) -> Operation {
    op.source_account = Some(muxed(source));
    op
}

/// A v1 transaction under construction.
#[derive(Clone, Debug)]
pub struct Tx {
    /// Source account.
    pub source: [u8; 32],
    /// Sequence number.
    pub sequence: i64,
    /// `(min_time, max_time)`; `None`: no time bounds at all.
    pub time_bounds: Option<(u64, u64)>,
    /// Operations.
    pub operations: Vec<Operation>,
    /// Fee in stroops.
    pub fee: u32,
    /// A text memo (changes the hash without changing anything else).
    pub memo: Option<String>,
    /// `min_seq_num`: lets the transaction apply while the account's sequence is anywhere from
    /// this up to `sequence - 1`.
    pub min_seq_num: Option<i64>,
    /// `min_seq_age` in seconds (0: absent).
    pub min_seq_age: u64,
}

impl Tx {
    /// A payment of 1 XLM from `source` to a fixed destination, valid for the next 60 s.
    pub fn new(source: [u8; 32], sequence: i64) -> Self {
        let now = now();
        Tx {
            source,
            sequence,
            time_bounds: Some((now.saturating_sub(5), now + 60)),
            operations: vec![payment([7; 32], 10_000_000)],
            fee: 100,
            memo: None,
            min_seq_num: None,
            min_seq_age: 0,
        }
    }

    /// The v1 envelope (no signatures).
    pub fn v1(&self) -> TransactionV1Envelope {
        let time_bounds = self.time_bounds.map(|(min, max)| TimeBounds {
            min_time: TimePoint(min),
            max_time: TimePoint(max),
        });
        let cond = match (time_bounds, self.min_seq_num, self.min_seq_age) {
            (None, None, 0) => Preconditions::None,
            (Some(bounds), None, 0) => Preconditions::Time(bounds),
            (time_bounds, min_seq_num, min_seq_age) => Preconditions::V2(PreconditionsV2 {
                time_bounds,
                ledger_bounds: None,
                min_seq_num: min_seq_num.map(SequenceNumber),
                min_seq_age: Duration(min_seq_age),
                min_seq_ledger_gap: 0,
                extra_signers: Default::default(),
            }),
        };
        let memo = match &self.memo {
            Some(text) => text
                .as_bytes()
                .to_vec()
                .try_into()
                .map(Memo::Text)
                .unwrap_or(Memo::None),
            None => Memo::None,
        };
        TransactionV1Envelope {
            tx: Transaction {
                source_account: muxed(self.source),
                fee: self.fee,
                seq_num: SequenceNumber(self.sequence),
                cond,
                memo,
                operations: self.operations.clone().try_into().unwrap_or_default(),
                ext: TransactionExt::V0,
            },
            signatures: Default::default(),
        }
    }

    /// The envelope as raw XDR.
    pub fn xdr(&self) -> Vec<u8> {
        TransactionEnvelope::Tx(self.v1())
            .to_xdr(Limits::none())
            .unwrap_or_default()
    }

    /// A fee bump paid by `fee_source` around this transaction, as raw XDR.
    pub fn fee_bump_xdr(&self, fee_source: [u8; 32], fee: i64) -> Vec<u8> {
        TransactionEnvelope::TxFeeBump(FeeBumpTransactionEnvelope {
            tx: FeeBumpTransaction {
                fee_source: muxed(fee_source),
                fee,
                inner_tx: FeeBumpTransactionInnerTx::Tx(self.v1()),
                ext: FeeBumpTransactionExt::V0,
            },
            signatures: Default::default(),
        })
        .to_xdr(Limits::none())
        .unwrap_or_default()
    }
}
