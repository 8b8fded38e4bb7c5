//! The arbiter's policy: system deadlines and the guests with their roles,
//! read from TOML and validated once, so the state machine never has to
//! second-guess it.
//!
//! ```toml
//! [system]
//! shutdown_kind = "poweroff"        # or "suspend"
//! shutdown_deadline_ms = 900000     # everything but a needed cluster is off by then
//! garage_mode_max_ms = 900000       # a wake for garage mode lasts at most this long
//! postpone_watchdog_ms = 5000       # time Android gets after SHUTDOWN_PREPARE to answer
//! max_postpone_ms = 5000            # cap of one SHUTDOWN_POSTPONE (VHAL: <= 5000)
//! final_grace_ms = 10000            # after SHUTDOWN_START / SHUTDOWN_IMMEDIATELY
//! wake_hold_ms = 60000              # a wake request keeps the head unit on this long
//! vm_exit_grace_ms = 5000           # wait for a VMM to confirm an exit
//! poweroff_hold_ms = 10000          # the MCU's PowerOff waits this long for the VMMs to end
//!
//! [[guest]]
//! name = "android"
//! role = "android"
//!
//! [[guest]]
//! name = "cluster"
//! role = "cluster"
//! shutdown_deadline_ms = 30000      # stays this long after it stops being needed
//! ```
//!
//! Every error names the line, column and field; see [`PolicyError`].
//!
//! (Over 800 lines: a third of the file is the tests, one per validation
//! rule and error message, kept beside the rules they check.)
//!
//! Past 800 lines only with its unit tests (the code above them is ~650).

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Default [`SystemPolicy::shutdown_deadline_ms`]: 15 minutes, the length of
/// Android's default garage mode.
pub const DEFAULT_SHUTDOWN_DEADLINE_MS: u64 = 15 * 60 * 1000;
/// Default [`SystemPolicy::garage_mode_max_ms`]: 15 minutes.
pub const DEFAULT_GARAGE_MODE_MAX_MS: u64 = 15 * 60 * 1000;
/// Default [`SystemPolicy::postpone_watchdog_ms`]: 5 s.
pub const DEFAULT_POSTPONE_WATCHDOG_MS: u64 = 5000;
/// Default [`SystemPolicy::final_grace_ms`]: 10 s.
pub const DEFAULT_FINAL_GRACE_MS: u64 = 10_000;
/// Default [`SystemPolicy::wake_hold_ms`]: 1 minute.
pub const DEFAULT_WAKE_HOLD_MS: u64 = 60_000;
/// Default [`SystemPolicy::vm_exit_grace_ms`]: 5 s.
pub const DEFAULT_VM_EXIT_GRACE_MS: u64 = 5000;
/// Default [`SystemPolicy::poweroff_hold_ms`]: 10 s.
pub const DEFAULT_POWEROFF_HOLD_MS: u64 = 10_000;
/// Default per-guest [`GuestPolicy::shutdown_deadline_ms`] for cluster and
/// other guests: 30 s.
pub const DEFAULT_GUEST_DEADLINE_MS: u64 = 30_000;

/// A guest's role, which decides how the arbiter treats it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Believes it is the power master: gets the VHAL handshake, and its final
    /// power step is a request the arbiter grants, holds or turns into a
    /// restart. At most one per policy.
    Android,
    /// Safety-critical (instrument cluster): stays up while the vehicle is in
    /// use or the ignition is on, then gets its own deadline.
    Cluster,
    /// Anything else: gets its own deadline in a shutdown, no handshake.
    Other,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Android => "android",
            Role::Cluster => "cluster",
            Role::Other => "other",
        })
    }
}

/// How the real system goes down at the end of a shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownKind {
    /// The MCU removes power (`SystemPowerOff`); guests are cold-booted later.
    Poweroff,
    /// Suspend to RAM (`SystemSuspend`); paused guests resume on wake.
    Suspend,
}

impl fmt::Display for ShutdownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShutdownKind::Poweroff => "poweroff",
            ShutdownKind::Suspend => "suspend",
        })
    }
}

