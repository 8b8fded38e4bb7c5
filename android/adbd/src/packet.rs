//! adb transport messages (AOSP `packages/modules/adb/protocol.txt`): a
//! 24-byte little-endian header — command, arg0, arg1, payload length,
//! payload checksum, magic (`command ^ 0xffffffff`) — and the payload.
//!
//! Everything here is pure: [`Header::parse`] checks one header from the
//! wire against the limits, [`decode`] splits a byte buffer into packets
//! (what the fuzz target drives), [`Packet::encode`] writes one.

use thiserror::Error;

/// Length of a message header on the wire.
pub const HEADER_LEN: usize = 24;
/// The first protocol version (payload checksums are verified).
pub const VERSION_MIN: u32 = 0x0100_0000;
/// The version from which payload checksums are neither sent nor checked
/// (Android 9+ clients and daemons; Debian's adb 29 speaks it).
pub const VERSION_SKIP_CHECKSUM: u32 = 0x0100_0001;
/// Our protocol version.
pub const VERSION: u32 = VERSION_SKIP_CHECKSUM;
/// Largest payload a version-1 peer may send before the connection is up.
pub const MAX_PAYLOAD_V1: u32 = 4096;
/// Largest payload this daemon accepts and advertises in its `CNXN`, as
/// AOSP's: without `delayed_ack` (adb 29 has none) a stream moves one
/// packet per round trip, so the packet size sets a push's speed (256 KiB
/// gave 0.67x a raw vsock stream in the test host). The guest's worst case
/// is connections × [`crate::session::MAX_STREAMS`] × two packets.
pub const MAX_PAYLOAD: u32 = 1024 * 1024;

/// `AUTH` arg0: a token to sign (daemon → client).
pub const AUTH_TOKEN: u32 = 1;
/// `AUTH` arg0: a signature of the last token (client → daemon).
pub const AUTH_SIGNATURE: u32 = 2;
/// `AUTH` arg0: the client's public key (client → daemon).
pub const AUTH_RSAPUBLICKEY: u32 = 3;

/// A message command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `SYNC`: obsolete (USB only); never valid from a client.
    Sync,
    /// `CNXN`: connect (version, max payload, banner).
    Cnxn,
    /// `AUTH`: authentication token, signature or public key.
    Auth,
    /// `OPEN`: open a stream to a service (local id, 0, service name).
    Open,
    /// `OKAY`: stream ready / write acknowledged (local id, remote id).
    Okay,
    /// `CLSE`: close a stream (local id or 0, remote id).
    Clse,
    /// `WRTE`: stream data (local id, remote id, data).
    Wrte,
    /// `STLS`: switch to TLS (wireless debugging); not supported here.
    Stls,
}

impl Command {
    /// Every command, in declaration order.
    pub const ALL: [Command; 8] = [
        Command::Sync,
        Command::Cnxn,
        Command::Auth,
        Command::Open,
        Command::Okay,
        Command::Clse,
        Command::Wrte,
        Command::Stls,
    ];

    /// The command word on the wire.
    pub const fn word(self) -> u32 {
        match self {
            Command::Sync => 0x434e_5953,
            Command::Cnxn => 0x4e58_4e43,
            Command::Auth => 0x4854_5541,
            Command::Open => 0x4e45_504f,
            Command::Okay => 0x5941_4b4f,
            Command::Clse => 0x4553_4c43,
            Command::Wrte => 0x4554_5257,
            Command::Stls => 0x534c_5453,
        }
    }

    /// The command of a wire word, if it is one.
    pub fn from_word(word: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.word() == word)
    }

    /// The four ASCII letters (`b"CNXN"`), for logs.
    pub fn name(self) -> &'static str {
        match self {
            Command::Sync => "SYNC",
            Command::Cnxn => "CNXN",
            Command::Auth => "AUTH",
            Command::Open => "OPEN",
            Command::Okay => "OKAY",
            Command::Clse => "CLSE",
            Command::Wrte => "WRTE",
            Command::Stls => "STLS",
        }
    }
}

/// Why a message from the wire was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PacketError {
    /// The command word is not an adb command.
    #[error("unknown command word {0:#010x}")]
    UnknownCommand(u32),
    /// The magic is not the command's complement.
    #[error("bad magic {magic:#010x} for command {command:#010x}")]
    BadMagic {
        /// The command word.
        command: u32,
        /// The magic word.
        magic: u32,
    },
    /// The payload is longer than allowed at this point.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Announced payload length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The payload does not add up to the header's checksum (version 1).
    #[error("payload checksum {actual:#x} differs from the header's {expected:#x}")]
    Checksum {
        /// The header's `data_check`.
        expected: u32,
        /// The sum of the payload's bytes.
        actual: u32,
    },
}

/// A parsed message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The command.
    pub command: Command,
    /// First argument.
    pub arg0: u32,
    /// Second argument.
    pub arg1: u32,
    /// Payload length in bytes.
    pub data_length: u32,
    /// Payload checksum (byte sum; 0 from version-2 senders).
    pub data_check: u32,
}

