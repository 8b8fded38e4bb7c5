//! GP sessions of the message TAs (datasink, storage, gatekeeper, hwkey):
//! command 0 carries one Trusty message in and its response out
//! (`docs/trusty.md`, "How an invoke maps onto each TA").

use super::{CancelFlag, Channel, GpSession, InvokeResult};
use crate::framing::TEE_MAX_MESSAGE;
use crate::tee::proto::{origin, result, Param, ParamOut, Value, NUM_PARAMS};

/// GP command: deliver one message, return its response.
pub const CMD_MESSAGE: u32 = 0;

/// A channel behind a GP session.
pub struct MessageGp {
    channel: Box<dyn Channel>,
}

impl MessageGp {
    /// Wraps `channel` (made with [`TEE_MAX_MESSAGE`] as its limit).
    pub fn new(channel: Box<dyn Channel>) -> Self {
        MessageGp { channel }
    }
}

fn outs(params: &[Param; NUM_PARAMS]) -> [ParamOut; NUM_PARAMS] {
    [
        params[0].empty_out(),
        params[1].empty_out(),
        params[2].empty_out(),
        params[3].empty_out(),
    ]
}

fn done(ret: u32, origin: u32, params: [ParamOut; NUM_PARAMS]) -> InvokeResult {
    InvokeResult {
        ret,
        origin,
        params,
    }
}

impl GpSession for MessageGp {
    fn invoke(
        &mut self,
        func: u32,
        params: &[Param; NUM_PARAMS],
        _cancel: &CancelFlag,
    ) -> InvokeResult {
        if func != CMD_MESSAGE {
            return done(result::NOT_SUPPORTED, origin::TRUSTED_APP, outs(params));
        }
        let request = match &params[0] {
            Param::MemrefInput(d) | Param::MemrefInout(d)
                if !d.is_empty() && d.len() <= TEE_MAX_MESSAGE =>
            {
                d
            }
            _ => return done(result::BAD_PARAMETERS, origin::TRUSTED_APP, outs(params)),
        };
        let capacity = match (&params[1], &params[2], &params[3]) {
            (
                Param::MemrefOutput { .. } | Param::MemrefInout(_),
                Param::ValueOutput | Param::ValueInout(_),
                Param::None,
            ) => params[1].output_capacity().unwrap_or(0),
            _ => return done(result::BAD_PARAMETERS, origin::TRUSTED_APP, outs(params)),
        };
        let mut out = outs(params);
        if capacity < TEE_MAX_MESSAGE {
            // Refused before delivery, so no response is ever lost.
            let need = TEE_MAX_MESSAGE as u32;
            out[1] = match params[1] {
                Param::MemrefInout(_) => ParamOut::MemrefInout {
                    size: need,
                    data: vec![],
                },
                _ => ParamOut::MemrefOutput {
                    size: need,
                    data: vec![],
                },
            };
            return done(result::SHORT_BUFFER, origin::TRUSTED_APP, out);
        }
        let mut responses = self.channel.on_message(request);
        let count = responses.len() as u64;
        // Every TA here answers at most once per message.
        let response = if responses.is_empty() {
            Vec::new()
        } else {
            responses.swap_remove(0)
        };
        let len = response.len() as u32;
        out[1] = match params[1] {
            Param::MemrefInout(_) => ParamOut::MemrefInout {
                size: len,
                data: response,
            },
            _ => ParamOut::MemrefOutput {
                size: len,
                data: response,
            },
        };
        let v = Value {
            a: u64::from(len),
            b: count,
            c: 0,
        };
        out[2] = match params[2] {
            Param::ValueInout(_) => ParamOut::ValueInout(v),
            _ => ParamOut::ValueOutput(v),
        };
        done(result::SUCCESS, origin::TRUSTED_APP, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ta::echo::{DatasinkChannel, EchoChannel};

    fn message_params(req: &[u8], capacity: u32) -> [Param; NUM_PARAMS] {
        [
            Param::MemrefInput(req.to_vec()),
            Param::MemrefOutput { capacity },
            Param::ValueOutput,
            Param::None,
        ]
    }

    #[test]
    fn a_message_and_its_response() {
        let mut s = MessageGp::new(Box::new(EchoChannel));
        let r = s.invoke(
            CMD_MESSAGE,
            &message_params(b"ping", 4096),
            &CancelFlag::new(),
        );
        assert_eq!(r.ret, result::SUCCESS);
        assert_eq!(
            r.params[1],
            ParamOut::MemrefOutput {
                size: 4,
                data: b"ping".to_vec()
            }
        );
        assert_eq!(
            r.params[2],
            ParamOut::ValueOutput(Value { a: 4, b: 1, c: 0 })
        );
        let mut sink = MessageGp::new(Box::new(DatasinkChannel::default()));
        let r = sink.invoke(CMD_MESSAGE, &message_params(b"x", 8192), &CancelFlag::new());
        assert_eq!(
            r.params[2],
            ParamOut::ValueOutput(Value { a: 0, b: 0, c: 0 })
        );
    }

    /// Counts the messages it is given.
    struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Channel for Counting {
        fn on_message(&mut self, _msg: &[u8]) -> Vec<Vec<u8>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            vec![b"reply".to_vec()]
        }
    }

    #[test]
    fn a_small_response_buffer_is_refused_before_delivery() {
        let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut s = MessageGp::new(Box::new(Counting(n.clone())));
        let r = s.invoke(CMD_MESSAGE, &message_params(b"x", 4095), &CancelFlag::new());
        assert_eq!(r.ret, result::SHORT_BUFFER);
        assert_eq!(
            r.params[1],
            ParamOut::MemrefOutput {
                size: 4096,
                data: vec![]
            }
        );
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 0);
        let r = s.invoke(CMD_MESSAGE, &message_params(b"x", 4096), &CancelFlag::new());
        assert_eq!(r.ret, result::SUCCESS);
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn wrong_layouts_and_commands() {
        let mut s = MessageGp::new(Box::new(EchoChannel));
        let c = CancelFlag::new();
        assert_eq!(
            s.invoke(1, &message_params(b"x", 4096), &c).ret,
            result::NOT_SUPPORTED
        );
        assert_eq!(
            s.invoke(0, &message_params(b"", 4096), &c).ret,
            result::BAD_PARAMETERS
        );
        assert_eq!(
            s.invoke(0, &message_params(&[0; 4097], 4096), &c).ret,
            result::BAD_PARAMETERS
        );
        let mut p = message_params(b"x", 4096);
        p[3] = Param::ValueOutput;
        assert_eq!(s.invoke(0, &p, &c).ret, result::BAD_PARAMETERS);
        let mut p = message_params(b"x", 4096);
        p[2] = Param::ValueInput(Value::default());
        assert_eq!(s.invoke(0, &p, &c).ret, result::BAD_PARAMETERS);
    }
}