/// System-wide deadlines (the `[system]` table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemPolicy {
    /// How the real system goes down at the end of a shutdown.
    pub shutdown_kind: ShutdownKind,
    /// The global shutdown deadline, from the start of a shutdown: by then the
    /// Android guest is off (its handshake escalated to a hard stop if need
    /// be) and so is every other guest but a cluster that is still needed.
    pub shutdown_deadline_ms: u64,
    /// How long a wake for garage mode (`SYSTEM_ENTER_GARAGE_MODE`) may keep
    /// the system up; it is that shutdown's deadline.
    pub garage_mode_max_ms: u64,
    /// Time Android gets to answer `SHUTDOWN_PREPARE`: the watchdog after it
    /// is sent (or sent again in answer to `WAIT_FOR_VHAL`, `*_EXIT` or
    /// `SHUTDOWN_CANCELLED`) and the postpone a `SHUTDOWN_PREPARE` report
    /// grants (not capped by `max_postpone_ms`), never past `final_grace_ms`
    /// before the deadline. If Android neither postpones nor starts its
    /// shutdown by then, it is escalated.
    pub postpone_watchdog_ms: u64,
    /// The most one `SHUTDOWN_POSTPONE` extends the watchdog (VHAL: at most
    /// 5000 ms); longer asks are clamped.
    pub max_postpone_ms: u64,
    /// Time Android gets after `SHUTDOWN_START` (or after an escalation to
    /// `SHUTDOWN_IMMEDIATELY`) to make its final power request before it is
    /// hard-stopped. Postponing ends this long before the global deadline so
    /// the escalation always has this much time.
    pub final_grace_ms: u64,
    /// How long a wake request (other than garage mode) keeps the head unit
    /// on without ignition.
    pub wake_hold_ms: u64,
    /// How long to wait for a VMM to confirm a VM's exit after an allowed
    /// power-off or a hard stop before treating the VM as off anyway.
    pub vm_exit_grace_ms: u64,
    /// How long the daemon holds the MCU's `PowerOff` (after
    /// `SystemPowerOff`) for the VMM processes to end, so that the power
    /// is not cut under a VM that is still writing its disks. It goes out
    /// as soon as no VMM is attached; after this long the VMMs still
    /// attached are sent `stop` (and killed 5 s later if need be) and it
    /// goes out at once. The arbiter itself does not use it.
    pub poweroff_hold_ms: u64,
}

impl Default for SystemPolicy {
    fn default() -> Self {
        SystemPolicy {
            shutdown_kind: ShutdownKind::Poweroff,
            shutdown_deadline_ms: DEFAULT_SHUTDOWN_DEADLINE_MS,
            garage_mode_max_ms: DEFAULT_GARAGE_MODE_MAX_MS,
            postpone_watchdog_ms: DEFAULT_POSTPONE_WATCHDOG_MS,
            max_postpone_ms: crate::vhal::MAX_POSTPONE_MS,
            final_grace_ms: DEFAULT_FINAL_GRACE_MS,
            wake_hold_ms: DEFAULT_WAKE_HOLD_MS,
            vm_exit_grace_ms: DEFAULT_VM_EXIT_GRACE_MS,
            poweroff_hold_ms: DEFAULT_POWEROFF_HOLD_MS,
        }
    }
}

/// One guest (a `[[guest]]` table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestPolicy {
    /// Unique name; inputs and outputs refer to the guest by it.
    pub name: String,
    /// How the arbiter treats the guest.
    pub role: Role,
    /// For cluster and other guests: how long the guest may keep running in a
    /// shutdown (a cluster: from when it stops being needed; other guests:
    /// from the start of the shutdown, capped by the global deadline). `None`
    /// for the Android guest, which follows the handshake and the global
    /// deadline.
    pub shutdown_deadline_ms: Option<u64>,
    /// Start the VM again if it exits or its VMM is lost while it should be
    /// running. Default true.
    pub restart_on_failure: bool,
    /// Where the daemon finds the guest's VMM and Android side. The arbiter
    /// never looks at it; it lives here so that one file describes a system.
    pub vmm: VmmLink,
}

/// Default [`VmmLink::vhal_port`]: the guest's vsock port of the VHAL
/// power channel.
pub const DEFAULT_VHAL_PORT: u32 = 4100;

/// Default [`VmmLink::binder_port`]: the host vsock port (cid 2) the
/// Android guest's binder daemon connects to for RPC binder.
pub const DEFAULT_BINDER_PORT: u32 = 4200;

/// Which channel carries the Android guest's VHAL power handshake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AndroidChannel {
    /// `ISystemManager` over RPC binder: the guest connects to host cid 2,
    /// port [`VmmLink::binder_port`] (the default).
    #[default]
    Binder,
    /// The text-line fallback: the daemon connects to the guest's
    /// [`VmmLink::vhal_port`] (`docs/system-manager.md`).
    VhalLines,
}

/// How the daemon (`sysmgr`) reaches one guest. Only validated here; the
/// arbiter core does not use it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmmLink {
    /// The VMM's control socket (`vmm run --socket`). `sysmgr run` needs it.
    pub control_socket: Option<String>,
    /// The VMM's hybrid vsock socket (`vmm run --vsock cid=N,socket=PATH`),
    /// over which the VHAL power channel runs. Android guest only.
    pub vsock_socket: Option<String>,
    /// The guest's vsock port of the VHAL power channel.
    pub vhal_port: u32,
    /// The channel of the VHAL handshake (`android_channel = "binder" |
    /// "vhal-lines"`).
    pub android_channel: AndroidChannel,
    /// The host vsock port the guest's binder daemon connects to.
    pub binder_port: u32,
    /// The command line `StartVm` runs (program and arguments). Without it
    /// the VMM is started by someone else and `StartVm` only waits for its
    /// control socket.
    pub launch: Option<Vec<String>>,
    /// The uid and gid the guest's VMM runs as (`vmm_user = "UID:GID"`):
    /// one per guest, so that no VMM can reach another guest's sockets
    /// (`docs/security.md`). The daemon keeps the gid among its groups,
    /// shares the guest's sockets with it and attaches only to a VMM of
    /// that uid.
    pub vmm_user: Option<VmmUser>,
}

