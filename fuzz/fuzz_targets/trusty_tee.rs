//! The host TEE protocol's decoders (what trustyd reads from a VMM and a
//! VMM reads from trustyd): any body; what decodes must survive an
//! encode/decode round trip unchanged (value outputs in requests carry
//! ignored values, so bytes may differ there).

#![no_main]

use libfuzzer_sys::fuzz_target;
use trusty::tee::{FrameDecoder, Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok((id, req)) = Request::decode(data) {
        let frame = req.encode_frame(id);
        assert_eq!(Request::decode(&frame[4..]), Ok((id, req)));
    }
    if let Ok(resp) = Response::decode(data) {
        let frame = resp.encode_frame();
        assert_eq!(&frame[4..], data);
    }
    // The same bytes as a stream of frames, pushed in two pieces.
    let mut d = FrameDecoder::new();
    let cut = data.len() / 2;
    d.push(&data[..cut]);
    let mut seen = 0;
    loop {
        match d.next_body() {
            Ok(Some(b)) => seen += 4 + b.len(),
            Ok(None) => break,
            Err(_) => return,
        }
    }
    d.push(&data[cut..]);
    while let Ok(Some(b)) = d.next_body() {
        seen += 4 + b.len();
    }
    assert_eq!(seen + d.pending(), data.len());
});
