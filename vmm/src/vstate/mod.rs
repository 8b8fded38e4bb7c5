//! Thin wrappers over KVM: opening and checking `/dev/kvm`, the VM with its
//! memory and interrupt controller, and vCPU threads.

pub mod kvm;
pub mod vcpu;
pub mod vm;
