//! Architecture-specific parts of building a VM. Each architecture is a module
//! with the same shape (`layout`, boot loading, vCPU setup); arm64 will be a
//! sibling of `x86_64`, not a fork.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;
