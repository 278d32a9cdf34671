//! SEP-10 challenge transactions, recognised as such: sequence number 0 (so it can never be
//! applied on any network), only `manage_data` operations, the first one sourced by the key and
//! named `"<home_domain> auth"`, the others sourced by the server (the transaction source) or
//! naming `web_auth_domain` / `client_domain`. Signing one proves control of the key to that
//! home domain and nothing else, so it is signed outside the sequence guard, only for home
//! domains the key's policy lists, and only within its (short) time bounds.

use stellar_xdr::{OperationBody, TransactionEnvelope};

use crate::keys::PublicKey;
use crate::policy::{Denial, Rule};
use crate::stellar::ParsedTransaction;

/// How far ahead a challenge's `max_time` may be (SEP-10 servers give 15 minutes).
pub const MAX_CHALLENGE_VALIDITY_SECS: u64 = 900;

/// A recognised challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The home domain the first operation names.
    pub home_domain: String,
}

impl Challenge {
    /// `Some` when `tx` has the shape of a SEP-10 challenge for `key` (whatever the domain):
    /// sequence 0 and a first `manage_data` sourced by the key named `"... auth"`. Other
    /// operations are checked by [`Challenge::check`].
    pub fn recognise(tx: &ParsedTransaction, key: &PublicKey) -> Option<Challenge> {
        if tx.sequence != 0 || !matches!(tx.envelope, TransactionEnvelope::Tx(_)) {
            return None;
        }
        let first = tx.operations().first()?;
        let first_source = tx.effective_operation_sources().next()?;
        let OperationBody::ManageData(data) = &first.body else {
            return None;
        };
        if first_source != *key || first.source_account.is_none() {
            return None;
        }
        let name = std::str::from_utf8(data.data_name.0.as_slice()).ok()?;
        let home_domain = name.strip_suffix(" auth")?;
        Some(Challenge {
            home_domain: home_domain.to_owned(),
        })
    }

