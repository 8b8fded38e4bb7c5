//! Trusty's IPC unit-test services: echo (every message back, unchanged)
//! and datasink (every message swallowed), and echo's native GP commands
//! (`docs/trusty.md`, "How an invoke maps onto each TA").

use std::time::Duration;

use super::{CancelFlag, Channel, GpSession, InvokeResult};
use crate::tee::proto::{origin, result, Param, ParamOut, Value, NUM_PARAMS};

/// GP command: echo values and memrefs.
pub const CMD_ECHO: u32 = 0;
/// GP command: wait `param 0 value a` ms or until cancelled.
pub const CMD_WAIT: u32 = 1;
/// Longest `CMD_WAIT`.
pub const MAX_WAIT_MS: u64 = 30_000;

/// The parameters of a `CMD_WAIT` of `ms` milliseconds.
pub fn wait_params(ms: u64) -> [Param; NUM_PARAMS] {
    Param::only(Param::ValueInput(Value { a: ms, b: 0, c: 0 }))
}

/// `com.android.ipc-unittest.srv.echo` as a Trusty channel.
#[derive(Debug, Default)]
pub struct EchoChannel;

impl Channel for EchoChannel {
    fn on_message(&mut self, msg: &[u8]) -> Vec<Vec<u8>> {
        vec![msg.to_vec()]
    }
}

/// `com.android.ipc-unittest.srv.datasink` as a Trusty channel.
#[derive(Debug, Default)]
pub struct DatasinkChannel {
    /// Messages received (for logs and tests).
    pub received: u64,
}

impl Channel for DatasinkChannel {
    fn on_message(&mut self, _msg: &[u8]) -> Vec<Vec<u8>> {
        self.received += 1;
        Vec::new()
    }
}

/// Echo's GP session.
#[derive(Debug, Default)]
pub struct EchoGp;

fn ta_result(ret: u32, params: [ParamOut; NUM_PARAMS]) -> InvokeResult {
    InvokeResult {
        ret,
        origin: origin::TRUSTED_APP,
        params,
    }
}

fn empty_outs(params: &[Param; NUM_PARAMS]) -> [ParamOut; NUM_PARAMS] {
    [
        params[0].empty_out(),
        params[1].empty_out(),
        params[2].empty_out(),
        params[3].empty_out(),
    ]
}

/// `CMD_ECHO`: inout parameters come back unchanged, outputs get the
/// nearest input of their kind before them.
fn echo(params: &[Param; NUM_PARAMS]) -> InvokeResult {
    let mut outs = empty_outs(params);
    let mut last_value: Option<Value> = None;
    let mut last_bytes: Option<&[u8]> = None;
    let mut short = false;
    for (i, p) in params.iter().enumerate() {
        match p {
            Param::None => {}
            Param::ValueInput(v) => last_value = Some(*v),
            Param::ValueInout(v) => outs[i] = ParamOut::ValueInout(*v),
            Param::ValueOutput => match last_value {
                Some(v) => outs[i] = ParamOut::ValueOutput(v),
                None => return ta_result(result::BAD_PARAMETERS, empty_outs(params)),
            },
            Param::MemrefInput(d) => last_bytes = Some(d),
            Param::MemrefInout(d) => {
                outs[i] = ParamOut::MemrefInout {
                    size: d.len() as u32,
                    data: d.clone(),
                }
            }
            Param::MemrefOutput { capacity } => match last_bytes {
                Some(d) if d.len() <= *capacity as usize => {
                    outs[i] = ParamOut::MemrefOutput {
                        size: d.len() as u32,
                        data: d.to_vec(),
                    }
                }
                Some(d) => {
                    short = true;
                    outs[i] = ParamOut::MemrefOutput {
                        size: d.len() as u32,
                        data: Vec::new(),
                    }
                }
                None => return ta_result(result::BAD_PARAMETERS, empty_outs(params)),
            },
        }
    }
    if short {
        // Sizes say what is needed; no data goes back with an error.
        for o in &mut outs {
            if let ParamOut::MemrefOutput { data, .. } | ParamOut::MemrefInout { data, .. } = o {
                data.clear();
            }
        }
        return ta_result(result::SHORT_BUFFER, outs);
    }
    ta_result(result::SUCCESS, outs)
}

