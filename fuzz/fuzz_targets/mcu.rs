//! The MCU link as `sysmgr` reads it: the byte stream from the MCU socket,
//! cut into reads of any size, through `proto::FrameDecoder` (varint
//! length prefix, at most 4096 bytes) and `McuToSoc` protobuf decoding,
//! then the decoded signals fed to the arbiter core as the daemon feeds
//! them, with time passing.
//!
//! Oracles: the incremental decoder yields exactly the frames (and the
//! error, at the same point) of an independent decoder run over the whole
//! stream, however the reads are cut; no frame exceeds `MAX_FRAME`; after
//! the frames are taken fewer than `5 + MAX_FRAME` bytes stay buffered; a
//! frame that decodes re-encodes to a frame that decodes to the same
//! message; the arbiter never panics and every input it is given but
//! `Tick` leaves at least one output (the log explains each input).

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use protobuf::Message;
use sysmgr::proto::mcu::{mcu_to_soc, McuToSoc};
use sysmgr::proto::{self, FrameDecoder, FrameError, MAX_FRAME};
use system_manager::testing::guest_tables;
use system_manager::{Arbiter, Input, Millis, Policy, WakeReason};

#[derive(Arbitrary, Debug)]
struct Input_ {
    /// The stream, cut into reads at these lengths (cycled).
    cuts: Vec<u16>,
    stream: Vec<u8>,
    /// Milliseconds passing after each message.
    steps: Vec<u16>,
}

/// Frames of the whole stream (with where each ends), then the error if
/// framing broke.
fn reference(stream: &[u8]) -> (Vec<(Vec<u8>, usize)>, Option<FrameError>) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let mut len = 0u64;
        let mut i = 0;
        loop {
            let Some(&b) = stream.get(at + i) else {
                return (frames, None);
            };
            if i == 5 {
                return (frames, Some(FrameError::BadLength));
            }
            len |= u64::from(b & 0x7f) << (7 * i);
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if len > MAX_FRAME as u64 {
            return (frames, Some(FrameError::TooLong(len)));
        }
        let end = at + i + len as usize;
        if end > stream.len() {
            return (frames, None);
        }
        frames.push((stream[at + i..end].to_vec(), end));
        at = end;
    }
}

/// What the daemon feeds the arbiter for one MCU message.
fn inputs(m: &McuToSoc, arbiter: &Arbiter) -> Vec<Input> {
    match &m.signal {
        Some(mcu_to_soc::Signal::State(s)) => {
            let mut v = Vec::new();
            if s.ignition_on != arbiter.ignition_on() {
                v.push(if s.ignition_on {
                    Input::IgnitionOn
                } else {
                    Input::IgnitionOff
                });
            }
            if s.vehicle_in_use != arbiter.vehicle_in_use() {
                v.push(Input::VehicleInUse {
                    in_use: s.vehicle_in_use,
                });
            }
            v
        }
        Some(mcu_to_soc::Signal::Ignition(ig)) => vec![if ig.on {
            Input::IgnitionOn
        } else {
            Input::IgnitionOff
        }],
        Some(mcu_to_soc::Signal::VehicleInUse(u)) => vec![Input::VehicleInUse { in_use: u.in_use }],
        Some(mcu_to_soc::Signal::Wake(w)) => match WakeReason::from_vhal(w.reason.value()) {
            Ok(reason) => vec![Input::WakeRequest { reason }],
            Err(_) => vec![],
        },
        // None, and oneof cases added later (the enum is non-exhaustive).
        _ => vec![],
    }
}

fuzz_target!(|input: Input_| {
    let stream = &input.stream[..input.stream.len().min(64 * 1024)];
    let (want_frames, want_error) = reference(stream);

    let mut dec = FrameDecoder::default();
    let mut frames = Vec::new();
    let mut error = None;
    let mut pushed = 0usize;
    let mut at = 0;
    let mut cut = 0;
    'read: while at < stream.len() {
        let n = input
            .cuts
            .get(cut % input.cuts.len().max(1))
            .map_or(stream.len(), |&c| usize::from(c).max(1));
        cut += 1;
        let end = (at + n).min(stream.len());
        dec.push(&stream[at..end]);
        pushed += end - at;
        at = end;
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.len() <= MAX_FRAME);
                    frames.push(f);
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break 'read;
                }
            }
        }
        // What is left is one incomplete frame at most.
        let taken = frames
            .len()
            .checked_sub(1)
            .and_then(|last| want_frames.get(last))
            .map_or(0, |f| f.1);
        assert!(
            pushed - taken < 5 + MAX_FRAME,
            "{} bytes buffered",
            pushed - taken
        );
    }
    let want: Vec<Vec<u8>> = want_frames.into_iter().map(|f| f.0).collect();
    assert_eq!(frames, want, "frames depend on how the stream was read");
    assert_eq!(error, want_error);

    let fleet = guest_tables(&[("android", "android", None), ("cluster", "cluster", None)]);
    let policy = Policy::from_toml_str(&fleet).expect("fuzz policy");
    let mut arbiter = Arbiter::new(policy);
    let mut now = 0u64;
    for (i, f) in frames.iter().enumerate() {
        let Ok(m) = proto::decode::<McuToSoc>(f) else {
            continue;
        };
        let again = proto::encode(&m);
        let mut dec = FrameDecoder::default();
        dec.push(&again);
        let frame = dec
            .next_frame()
            .expect("our own frame")
            .expect("our own frame is whole");
        let back = proto::decode::<McuToSoc>(&frame).expect("our own message decodes");
        assert_eq!(back, m);
        assert_eq!(m.compute_size() as usize, frame.len());
        for inp in inputs(&m, &arbiter) {
            let outputs = arbiter.handle(Millis(now), inp);
            assert!(!outputs.is_empty(), "an MCU input left no output");
        }
        let step = input.steps.get(i).copied().unwrap_or(100);
        now += u64::from(step);
        if arbiter.next_timer().is_some_and(|t| t.0 <= now) {
            arbiter.handle(Millis(now), Input::Tick);
        }
    }
});