    /// The rest of SEP-10: the server is the transaction source (not the key), every other
    /// operation is a `manage_data` by the server or one of SEP-10's named entries, and the
    /// time bounds hold `now` and end within [`MAX_CHALLENGE_VALIDITY_SECS`].
    pub fn check(&self, tx: &ParsedTransaction, key: &PublicKey, now: u64) -> Result<(), Denial> {
        let refuse = |why: String| Denial::new(Rule::WebAuth, why);
        if tx.source == *key {
            return Err(refuse(
                "a SEP-10 challenge is sourced by the server, not by the client key".into(),
            ));
        }
        for (i, (op, source)) in tx
            .operations()
            .iter()
            .zip(tx.effective_operation_sources())
            .enumerate()
            .skip(1)
        {
            let OperationBody::ManageData(data) = &op.body else {
                return Err(refuse(format!(
                    "operation {i} of a SEP-10 challenge is not manage_data"
                )));
            };
            let name = String::from_utf8_lossy(data.data_name.0.as_slice());
            let named = name == "web_auth_domain" || name == "client_domain";
            if source != tx.source && !(named && source != *key) {
                return Err(refuse(format!(
                    "operation {i} of a SEP-10 challenge ({name}) is sourced by neither the server nor a client domain"
                )));
            }
        }
        match tx.time_bounds() {
            Some((min, max)) if max > 0 && min <= now && now < max => {
                if max > now.saturating_add(MAX_CHALLENGE_VALIDITY_SECS) {
                    return Err(refuse(format!(
                        "the challenge is valid until {max}, more than {MAX_CHALLENGE_VALIDITY_SECS} s ahead"
                    )));
                }
                Ok(())
            }
            _ => Err(refuse(
                "a SEP-10 challenge must have time bounds holding the current time".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{
        DataValue, Limits, ManageDataOp, MuxedAccount, Operation, Preconditions, SequenceNumber,
        String64, TimeBounds, TimePoint, Transaction, TransactionExt, TransactionV1Envelope,
        Uint256, WriteXdr,
    };

    const KEY: [u8; 32] = [1; 32];
    const SERVER: [u8; 32] = [2; 32];
    const NOW: u64 = 1_000_000;

    fn data(name: &str, source: [u8; 32]) -> Operation {
        Operation {
            source_account: Some(MuxedAccount::Ed25519(Uint256(source))),
            body: OperationBody::ManageData(ManageDataOp {
                data_name: String64(name.try_into().unwrap_or_default()),
                data_value: Some(DataValue(vec![b'n'; 64].try_into().unwrap_or_default())),
            }),
        }
    }

    fn challenge(sequence: i64, max_time: u64, operations: Vec<Operation>) -> ParsedTransaction {
        let envelope = TransactionEnvelope::Tx(TransactionV1Envelope {
            tx: Transaction {
                source_account: MuxedAccount::Ed25519(Uint256(SERVER)),
                fee: 100,
                seq_num: SequenceNumber(sequence),
                cond: Preconditions::Time(TimeBounds {
                    min_time: TimePoint(NOW - 5),
                    max_time: TimePoint(max_time),
                }),
                memo: stellar_xdr::Memo::None,
                operations: operations.try_into().unwrap_or_default(),
                ext: TransactionExt::V0,
            },
            signatures: Default::default(),
        });
        let network = crate::stellar::NetworkPassphrase::parse("Test SDF Network ; September 2015")
            .unwrap_or_else(|e| panic!("{e}"));
        let xdr = envelope
            .to_xdr(Limits::none())
            .unwrap_or_else(|e| panic!("{e}"));
        ParsedTransaction::decode(&xdr, &network).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_challenge_is_recognised_by_its_shape_and_checked_op_by_op() {
        let key = PublicKey(KEY);
        let good = challenge(
            0,
            NOW + 900,
            vec![
                data("example.com auth", KEY),
                data("web_auth_domain", SERVER),
            ],
        );
        let found = Challenge::recognise(&good, &key);
        assert_eq!(
            found,
            Some(Challenge {
                home_domain: "example.com".into()
            })
        );
        assert_eq!(found.map(|c| c.check(&good, &key, NOW)), Some(Ok(())));

        // Not a challenge: another sequence, a first operation by someone else.
        let sequenced = challenge(5, NOW + 900, vec![data("example.com auth", KEY)]);
        assert_eq!(Challenge::recognise(&sequenced, &key), None);
        let theirs = challenge(0, NOW + 900, vec![data("example.com auth", SERVER)]);
        assert_eq!(Challenge::recognise(&theirs, &key), None);

        // A challenge, but not one to sign.
        let refuse = |tx: &ParsedTransaction| {
            Challenge::recognise(tx, &key).map(|c| c.check(tx, &key, NOW).map_err(|d| d.rule))
        };
        let long = challenge(0, NOW + 901, vec![data("example.com auth", KEY)]);
        assert_eq!(refuse(&long), Some(Err(Rule::WebAuth)));
        let expired = challenge(0, NOW, vec![data("example.com auth", KEY)]);
        assert_eq!(refuse(&expired), Some(Err(Rule::WebAuth)));
        let riding = challenge(
            0,
            NOW + 900,
            vec![data("example.com auth", KEY), data("other", KEY)],
        );
        assert_eq!(refuse(&riding), Some(Err(Rule::WebAuth)));
        let mut paying = challenge(0, NOW + 900, vec![data("example.com auth", KEY)]);
        if let TransactionEnvelope::Tx(env) = &mut paying.envelope {
            let mut ops = env.tx.operations.to_vec();
            ops.push(Operation {
                source_account: None,
                body: OperationBody::Inflation,
            });
            env.tx.operations = ops.try_into().unwrap_or_default();
        }
        assert_eq!(refuse(&paying), Some(Err(Rule::WebAuth)));
    }
}