impl GpSession for EchoGp {
    fn invoke(
        &mut self,
        func: u32,
        params: &[Param; NUM_PARAMS],
        cancel: &CancelFlag,
    ) -> InvokeResult {
        match func {
            CMD_ECHO => echo(params),
            CMD_WAIT => match params {
                [Param::ValueInput(v), Param::None, Param::None, Param::None]
                    if v.a <= MAX_WAIT_MS =>
                {
                    if cancel.wait(Duration::from_millis(v.a)) {
                        ta_result(result::CANCEL, empty_outs(params))
                    } else {
                        ta_result(result::SUCCESS, empty_outs(params))
                    }
                }
                _ => ta_result(result::BAD_PARAMETERS, empty_outs(params)),
            },
            _ => ta_result(result::NOT_SUPPORTED, empty_outs(params)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn channels_echo_and_swallow() {
        assert_eq!(EchoChannel.on_message(b"abc"), vec![b"abc".to_vec()]);
        assert_eq!(EchoChannel.on_message(b""), vec![Vec::<u8>::new()]);
        let mut d = DatasinkChannel::default();
        assert!(d.on_message(b"abc").is_empty());
        assert_eq!(d.received, 1);
    }

    #[test]
    fn gp_echo_returns_values_and_memrefs() {
        let v = Value {
            a: 0xdead,
            b: 0xbeef,
            c: 0,
        };
        let big = vec![0x5a; 1 << 20];
        let params = [
            Param::ValueInput(v),
            Param::ValueOutput,
            Param::MemrefInput(big.clone()),
            Param::MemrefOutput { capacity: 1 << 20 },
        ];
        let r = EchoGp.invoke(CMD_ECHO, &params, &CancelFlag::new());
        assert_eq!(r.ret, result::SUCCESS);
        assert_eq!(r.params[1], ParamOut::ValueOutput(v));
        assert_eq!(
            r.params[3],
            ParamOut::MemrefOutput {
                size: 1 << 20,
                data: big
            }
        );
        let params = [
            Param::ValueInout(v),
            Param::MemrefInout(vec![1]),
            Param::None,
            Param::None,
        ];
        let r = EchoGp.invoke(CMD_ECHO, &params, &CancelFlag::new());
        assert_eq!(r.params[0], ParamOut::ValueInout(v));
        assert_eq!(
            r.params[1],
            ParamOut::MemrefInout {
                size: 1,
                data: vec![1]
            }
        );
    }

    #[test]
    fn gp_echo_short_buffer_and_bad_parameters() {
        let params = [
            Param::MemrefInput(vec![1; 10]),
            Param::MemrefOutput { capacity: 9 },
            Param::None,
            Param::None,
        ];
        let r = EchoGp.invoke(CMD_ECHO, &params, &CancelFlag::new());
        assert_eq!(r.ret, result::SHORT_BUFFER);
        assert_eq!(
            r.params[1],
            ParamOut::MemrefOutput {
                size: 10,
                data: vec![]
            }
        );
        let params = [Param::ValueOutput, Param::None, Param::None, Param::None];
        assert_eq!(
            EchoGp.invoke(CMD_ECHO, &params, &CancelFlag::new()).ret,
            result::BAD_PARAMETERS
        );
        assert_eq!(
            EchoGp
                .invoke(7, &Default::default(), &CancelFlag::new())
                .ret,
            result::NOT_SUPPORTED
        );
    }

    #[test]
    fn gp_wait_ends_on_cancel() {
        let flag = Arc::new(CancelFlag::new());
        let f = flag.clone();
        let t = std::thread::spawn(move || {
            let params = wait_params(20_000);
            let start = Instant::now();
            (EchoGp.invoke(CMD_WAIT, &params, &f), start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        flag.cancel();
        let (r, took) = t.join().unwrap();
        assert_eq!(r.ret, result::CANCEL);
        assert!(took < Duration::from_secs(5));
        let too_long = wait_params(MAX_WAIT_MS + 1);
        assert_eq!(
            EchoGp.invoke(CMD_WAIT, &too_long, &CancelFlag::new()).ret,
            result::BAD_PARAMETERS
        );
        let short = wait_params(1);
        assert_eq!(
            EchoGp.invoke(CMD_WAIT, &short, &CancelFlag::new()).ret,
            result::SUCCESS
        );
    }
}