/// A guest VMM's own uid and gid (never root's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmmUser {
    /// The VMM's uid.
    pub uid: u32,
    /// The VMM's gid: the group its sockets are shared with.
    pub gid: u32,
}

impl VmmUser {
    /// Parses `UID:GID` (numbers, neither 0).
    pub fn parse(s: &str) -> Result<VmmUser, String> {
        let usage = || format!("{s:?}: expected \"UID:GID\" (numbers, not 0)");
        let (uid, gid) = s.split_once(':').ok_or_else(usage)?;
        let uid: u32 = uid.parse().map_err(|_| usage())?;
        let gid: u32 = gid.parse().map_err(|_| usage())?;
        if uid == 0 || gid == 0 {
            return Err(format!(
                "{s:?}: a VMM running as root (or group 0) is isolated from nothing"
            ));
        }
        Ok(VmmUser { uid, gid })
    }
}

/// A validated policy. Only [`Policy::from_toml_str`] makes one, so every
/// policy the arbiter sees has unique guest names, at most one Android guest
/// and non-zero deadlines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    system: SystemPolicy,
    guests: Vec<GuestPolicy>,
}

/// Where in the policy text an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Location {
    /// The location of byte offset `offset` in `text`.
    pub fn of(text: &str, offset: usize) -> Self {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { line, column }
    }

    fn describe(at: &Option<Location>) -> String {
        match at {
            Some(l) => format!("line {}, column {}", l.line, l.column),
            None => "(whole file)".to_string(),
        }
    }
}

/// A policy that cannot be used. Messages are one line and say where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not valid TOML or does not have the policy's shape
    /// (unknown field, wrong type, ...).
    #[error("policy {}: {message}", Location::describe(.at))]
    Syntax {
        /// Where, if the parser said.
        at: Option<Location>,
        /// The parser's message, on one line.
        message: String,
    },
    /// A well-formed value the policy does not allow.
    #[error("policy {}: {field}: {message}", Location::describe(.at))]
    Invalid {
        /// Where, if the value has a position.
        at: Option<Location>,
        /// The field, e.g. `guest[2].name` (1-based) or `system.max_postpone_ms`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    system: RawSystem,
    #[serde(default)]
    guest: Vec<RawGuest>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystem {
    shutdown_kind: Option<ShutdownKind>,
    shutdown_deadline_ms: Option<Spanned<u64>>,
    garage_mode_max_ms: Option<Spanned<u64>>,
    postpone_watchdog_ms: Option<Spanned<u64>>,
    max_postpone_ms: Option<Spanned<u64>>,
    final_grace_ms: Option<Spanned<u64>>,
    wake_hold_ms: Option<Spanned<u64>>,
    vm_exit_grace_ms: Option<Spanned<u64>>,
    poweroff_hold_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuest {
    name: Spanned<String>,
    role: Spanned<String>,
    shutdown_deadline_ms: Option<Spanned<u64>>,
    restart_on_failure: Option<bool>,
    control_socket: Option<Spanned<String>>,
    vsock_socket: Option<Spanned<String>>,
    vhal_port: Option<Spanned<u32>>,
    android_channel: Option<Spanned<String>>,
    binder_port: Option<Spanned<u32>>,
    launch: Option<Spanned<Vec<String>>>,
    vmm_user: Option<Spanned<String>>,
}

/// Validation context: the text, for turning spans into locations.
struct Checker<'a> {
    text: &'a str,
}

impl Checker<'_> {
    fn invalid(&self, span: Option<Range<usize>>, field: &str, message: String) -> PolicyError {
        PolicyError::Invalid {
            at: span.map(|s| Location::of(self.text, s.start)),
            field: field.to_string(),
            message,
        }
    }

    /// A positive number of milliseconds, or `default` when absent.
    fn millis(
        &self,
        value: &Option<Spanned<u64>>,
        field: &str,
        default: u64,
    ) -> Result<(u64, Option<Range<usize>>), PolicyError> {
        match value {
            None => Ok((default, None)),
            Some(v) if *v.get_ref() == 0 => {
                Err(self.invalid(Some(v.span()), field, "must be greater than 0".to_string()))
            }
            Some(v) => Ok((*v.get_ref(), Some(v.span()))),
        }
    }
}

