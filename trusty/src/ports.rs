//! The trusted apps this service offers: their Trusty port names and the
//! GlobalPlatform UUIDs the TEE path addresses them by.
//!
//! UUIDs are UUIDv5 (SHA-1) of the port name in the namespace
//! [`UUID_NAMESPACE`], so any client can compute them.

use uuid::Uuid;

/// The UUIDv5 namespace of the TA UUIDs.
pub const UUID_NAMESPACE: Uuid = Uuid::from_u128(0x09f1bb64_8ff2_40f7_bbe8_d69af1c68c2e);

/// Trusty's IPC unit-test echo service: every message comes back.
pub const ECHO_PORT: &str = "com.android.ipc-unittest.srv.echo";
/// Trusty's IPC unit-test data sink: messages are swallowed.
pub const DATASINK_PORT: &str = "com.android.ipc-unittest.srv.datasink";
/// Secure storage with tamper and rollback detection.
pub const STORAGE_TD_PORT: &str = "com.android.trusty.storage.client.td";
/// Gatekeeper.
pub const GATEKEEPER_PORT: &str = "com.android.trusty.gatekeeper";
/// Hardware key derivation.
pub const HWKEY_PORT: &str = "com.android.trusty.hwkey";

/// One of the trusted apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaKind {
    /// [`ECHO_PORT`].
    Echo,
    /// [`DATASINK_PORT`].
    Datasink,
    /// [`STORAGE_TD_PORT`].
    StorageTd,
    /// [`GATEKEEPER_PORT`].
    Gatekeeper,
    /// [`HWKEY_PORT`].
    Hwkey,
}

impl TaKind {
    /// Every TA, in the order of the table in `docs/trusty.md`.
    pub const ALL: [TaKind; 5] = [
        TaKind::Echo,
        TaKind::Datasink,
        TaKind::StorageTd,
        TaKind::Gatekeeper,
        TaKind::Hwkey,
    ];

    /// The Trusty port name.
    pub fn port_name(self) -> &'static str {
        match self {
            TaKind::Echo => ECHO_PORT,
            TaKind::Datasink => DATASINK_PORT,
            TaKind::StorageTd => STORAGE_TD_PORT,
            TaKind::Gatekeeper => GATEKEEPER_PORT,
            TaKind::Hwkey => HWKEY_PORT,
        }
    }

    /// The GP UUID, RFC 4122 byte order.
    pub fn uuid(self) -> Uuid {
        Uuid::new_v5(&UUID_NAMESPACE, self.port_name().as_bytes())
    }

    /// The TA with this port name.
    pub fn from_port_name(name: &[u8]) -> Option<TaKind> {
        Self::ALL
            .into_iter()
            .find(|t| t.port_name().as_bytes() == name)
    }

    /// The TA with this UUID (RFC 4122 byte order).
    pub fn from_uuid(uuid: &[u8; 16]) -> Option<TaKind> {
        Self::ALL.into_iter().find(|t| t.uuid().as_bytes() == uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_match_the_documented_table() {
        // The table in docs/trusty.md (computed independently with
        // Python's uuid.uuid5).
        let table = [
            (TaKind::Echo, "b4270f96-0acb-5e22-88f7-2ea945e72654"),
            (TaKind::Datasink, "591c207a-31d2-540c-9258-e19f99529a41"),
            (TaKind::StorageTd, "d342e39f-e90d-5004-971f-876293f95ba4"),
            (TaKind::Gatekeeper, "0306d574-a8fd-56f3-92dd-7fad69ac7969"),
            (TaKind::Hwkey, "ef404237-bb58-5147-9ee7-cb1759f24db9"),
        ];
        for (ta, s) in table {
            assert_eq!(ta.uuid().to_string(), s, "{ta:?}");
            assert_eq!(TaKind::from_uuid(ta.uuid().as_bytes()), Some(ta));
            assert_eq!(TaKind::from_port_name(ta.port_name().as_bytes()), Some(ta));
        }
        assert_eq!(TaKind::from_uuid(&[0; 16]), None);
        assert_eq!(
            TaKind::from_port_name(b"com.android.trusty.storage.client.tp"),
            None
        );
    }
}
