//! The protocol core of `adbd`, the small adb daemon of vmstack's Linux
//! test guests (docs/adb.md): pure parsers and state machines, no I/O.
//! The daemon (`src/main.rs`) wraps them with AF_VSOCK sockets, processes
//! and files; the fuzz target `adbd` drives them with hostile bytes.
//!
//! - [`packet`]: the 24-byte message header and its checks;
//! - [`session`]: the `CNXN` handshake, streams and flow control;
//! - [`service`]: the service names a client may open;
//! - [`shell_protocol`]: the `shell,v2` framing;
//! - [`sync_protocol`]: the `sync:` requests and answers.

pub mod packet;
pub mod service;
pub mod session;
pub mod shell_protocol;
pub mod sync_protocol;

/// Features this daemon advertises in its banner (only what it implements:
/// the shell protocol, and `SEND` creating missing parent directories).
pub const FEATURES: &[&str] = &["shell_v2", "fixed_push_mkdir"];

/// The `CNXN` banner: the device's identity and [`FEATURES`], as the stock
/// client parses it (`adb devices -l` shows product, model and device).
pub fn banner(product: &str) -> String {
    format!(
        "device::ro.product.name={product};ro.product.model={product}_guest;ro.product.device={product};features={}",
        FEATURES.join(",")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn banner_names_the_features() {
        assert_eq!(
            super::banner("vmstack"),
            "device::ro.product.name=vmstack;ro.product.model=vmstack_guest;\
             ro.product.device=vmstack;features=shell_v2,fixed_push_mkdir"
        );
    }
}