impl Policy {
    /// Parses and validates a policy. Errors name the line, column and field.
    pub fn from_toml_str(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            at: e.span().map(|s| Location::of(text, s.start)),
            message: one_line(e.message()),
        })?;
        let c = Checker { text };
        let system = Self::system_from(&c, &raw.system)?;
        let guests = Self::guests_from(&c, &raw.guest)?;
        Ok(Policy { system, guests })
    }

    fn system_from(c: &Checker<'_>, raw: &RawSystem) -> Result<SystemPolicy, PolicyError> {
        let (shutdown_deadline_ms, _) = c.millis(
            &raw.shutdown_deadline_ms,
            "system.shutdown_deadline_ms",
            DEFAULT_SHUTDOWN_DEADLINE_MS,
        )?;
        let (garage_mode_max_ms, garage_span) = c.millis(
            &raw.garage_mode_max_ms,
            "system.garage_mode_max_ms",
            DEFAULT_GARAGE_MODE_MAX_MS,
        )?;
        let (postpone_watchdog_ms, _) = c.millis(
            &raw.postpone_watchdog_ms,
            "system.postpone_watchdog_ms",
            DEFAULT_POSTPONE_WATCHDOG_MS,
        )?;
        let (max_postpone_ms, max_postpone_span) = c.millis(
            &raw.max_postpone_ms,
            "system.max_postpone_ms",
            crate::vhal::MAX_POSTPONE_MS,
        )?;
        let (final_grace_ms, grace_span) = c.millis(
            &raw.final_grace_ms,
            "system.final_grace_ms",
            DEFAULT_FINAL_GRACE_MS,
        )?;
        let (wake_hold_ms, _) = c.millis(
            &raw.wake_hold_ms,
            "system.wake_hold_ms",
            DEFAULT_WAKE_HOLD_MS,
        )?;
        let (vm_exit_grace_ms, _) = c.millis(
            &raw.vm_exit_grace_ms,
            "system.vm_exit_grace_ms",
            DEFAULT_VM_EXIT_GRACE_MS,
        )?;
        let (poweroff_hold_ms, _) = c.millis(
            &raw.poweroff_hold_ms,
            "system.poweroff_hold_ms",
            DEFAULT_POWEROFF_HOLD_MS,
        )?;
        if max_postpone_ms > crate::vhal::MAX_POSTPONE_MS {
            return Err(c.invalid(
                max_postpone_span,
                "system.max_postpone_ms",
                format!(
                    "{max_postpone_ms} exceeds the VHAL's {} ms per SHUTDOWN_POSTPONE",
                    crate::vhal::MAX_POSTPONE_MS
                ),
            ));
        }
        if final_grace_ms >= shutdown_deadline_ms {
            return Err(c.invalid(
                grace_span.or_else(|| raw.shutdown_deadline_ms.as_ref().map(Spanned::span)),
                "system.final_grace_ms",
                format!(
                    "{final_grace_ms} ms leaves no time before shutdown_deadline_ms ({shutdown_deadline_ms} ms)"
                ),
            ));
        }
        if final_grace_ms >= garage_mode_max_ms {
            return Err(c.invalid(
                grace_span.or(garage_span),
                "system.final_grace_ms",
                format!(
                    "{final_grace_ms} ms leaves no time before garage_mode_max_ms ({garage_mode_max_ms} ms)"
                ),
            ));
        }
        Ok(SystemPolicy {
            shutdown_kind: raw.shutdown_kind.unwrap_or(ShutdownKind::Poweroff),
            shutdown_deadline_ms,
            garage_mode_max_ms,
            postpone_watchdog_ms,
            max_postpone_ms,
            final_grace_ms,
            wake_hold_ms,
            vm_exit_grace_ms,
            poweroff_hold_ms,
        })
    }

    fn guests_from(c: &Checker<'_>, raw: &[RawGuest]) -> Result<Vec<GuestPolicy>, PolicyError> {
        if raw.is_empty() {
            return Err(c.invalid(
                None,
                "guest",
                "no [[guest]] tables: the arbiter needs at least one guest".to_string(),
            ));
        }
        let mut guests: Vec<GuestPolicy> = Vec::with_capacity(raw.len());
        let mut android_at: Option<(usize, Location)> = None;
        for (idx, g) in raw.iter().enumerate() {
            let n = idx + 1;
            let name = g.name.get_ref().trim();
            if name.is_empty() {
                return Err(c.invalid(
                    Some(g.name.span()),
                    &format!("guest[{n}].name"),
                    "must not be empty".to_string(),
                ));
            }
            if let Some(first) = raw[..idx].iter().find(|o| o.name.get_ref().trim() == name) {
                let first_at = Location::of(c.text, first.name.span().start);
                return Err(c.invalid(
                    Some(g.name.span()),
                    &format!("guest[{n}].name"),
                    format!(
                        "duplicate guest name `{name}` (first defined on line {})",
                        first_at.line
                    ),
                ));
            }
            let role = match g.role.get_ref().as_str() {
                "android" => Role::Android,
                "cluster" => Role::Cluster,
                "other" => Role::Other,
                other => {
                    return Err(c.invalid(
                        Some(g.role.span()),
                        &format!("guest[{n}].role"),
                        format!("unknown role `{other}` (expected android, cluster or other)"),
                    ))
                }
            };
            let field = format!("guest[{n}].shutdown_deadline_ms");
            let (deadline, deadline_span) =
                c.millis(&g.shutdown_deadline_ms, &field, DEFAULT_GUEST_DEADLINE_MS)?;
            let shutdown_deadline_ms = if role == Role::Android {
                if deadline_span.is_some() {
                    return Err(c.invalid(
                        deadline_span,
                        &field,
                        "the android guest follows the VHAL handshake and system.shutdown_deadline_ms; remove this field".to_string(),
                    ));
                }
                if let Some((first_n, first_at)) = android_at {
                    return Err(c.invalid(
                        Some(g.role.span()),
                        &format!("guest[{n}].role"),
                        format!(
                            "more than one android guest (guest[{first_n}] on line {} is already the power master)",
                            first_at.line
                        ),
                    ));
                }
                android_at = Some((n, Location::of(c.text, g.role.span().start)));
                None
            } else {
                Some(deadline)
            };
            let vmm = Self::link_from(c, g, n, role)?;
            Self::check_vmm_user_unique(c, &raw[..idx], &guests, g, n, &vmm)?;
            guests.push(GuestPolicy {
                name: name.to_string(),
                role,
                shutdown_deadline_ms,
                restart_on_failure: g.restart_on_failure.unwrap_or(true),
                vmm,
            });
        }
        Ok(guests)
    }

    /// The daemon's fields of guest `n` (1-based): non-empty paths, a
    /// non-empty launch command, vsock only for the android guest.
    fn link_from(
        c: &Checker<'_>,
        g: &RawGuest,
        n: usize,
        role: Role,
    ) -> Result<VmmLink, PolicyError> {
        let path = |v: &Option<Spanned<String>>, field: &str| match v {
            Some(p) if p.get_ref().trim().is_empty() => Err(c.invalid(
                Some(p.span()),
                &format!("guest[{n}].{field}"),
                "must not be empty".to_string(),
            )),
            Some(p) => Ok(Some(p.get_ref().clone())),
            None => Ok(None),
        };
        let control_socket = path(&g.control_socket, "control_socket")?;
        let vsock_socket = path(&g.vsock_socket, "vsock_socket")?;
        if let (Some(v), true) = (&g.vsock_socket, role != Role::Android) {
            return Err(c.invalid(
                Some(v.span()),
                &format!("guest[{n}].vsock_socket"),
                format!("only the android guest has a VHAL channel (this guest is {role})"),
            ));
        }
        if let (Some(p), None) = (&g.vhal_port, &g.vsock_socket) {
            return Err(c.invalid(
                Some(p.span()),
                &format!("guest[{n}].vhal_port"),
                "needs vsock_socket (the channel runs over the VMM's vsock)".to_string(),
            ));
        }
        let launch = match &g.launch {
            Some(l) if l.get_ref().first().is_none_or(|p| p.trim().is_empty()) => {
                return Err(c.invalid(
                    Some(l.span()),
                    &format!("guest[{n}].launch"),
                    "must name a program (e.g. [\"/bin/vmm\", \"run\", ...])".to_string(),
                ))
            }
            Some(l) => Some(l.get_ref().clone()),
            None => None,
        };
        let android_channel = match &g.android_channel {
            None => AndroidChannel::Binder,
            Some(ch) => match ch.get_ref().as_str() {
                "binder" => AndroidChannel::Binder,
                "vhal-lines" => AndroidChannel::VhalLines,
                other => {
                    return Err(c.invalid(
                        Some(ch.span()),
                        &format!("guest[{n}].android_channel"),
                        format!("unknown channel {other:?} (binder or vhal-lines)"),
                    ))
                }
            },
        };
        for (field, set) in [
            (
                "android_channel",
                g.android_channel.as_ref().map(|c| c.span()),
            ),
            ("binder_port", g.binder_port.as_ref().map(|p| p.span())),
        ] {
            if let (Some(span), None) = (set, &g.vsock_socket) {
                return Err(c.invalid(
                    Some(span),
                    &format!("guest[{n}].{field}"),
                    "needs vsock_socket (the channel runs over the VMM's vsock)".to_string(),
                ));
            }
        }
        let vmm_user = match &g.vmm_user {
            Some(u) => Some(
                VmmUser::parse(u.get_ref())
                    .map_err(|e| c.invalid(Some(u.span()), &format!("guest[{n}].vmm_user"), e))?,
            ),
            None => None,
        };
        Ok(VmmLink {
            vmm_user,
            control_socket,
            vsock_socket,
            android_channel,
            binder_port: g
                .binder_port
                .as_ref()
                .map_or(DEFAULT_BINDER_PORT, |p| *p.get_ref()),
            vhal_port: g
                .vhal_port
                .as_ref()
                .map_or(DEFAULT_VHAL_PORT, |p| *p.get_ref()),
            launch,
        })
    }

    /// Guest `n`'s `vmm_user` shares neither its uid nor its gid with an
    /// earlier guest's (`earlier` raw and validated, in file order).
    fn check_vmm_user_unique(
        c: &Checker<'_>,
        earlier_raw: &[RawGuest],
        earlier: &[GuestPolicy],
        g: &RawGuest,
        n: usize,
        link: &VmmLink,
    ) -> Result<(), PolicyError> {
        let (Some(user), Some(span)) = (link.vmm_user, g.vmm_user.as_ref().map(|u| u.span()))
        else {
            return Ok(());
        };
        for (i, other) in earlier.iter().enumerate() {
            let Some(o) = other.vmm.vmm_user else {
                continue;
            };
            if o.uid == user.uid || o.gid == user.gid {
                let line = earlier_raw[i]
                    .vmm_user
                    .as_ref()
                    .map_or(0, |u| Location::of(c.text, u.span().start).line);
                return Err(c.invalid(
                    Some(span),
                    &format!("guest[{n}].vmm_user"),
                    format!(
                        "guest[{}] (line {line}) already runs as {}:{}: every guest needs its own uid and gid",
                        i + 1,
                        o.uid,
                        o.gid
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The system-wide deadlines.
    pub fn system(&self) -> &SystemPolicy {
        &self.system
    }

    /// The guests, in the order of the policy file (the order the arbiter
    /// emits per-guest commands in).
    pub fn guests(&self) -> &[GuestPolicy] {
        &self.guests
    }

    /// The guest called `name`.
    pub fn guest(&self, name: &str) -> Option<&GuestPolicy> {
        self.guests.iter().find(|g| g.name == name)
    }

    /// Whether any guest has the cluster role.
    pub fn has_cluster(&self) -> bool {
        self.guests.iter().any(|g| g.role == Role::Cluster)
    }
}

/// Collapses a multi-line parser message into one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[system]
shutdown_kind = "suspend"
shutdown_deadline_ms = 60000
final_grace_ms = 8000

[[guest]]
name = "android"
role = "android"

[[guest]]
name = "cluster"
role = "cluster"
shutdown_deadline_ms = 20000

[[guest]]
name = "telematics"
role = "other"
restart_on_failure = false
"#;

    fn err(text: &str) -> String {
        match Policy::from_toml_str(text) {
            Ok(p) => panic!("accepted: {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_the_example_with_defaults() {
        let p = Policy::from_toml_str(EXAMPLE).expect("valid");
        assert_eq!(p.system().shutdown_kind, ShutdownKind::Suspend);
        assert_eq!(p.system().shutdown_deadline_ms, 60_000);
        assert_eq!(p.system().final_grace_ms, 8000);
        assert_eq!(p.system().max_postpone_ms, 5000);
        assert_eq!(p.system().garage_mode_max_ms, DEFAULT_GARAGE_MODE_MAX_MS);
        assert_eq!(p.system().poweroff_hold_ms, DEFAULT_POWEROFF_HOLD_MS);
        let names: Vec<_> = p.guests().iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["android", "cluster", "telematics"]);
        assert_eq!(
            p.guest("android").map(|g| g.shutdown_deadline_ms),
            Some(None)
        );
        assert_eq!(
            p.guest("cluster").map(|g| g.shutdown_deadline_ms),
            Some(Some(20_000))
        );
        assert_eq!(
            p.guest("telematics")
                .map(|g| (g.shutdown_deadline_ms, g.restart_on_failure)),
            Some((Some(DEFAULT_GUEST_DEADLINE_MS), false))
        );
        assert!(p.has_cluster());
    }

    #[test]
    fn the_module_doc_example_is_valid() {
        let doc = include_str!("policy.rs");
        let start = doc.find("//! ```toml").expect("example") + "//! ```toml".len();
        let len = doc[start..].find("//! ```").expect("end");
        let text: String = doc[start..start + len]
            .lines()
            .map(|l| l.trim_start_matches("//!").strip_prefix(' ').unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let p = Policy::from_toml_str(&text).expect("doc example is valid");
        assert_eq!(p.guests().len(), 2);
    }

    #[test]
    fn the_poweroff_hold_is_a_positive_setting() {
        let p = Policy::from_toml_str(
            "[system]\npoweroff_hold_ms = 2500\n[[guest]]\nname = \"a\"\nrole = \"other\"\n",
        )
        .expect("valid");
        assert_eq!(p.system().poweroff_hold_ms, 2500);
        assert_eq!(DEFAULT_POWEROFF_HOLD_MS, 10_000);
        assert_eq!(
            SystemPolicy::default().poweroff_hold_ms,
            DEFAULT_POWEROFF_HOLD_MS
        );
        let e = err("[system]\npoweroff_hold_ms = 0\n[[guest]]\nname = \"a\"\nrole = \"other\"\n");
        assert_eq!(
            e,
            "policy line 2, column 20: system.poweroff_hold_ms: must be greater than 0"
        );
    }

    #[test]
    fn unknown_role_names_line_and_field() {
        let e = err("[[guest]]\nname = \"a\"\nrole = \"master\"\n");
        assert_eq!(
            e,
            "policy line 3, column 8: guest[1].role: unknown role `master` (expected android, cluster or other)"
        );
    }

    #[test]
    fn duplicate_names_point_at_the_second() {
        let e = err(
            "[[guest]]\nname = \"a\"\nrole = \"other\"\n\n[[guest]]\nname = \"a\"\nrole = \"cluster\"\n",
        );
        assert_eq!(
            e,
            "policy line 6, column 8: guest[2].name: duplicate guest name `a` (first defined on line 2)"
        );
    }

    #[test]
    fn zero_deadlines_are_refused() {
        let e =
            err("[system]\nshutdown_deadline_ms = 0\n[[guest]]\nname = \"a\"\nrole = \"other\"\n");
        assert_eq!(
            e,
            "policy line 2, column 24: system.shutdown_deadline_ms: must be greater than 0"
        );
        let e = err("[[guest]]\nname = \"c\"\nrole = \"cluster\"\nshutdown_deadline_ms = 0\n");
        assert!(
            e.starts_with("policy line 4, column 24: guest[1].shutdown_deadline_ms:"),
            "{e}"
        );
    }

    #[test]
    fn one_android_master_only() {
        let e = err(
            "[[guest]]\nname = \"a\"\nrole = \"android\"\n[[guest]]\nname = \"b\"\nrole = \"android\"\n",
        );
        assert!(e.starts_with("policy line 6, column 8: guest[2].role: more than one android guest (guest[1] on line 3"), "{e}");
    }

    #[test]
    fn android_has_no_own_deadline() {
        let e = err("[[guest]]\nname = \"a\"\nrole = \"android\"\nshutdown_deadline_ms = 5\n");
        assert!(
            e.contains("guest[1].shutdown_deadline_ms: the android guest follows"),
            "{e}"
        );
    }

    #[test]
    fn postpone_cap_and_grace_are_checked() {
        let e =
            err("[system]\nmax_postpone_ms = 6000\n[[guest]]\nname = \"a\"\nrole = \"other\"\n");
        assert_eq!(
            e,
            "policy line 2, column 19: system.max_postpone_ms: 6000 exceeds the VHAL's 5000 ms per SHUTDOWN_POSTPONE"
        );
        let e = err("[system]\nshutdown_deadline_ms = 5000\nfinal_grace_ms = 5000\n[[guest]]\nname = \"a\"\nrole = \"other\"\n");
        assert!(
            e.starts_with("policy line 3, column 18: system.final_grace_ms:"),
            "{e}"
        );
    }

    #[test]
    fn shape_errors_carry_the_parsers_position() {
        let cases = [
            (
                "[system]\nshutdown_deadline = 5\n",
                "policy line 2, column 1: unknown field `shutdown_deadline`",
            ),
            (
                "[system]\nwake_hold_ms = \"long\"\n[[guest]]\nname = \"a\"\nrole = \"other\"\n",
                "policy line 2, column 16: ",
            ),
            (
                "[system]\nwake_hold_ms = -1\n",
                "policy line 2, column 16: ",
            ),
            (
                "[system]\nshutdown_kind = \"hibernate\"\n",
                "policy line 2, column 17: unknown variant `hibernate`",
            ),
            (
                "[[guest]]\nname = \"a\"\n",
                "policy line 1, column 1: missing field `role`",
            ),
            ("[[guest]\n", "policy line 1, column "),
        ];
        for (text, prefix) in cases {
            let e = err(text);
            assert!(e.starts_with(prefix), "{text:?}: {e}");
            assert!(!e.contains('\n'), "not one line: {e}");
        }
    }

    #[test]
    fn no_guests_and_empty_names_are_refused() {
        assert_eq!(
            err(""),
            "policy (whole file): guest: no [[guest]] tables: the arbiter needs at least one guest"
        );
        let e = err("[[guest]]\nname = \" \"\nrole = \"other\"\n");
        assert_eq!(
            e,
            "policy line 2, column 8: guest[1].name: must not be empty"
        );
    }

    #[test]
    fn android_channel_and_binder_port() {
        let p = Policy::from_toml_str(
            "[[guest]]\nname = \"a\"\nrole = \"android\"\nvsock_socket = \"/run/a.vsock\"\n",
        )
        .expect("valid");
        assert_eq!(p.guests()[0].vmm.android_channel, AndroidChannel::Binder);
        assert_eq!(p.guests()[0].vmm.binder_port, DEFAULT_BINDER_PORT);
        let p = Policy::from_toml_str(
            "[[guest]]\nname = \"a\"\nrole = \"android\"\nvsock_socket = \"/v\"\nandroid_channel = \"vhal-lines\"\nbinder_port = 7\n",
        )
        .expect("valid");
        assert_eq!(p.guests()[0].vmm.android_channel, AndroidChannel::VhalLines);
        assert_eq!(p.guests()[0].vmm.binder_port, 7);
        for (text, needle) in [
            (
                "vsock_socket = \"/v\"\nandroid_channel = \"tcp\"",
                "binder or vhal-lines",
            ),
            ("binder_port = 5", "needs vsock_socket"),
        ] {
            let e = Policy::from_toml_str(&format!(
                "[[guest]]\nname = \"a\"\nrole = \"android\"\n{text}\n"
            ))
            .expect_err(text);
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn daemon_fields_are_checked_but_optional() {
        let p = Policy::from_toml_str(
            "[[guest]]\nname = \"a\"\nrole = \"android\"\ncontrol_socket = \"/run/a.sock\"\nvsock_socket = \"/run/a.vsock\"\nlaunch = [\"/bin/vmm\", \"run\"]\n[[guest]]\nname = \"c\"\nrole = \"cluster\"\n",
        )
        .expect("valid");
        let a = &p.guests()[0].vmm;
        assert_eq!(a.control_socket.as_deref(), Some("/run/a.sock"));
        assert_eq!(a.vsock_socket.as_deref(), Some("/run/a.vsock"));
        assert_eq!(a.vhal_port, DEFAULT_VHAL_PORT);
        assert_eq!(a.launch.as_deref().map(<[String]>::len), Some(2));
        assert_eq!(
            p.guests()[1].vmm,
            VmmLink {
                vhal_port: DEFAULT_VHAL_PORT,
                binder_port: DEFAULT_BINDER_PORT,
                ..VmmLink::default()
            }
        );

        let e = err("[[guest]]\nname = \"c\"\nrole = \"cluster\"\nvsock_socket = \"/x\"\n");
        assert_eq!(
            e,
            "policy line 4, column 16: guest[1].vsock_socket: only the android guest has a VHAL channel (this guest is cluster)"
        );
        let e = err("[[guest]]\nname = \"a\"\nrole = \"android\"\nvhal_port = 5\n");
        assert!(
            e.starts_with("policy line 4, column 13: guest[1].vhal_port: needs vsock_socket"),
            "{e}"
        );
        let e = err("[[guest]]\nname = \"a\"\nrole = \"other\"\nlaunch = []\n");
        assert!(
            e.starts_with("policy line 4, column 10: guest[1].launch: must name a program"),
            "{e}"
        );
        let e = err("[[guest]]\nname = \"a\"\nrole = \"other\"\ncontrol_socket = \"\"\n");
        assert!(
            e.starts_with("policy line 4, column 18: guest[1].control_socket: must not be empty"),
            "{e}"
        );
    }

    #[test]
    fn each_guest_has_its_own_vmm_user() {
        let guest = |name: &str, user: &str| {
            format!("[[guest]]\nname = \"{name}\"\nrole = \"other\"\nvmm_user = \"{user}\"\n")
        };
        let p = Policy::from_toml_str(&(guest("a", "10001:10001") + &guest("b", "10002:20002")))
            .expect("valid");
        assert_eq!(
            p.guests()[1].vmm.vmm_user,
            Some(VmmUser {
                uid: 10002,
                gid: 20002
            })
        );
        let e = err(&(guest("a", "10001:10001") + &guest("b", "10002:10001")));
        assert_eq!(
            e,
            "policy line 8, column 12: guest[2].vmm_user: guest[1] (line 4) already runs as 10001:10001: every guest needs its own uid and gid"
        );
        let e = err(&(guest("a", "10001:10001") + &guest("b", "10001:10002")));
        assert!(e.contains("guest[2].vmm_user: guest[1]"), "{e}");
        for (bad, needle) in [
            ("10001", "expected \"UID:GID\""),
            ("nobody:nogroup", "expected \"UID:GID\""),
            ("0:10001", "isolated from nothing"),
            ("10001:0", "isolated from nothing"),
        ] {
            let e = err(&guest("a", bad));
            assert!(
                e.starts_with("policy line 4, column 12: guest[1].vmm_user: "),
                "{e}"
            );
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn locations_count_characters() {
        let text = "ä\nbc";
        assert_eq!(Location::of(text, 0), Location { line: 1, column: 1 });
        assert_eq!(Location::of(text, 2), Location { line: 1, column: 2 });
        assert_eq!(Location::of(text, 4), Location { line: 2, column: 2 });
        // Inside a multi-byte character and past the end: clamped, no panic.
        assert_eq!(Location::of(text, 1), Location { line: 1, column: 1 });
        assert_eq!(Location::of(text, 99), Location { line: 2, column: 3 });
    }
}
