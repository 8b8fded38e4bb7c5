//! The echo TA's ECHO command (docs/trusty.md) on host parameters, the one
//! model the fake TEE services answer with: the unit tests'
//! (`test_backend`) and the fuzz targets' (`fuzz/src/tee.rs`, through
//! [`super::fuzzing`]).

use super::backend::{HostParam, HostParamOut};
use super::protocol::{result, Direction, Value, NUM_PARAMS};

/// Answers `params` as the echo TA: a value output copies the last value
/// input before it, a memory-reference output the last memory-reference
/// input before it (`TEEC_ERROR_SHORT_BUFFER` with the size needed when it
/// has too little room), in-out parameters come back unchanged; an output
/// with no input before it is `TEEC_ERROR_BAD_PARAMETERS`.
pub fn echo(params: &[HostParam; NUM_PARAMS]) -> (u32, [HostParamOut; NUM_PARAMS]) {
    let mut out: [HostParamOut; NUM_PARAMS] = Default::default();
    let mut value: Option<Value> = None;
    let mut bytes: Option<&[u8]> = None;
    let mut ret = 0;
    for (p, o) in params.iter().zip(out.iter_mut()) {
        *o = match p {
            HostParam::None => HostParamOut::None,
            HostParam::Value(Direction::Input, v) => {
                value = Some(*v);
                HostParamOut::None
            }
            HostParam::Value(Direction::InOut, v) => HostParamOut::Value(*v),
            HostParam::Value(Direction::Output, _) => match value {
                Some(v) => HostParamOut::Value(v),
                None => return (result::BAD_PARAMETERS, Default::default()),
            },
            HostParam::MemRefIn(b) => {
                bytes = Some(b);
                HostParamOut::None
            }
            HostParam::MemRefInOut(b) => HostParamOut::MemRef {
                size: b.len() as u32,
                bytes: b.clone(),
            },
            HostParam::MemRefOut { capacity } => match bytes {
                Some(b) if b.len() > *capacity as usize => {
                    ret = result::SHORT_BUFFER;
                    HostParamOut::MemRef {
                        size: b.len() as u32,
                        bytes: Vec::new(),
                    }
                }
                Some(b) => HostParamOut::MemRef {
                    size: b.len() as u32,
                    bytes: b.to_vec(),
                },
                None => return (result::BAD_PARAMETERS, Default::default()),
            },
        };
    }
    (ret, out)
}
