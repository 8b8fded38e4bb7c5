//! The decisions already taken for the requests of each guest's current
//! VMM process (kept with the log's snapshot).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use system_manager::{Decision, Input, LogRecord, Output};

/// Most decisions remembered per guest (the newest request ids): a VMM
/// re-publishes only its pending requests, a handful at most, so this
/// bounds the snapshot against a guest that keeps asking.
pub const MAX_DECIDED_PER_GUEST: usize = 64;

/// Decisions already taken for requests of each guest's current VMM
/// process. A VMM re-publishes its pending requests when an arbiter
/// attaches; one the log already decided (the daemon died before sending
/// the answer) gets the logged decision again instead of a second input.
/// Request ids restart at 1 in a new VMM process, so a guest's set is
/// cleared when its VMM goes away (`VmExited`, `VmLost`) or is started
/// (`StartVm`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decided(BTreeMap<String, BTreeMap<u64, Decision>>);

impl Decided {
    /// Takes records into account, in order.
    pub fn note_all(&mut self, records: &[LogRecord]) {
        for r in records {
            self.note(&r.input, &r.outputs);
        }
    }

    /// Takes one record into account.
    pub fn note(&mut self, input: &Input, outputs: &[Output]) {
        if let Input::VmExited { guest, .. } | Input::VmLost { guest } = input {
            self.0.remove(guest);
        }
        for o in outputs {
            match o {
                Output::StartVm { guest, .. } => {
                    self.0.remove(guest);
                }
                Output::Decide {
                    guest,
                    request_id,
                    decision,
                    ..
                } => {
                    let set = self.0.entry(guest.clone()).or_default();
                    set.insert(*request_id, *decision);
                    while set.len() > MAX_DECIDED_PER_GUEST {
                        set.pop_first();
                    }
                }
                _ => {}
            }
        }
    }

    /// The decision already taken for `guest`'s request `id`.
    pub fn get(&self, guest: &str, id: u64) -> Option<Decision> {
        self.0.get(guest).and_then(|m| m.get(&id)).copied()
    }
}

/// In a snapshot: `{"guest": {"id": "allow", ...}, ...}` with the VMM
/// protocol's words.
impl Serialize for Decided {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let words: BTreeMap<&str, BTreeMap<u64, &str>> = self
            .0
            .iter()
            .map(|(g, m)| {
                (
                    g.as_str(),
                    m.iter().map(|(id, d)| (*id, d.word())).collect(),
                )
            })
            .collect();
        words.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Decided {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let words: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (g, m) in words {
            let mut set = BTreeMap::new();
            for (id, w) in m {
                let decision: Decision = w.parse().map_err(serde::de::Error::custom)?;
                set.insert(id, decision);
            }
            out.insert(g, set);
        }
        Ok(Decided(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(id: u64) -> Output {
        Output::Decide {
            guest: "a".into(),
            request_id: id,
            decision: Decision::HoldVirtuallyOff,
            reason: String::new(),
        }
    }

    #[test]
    fn decided_sets_follow_the_vmm_process() {
        let mut d = Decided::default();
        d.note(&Input::Tick, &[decide(1)]);
        assert_eq!(d.get("a", 1), Some(Decision::HoldVirtuallyOff));
        assert_eq!(d.get("a", 2), None);
        d.note(&Input::VmLost { guest: "a".into() }, &[]);
        assert_eq!(d.get("a", 1), None);
        d.note(&Input::Tick, &[decide(1)]);
        d.note(
            &Input::IgnitionOn,
            &[Output::StartVm {
                guest: "a".into(),
                reason: String::new(),
            }],
        );
        assert_eq!(d.get("a", 1), None);
    }

    #[test]
    fn decided_sets_are_bounded_and_round_trip() {
        let mut d = Decided::default();
        for id in 1..=1000 {
            d.note(&Input::Tick, &[decide(id)]);
        }
        assert_eq!(d.get("a", 1000), Some(Decision::HoldVirtuallyOff));
        assert_eq!(d.get("a", 1000 - MAX_DECIDED_PER_GUEST as u64), None);
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains("\"1000\":\"hold\""), "{json}");
        assert_eq!(serde_json::from_str::<Decided>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Decided>(r#"{"a":{"1":"maybe"}}"#).is_err());
    }
}