fn word(bytes: &[u8; HEADER_LEN], index: usize) -> u32 {
    let at = index * 4;
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

impl Header {
    /// Parses and checks a header: a known command, its magic, and a
    /// payload of at most `max_payload` bytes.
    pub fn parse(bytes: &[u8; HEADER_LEN], max_payload: u32) -> Result<Self, PacketError> {
        let command_word = word(bytes, 0);
        let magic = word(bytes, 5);
        if magic != !command_word {
            return Err(PacketError::BadMagic {
                command: command_word,
                magic,
            });
        }
        let command =
            Command::from_word(command_word).ok_or(PacketError::UnknownCommand(command_word))?;
        let data_length = word(bytes, 3);
        if data_length > max_payload {
            return Err(PacketError::TooLong {
                len: data_length,
                max: max_payload,
            });
        }
        Ok(Self {
            command,
            arg0: word(bytes, 1),
            arg1: word(bytes, 2),
            data_length,
            data_check: word(bytes, 4),
        })
    }

    /// Checks the payload against `data_check` when `verify` (peers older
    /// than [`VERSION_SKIP_CHECKSUM`]); otherwise the payload is not read
    /// (a push would pay a pass over every byte for nothing).
    pub fn check_payload(&self, payload: &[u8], verify: bool) -> Result<(), PacketError> {
        if !verify {
            return Ok(());
        }
        let actual = checksum(payload);
        if actual != self.data_check {
            return Err(PacketError::Checksum {
                expected: self.data_check,
                actual,
            });
        }
        Ok(())
    }
}

/// The version-1 payload checksum: the sum of its bytes.
pub fn checksum(data: &[u8]) -> u32 {
    data.iter()
        .fold(0u32, |sum, &b| sum.wrapping_add(u32::from(b)))
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The command.
    pub command: Command,
    /// First argument.
    pub arg0: u32,
    /// Second argument.
    pub arg1: u32,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Packet {
    /// A message.
    pub fn new(command: Command, arg0: u32, arg1: u32, payload: Vec<u8>) -> Self {
        Self {
            command,
            arg0,
            arg1,
            payload,
        }
    }

    /// The header and the payload as sent on the wire. The checksum is
    /// always filled in (old peers check it, newer ones ignore it).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        for w in [
            self.command.word(),
            self.arg0,
            self.arg1,
            len,
            checksum(&self.payload),
            !self.command.word(),
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Why [`decode`] returned no packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// More bytes are needed.
    #[error("incomplete message")]
    Incomplete,
    /// The bytes are not a valid message.
    #[error(transparent)]
    Invalid(#[from] PacketError),
}

/// Decodes the first message of `input`: the packet and the bytes it took.
pub fn decode(
    input: &[u8],
    max_payload: u32,
    verify_checksum: bool,
) -> Result<(Packet, usize), DecodeError> {
    let Some(head) = input.get(..HEADER_LEN) else {
        return Err(DecodeError::Incomplete);
    };
    let mut bytes = [0u8; HEADER_LEN];
    bytes.copy_from_slice(head);
    let header = Header::parse(&bytes, max_payload)?;
    let end = HEADER_LEN + header.data_length as usize;
    let payload = input.get(HEADER_LEN..end).ok_or(DecodeError::Incomplete)?;
    header.check_payload(payload, verify_checksum)?;
    Ok((
        Packet::new(header.command, header.arg0, header.arg1, payload.to_vec()),
        end,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = Packet::new(Command::Wrte, 7, 9, b"hello".to_vec());
        let wire = p.encode();
        assert_eq!(&wire[..4], b"WRTE");
        assert_eq!(wire.len(), HEADER_LEN + 5);
        let (q, used) = decode(&wire, MAX_PAYLOAD, true).unwrap();
        assert_eq!((q, used), (p, wire.len()));
    }

    #[test]
    fn command_words_spell_their_names() {
        for c in Command::ALL {
            assert_eq!(&c.word().to_le_bytes(), c.name().as_bytes());
            assert_eq!(Command::from_word(c.word()), Some(c));
        }
    }

    #[test]
    fn hostile_headers_are_rejected() {
        let mut wire = Packet::new(Command::Open, 1, 0, b"shell:\0".to_vec()).encode();
        // Incomplete header and payload.
        assert_eq!(
            decode(&wire[..10], MAX_PAYLOAD, true),
            Err(DecodeError::Incomplete)
        );
        assert_eq!(
            decode(&wire[..HEADER_LEN + 2], MAX_PAYLOAD, true),
            Err(DecodeError::Incomplete)
        );
        // Payload over the limit.
        assert!(matches!(
            decode(&wire, 4, true),
            Err(DecodeError::Invalid(PacketError::TooLong {
                len: 7,
                max: 4
            }))
        ));
        // Checksum: checked for version 1 only.
        wire[HEADER_LEN] ^= 1;
        assert!(matches!(
            decode(&wire, MAX_PAYLOAD, true),
            Err(DecodeError::Invalid(PacketError::Checksum { .. }))
        ));
        assert!(decode(&wire, MAX_PAYLOAD, false).is_ok());
        // Bad magic.
        wire[20] ^= 1;
        assert!(matches!(
            decode(&wire, MAX_PAYLOAD, false),
            Err(DecodeError::Invalid(PacketError::BadMagic { .. }))
        ));
        // Unknown command with a matching magic.
        let mut bogus = [0u8; HEADER_LEN];
        bogus[..4].copy_from_slice(b"XXXX");
        let w = !u32::from_le_bytes(*b"XXXX");
        bogus[20..].copy_from_slice(&w.to_le_bytes());
        assert!(matches!(
            decode(&bogus, MAX_PAYLOAD, false),
            Err(DecodeError::Invalid(PacketError::UnknownCommand(_)))
        ));
    }

    #[test]
    fn checksum_is_a_byte_sum() {
        assert_eq!(checksum(b""), 0);
        assert_eq!(checksum(&[0xff; 3]), 0x2fd);
    }
}
