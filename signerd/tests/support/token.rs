//! The test token opened directly through PKCS#11, for test tasks that run in a child process
//! with the token's `SOFTHSM2_CONF` (reading attributes signerd never exposes, planting objects a
//! crash or an import would leave).

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::{Session, UserType};

/// A read-write session on the test token, logged in as the user. Panics (the child task fails)
/// when the token cannot be opened.
pub fn user_session() -> Session {
    let pkcs11 = Pkcs11::new(signer_testkit::SOFTHSM_MODULE).unwrap_or_else(|e| panic!("{e}"));
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap_or_else(|e| panic!("{e}"));
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|t| t.label() == signer_testkit::TEST_TOKEN_LABEL)
        })
        .unwrap_or_else(|| panic!("no test token"));
    let session = pkcs11
        .open_rw_session(slot)
        .unwrap_or_else(|e| panic!("{e}"));
    session
        .login(UserType::User, Some(&signer_testkit::TEST_PIN.into()))
        .unwrap_or_else(|e| panic!("{e}"));
    session
}
