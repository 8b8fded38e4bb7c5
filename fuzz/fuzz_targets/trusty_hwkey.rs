//! hwkey's message parser: any bytes in, a well-formed hwkey_msg out.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trusty::keys::DeviceSecret;
use trusty::ta::hwkey::{Hwkey, HEADER_LEN, MAX_SEED, RESP_BIT};

fuzz_target!(|msg: &[u8]| {
    let h = Hwkey::new(DeviceSecret::from_bytes([1; 32]).guest_keys("fuzz").hwkey);
    let r = h.handle(msg);
    assert!(r.len() >= HEADER_LEN && r.len() <= HEADER_LEN + MAX_SEED);
    assert_eq!(
        u32::from_le_bytes([r[0], r[1], r[2], r[3]]) & RESP_BIT,
        RESP_BIT
    );
    let status = u32::from_le_bytes([r[8], r[9], r[10], r[11]]);
    if status == 0 {
        // A derived key has the seed's length.
        assert_eq!(r.len(), msg.len());
    } else {
        assert_eq!(r.len(), HEADER_LEN);
    }
});
