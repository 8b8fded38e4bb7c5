//! The VMM's thread classes.
//!
//! Every file, device and socket the VMM uses is opened before the sandbox
//! is entered and kept for the life of the process (an in-process restart
//! builds the new VM from the same descriptors), so no class may open a
//! path: the main thread rebuilds a VM with KVM ioctls, `mmap` and
//! `eventfd2` only.

// libc's request constants are `c_ulong` on glibc and `c_int` on musl: the
// casts are needed on one of them.
#![allow(clippy::unnecessary_cast)]

use super::common::{
    ACCEPT, CONNECT_UNIX, DESCRIPTOR_FLAGS, EPOLL_LOOP, REMOVE_SOCKETS, RUNTIME, SLEEP, STREAM_IO,
    TERMINAL_SIZE,
};
use super::{
    allow, allow_if, eq, main_class, masked, Arch, Class, Confinement, ProcessPolicy, Rule, Threads,
};
use super::{runtime, Cond, LAUNCHER_CLASS, MAIN_CLASS};

/// The real-time signal that kicks a vCPU out of `KVM_RUN` (glibc and musl
/// number it differently).
fn kick_signal() -> u64 {
    libc::SIGRTMIN() as u64
}

/// KVM's ioctl type byte (`KVMIO`), in bits 8-15 of every KVM request.
const KVMIO: u64 = 0xAE;
/// `KVM_RUN` = `_IO(KVMIO, 0x80)`.
pub const KVM_RUN: u64 = 0xAE80;
/// `KVM_GET_ONE_REG` = `_IOW(KVMIO, 0xab, struct kvm_one_reg)` (16 bytes).
pub const KVM_GET_ONE_REG: u64 = 0x4010_AEAB;
/// `KVM_SET_ONE_REG` = `_IOW(KVMIO, 0xac, struct kvm_one_reg)`.
pub const KVM_SET_ONE_REG: u64 = 0x4010_AEAC;
/// `KVM_ARM_VCPU_INIT` = `_IOW(KVMIO, 0xae, struct kvm_vcpu_init)` (32 bytes).
pub const KVM_ARM_VCPU_INIT: u64 = 0x4020_AEAE;
/// `TUNSETOFFLOAD` = `_IOW('T', 208, unsigned int)`.
pub const TUNSETOFFLOAD: u64 = 0x4004_54D0;

/// `UFFDIO_REGISTER` = `_IOWR(0xAA, 0x00, struct uffdio_register)` (32 bytes).
pub const UFFDIO_REGISTER: u64 = 0xC020_AA00;
/// `UFFDIO_UNREGISTER` = `_IOR(0xAA, 0x01, struct uffdio_range)` (16 bytes).
pub const UFFDIO_UNREGISTER: u64 = 0x8010_AA01;
/// `UFFDIO_WAKE` = `_IOR(0xAA, 0x02, struct uffdio_range)`.
pub const UFFDIO_WAKE: u64 = 0x8010_AA02;
/// `UFFDIO_COPY` = `_IOWR(0xAA, 0x03, struct uffdio_copy)` (40 bytes).
pub const UFFDIO_COPY: u64 = 0xC028_AA03;
/// `UFFDIO_MOVE` = `_IOWR(0xAA, 0x05, struct uffdio_move)` (40 bytes).
pub const UFFDIO_MOVE: u64 = 0xC028_AA05;

/// Any KVM ioctl: `request & 0xff00 == KVMIO << 8`.
const ANY_KVM_IOCTL: Cond = masked(1, 0xFF00, KVMIO << 8, "any KVM request (type 0xAE)");

/// The main thread: the event loop (control requests, power decisions,
/// vCPU kicks) and the in-process rebuild of the VM after a restart.
const MAIN: &[Rule] = &[
    allow_if(
        "ioctl",
        &[
            &[ANY_KVM_IOCTL],
            &[eq(1, libc::TIOCGWINSZ as u64, "TIOCGWINSZ")],
            &[eq(1, libc::FIONBIO as u64, "FIONBIO")],
            &[eq(1, UFFDIO_REGISTER, "UFFDIO_REGISTER")],
            &[eq(1, UFFDIO_UNREGISTER, "UFFDIO_UNREGISTER")],
        ],
        "KVM requests on /dev/kvm, the VM and its vCPUs (a restart builds a new VM on the kept /dev/kvm descriptor); terminal size for the console; non-blocking kept sockets; the kernel's chunks registered with the kept userfaultfd (and unregistered if its fill thread cannot start)",
    ),
    allow("eventfd2", "interrupt and queue-notification eventfds of a rebuilt VM"),
    allow_if(
        "fcntl",
        DESCRIPTOR_FLAGS,
        "duplicate a kept descriptor (kernel, disks, tap, sockets) for a rebuilt VM; close-on-exec on new KVM descriptors",
    ),
    allow("read", "load the kernel and initrd from their kept descriptors"),
    allow("pread64", "load the kernel and initrd from their kept descriptors"),
    allow("lseek", "rewind the kept kernel and initrd before loading them again"),
    allow("newfstatat", "the size of a kept file"),
    allow("fstat", "the size of a kept file"),
    allow("statx", "the size of a kept file"),
    allow_if(
        "tkill",
        &[&[runtime(1, kick_signal, "SIGRTMIN (the vCPU kick)")]],
        "musl's pthread_kill: kick a vCPU out of KVM_RUN",
    ),
    allow(
        "sendto",
        "the TEE service's greeting when a VM is built (virtio-tee; std writes sockets with send)",
    ),
    allow(
        "shutdown",
        "close a control subscriber whose event queue is full (it does not read)",
    ),
    allow(
        "timerfd_create",
        "the timer of each rate-limited device (virtio-blk, -net, -rng) of a rebuilt VM",
    ),
    allow("recvfrom", "the TEE service's greeting (virtio-tee)"),
];

/// A vCPU thread: `KVM_RUN`, the exits it handles (MMIO and port I/O into
/// the emulated devices, which includes activating and resetting virtio
/// devices when the guest driver says so).
const VCPU: &[Rule] = &[
    allow_if(
        "ioctl",
        &[
            &[eq(1, KVM_RUN, "KVM_RUN")],
            &[eq(1, TUNSETOFFLOAD, "TUNSETOFFLOAD")],
            &[eq(1, libc::FIONBIO as u64, "FIONBIO")],
        ],
        "run the vCPU; set the tap's offloads and make sockets non-blocking when the guest activates virtio-net or virtio-vsock",
    ),
    allow_if(
        "ioctl",
        &[
            &[eq(1, KVM_ARM_VCPU_INIT, "KVM_ARM_VCPU_INIT")],
            &[eq(1, KVM_GET_ONE_REG, "KVM_GET_ONE_REG")],
            &[eq(1, KVM_SET_ONE_REG, "KVM_SET_ONE_REG")],
        ],
        "reset the vCPU to the guest's resume point after PSCI SYSTEM_SUSPEND",
    )
    .on(Arch::Aarch64),
    allow(
        "eventfd2",
        "the kill event of a device worker started when the guest activates a device",
    ),
    allow("epoll_create1", "the epoll set of a device worker being started"),
    allow("epoll_ctl", "register a device worker's sources before it starts"),
    allow_if(
        "fcntl",
        &[
            &[eq(1, libc::F_DUPFD_CLOEXEC as u64, "F_DUPFD_CLOEXEC")],
            &[eq(1, libc::F_SETFD as u64, "F_SETFD")],
        ],
        "duplicate eventfds and sockets handed to a device worker; close-on-exec flags",
    ),
    allow("writev", "serial and console output"),
    allow(
        "read",
        "the TEE service's greeting when the guest activates virtio-tee",
    ),
    allow(
        "recvfrom",
        "the TEE service's greeting when the guest activates virtio-tee",
    ),
    allow(
        "timerfd_settime",
        "disarm a rate limiter's timer when the guest resets a device",
    ),
];

/// The rules of every device worker: its epoll loop over queue kicks and
/// the kill event, raising the device's interrupt (an eventfd write).
const WORKER: &[Rule] = EPOLL_LOOP;

/// The worker of a rate-limited device (virtio-blk, -net, -rng): its
/// token buckets' timer (created by the main thread).
const RATE_LIMITED: &[Rule] = &[
    allow("timerfd_settime", "arm the timer until the bucket refills"),
    allow("timerfd_gettime", "whether the timer is armed"),
];

/// virtio-tee's worker: frames to and from the TEE service's socket.
const TEE: &[Rule] = &[];

/// The thread that fills a kernel behind the guest (`kernel_fill` in the
/// VMM): it waits for the first page fault, then reads the kernel file
/// into its staging page, moves the page into guest RAM and reads the
/// waiters' fault events from the userfaultfd.
const KERNEL_FILL: &[Rule] = &[
    allow("pread64", "read the kernel's bytes from its kept descriptor"),
    allow_if(
        "setpriority",
        &[&[
            eq(0, libc::PRIO_PROCESS as u64, "PRIO_PROCESS"),
            eq(1, 0, "the calling thread"),
            eq(2, 19, "nice 19"),
        ]],
        "lower the thread's own priority to nice 19",
    ),
    allow("read", "the waiters' page-fault events on the userfaultfd"),
    allow("poll", "wait for the first page fault or the VM's end").on(Arch::X86_64),
    allow("ppoll", "wait for the first page fault or the VM's end (aarch64, musl)"),
    allow_if(
        "ioctl",
        &[
            &[eq(1, UFFDIO_MOVE, "UFFDIO_MOVE")],
            &[eq(1, UFFDIO_COPY, "UFFDIO_COPY")],
            &[eq(1, UFFDIO_WAKE, "UFFDIO_WAKE")],
            &[eq(1, UFFDIO_UNREGISTER, "UFFDIO_UNREGISTER")],
        ],
        "move a filled chunk into guest RAM (copy it if the move fails), wake a waiter, unregister the range when done",
    ),
];

/// The serial port's output writer (a bounded buffer drained to stdout
/// or a file, so that a vCPU never blocks on it).
const SERIAL_OUT: &[Rule] = &[];

/// virtio-rng's worker.
const RNG: &[Rule] = &[allow("getrandom", "entropy for the guest (getrandom(2))")];

/// virtio-blk's worker: I/O on the kept image descriptor only.
const BLOCK: &[Rule] = &[
    allow("preadv", "read sectors into guest buffers"),
    allow("pwritev", "write sectors from guest buffers"),
    allow("pread64", "read sectors (single buffer paths)"),
    allow("pwrite64", "write sectors (single buffer paths)"),
    allow(
        "fdatasync",
        "flush: a write is acknowledged once it reached the file",
    ),
    allow("fsync", "flush (fallback)"),
    allow(
        "fallocate",
        "discard and write-zeroes (punch a hole, zero a range)",
    ),
];

/// virtio-net's worker: frames to and from the kept tap descriptor.
const NET: &[Rule] = &[
    allow("readv", "frames from the tap into guest buffers"),
    allow("writev", "frames from guest buffers to the tap"),
];

/// virtio-vsock's worker: host unix sockets (accepting on the kept
/// listener, connecting to `PATH_<port>`) and forwarded TCP ports
/// (accepting on their kept listeners; the same reads, writes and
/// shutdowns).
const VSOCK: &[Rule] = &[];

/// virtio-console's worker: the unix socket, stdin/stdout or a file.
const CONSOLE: &[Rule] = &[TERMINAL_SIZE];

/// The control socket's accept loop.
const CONTROL: &[Rule] = &[];

/// One control connection.
const CONTROL_CONN: &[Rule] = &[];

/// Host stdin to the serial port.
const SERIAL_STDIN: &[Rule] = &[allow("read", "read the host's stdin")];

/// The VMM's policy.
pub const POLICY: ProcessPolicy = ProcessPolicy {
    process: "vmm",
    confinement: Confinement::PerThread,
    main: MAIN_CLASS,
    classes: &[
        main_class(
            "the event loop and the rebuild of the VM on a restart",
            &[RUNTIME, MAIN, CONNECT_UNIX, REMOVE_SOCKETS],
        ),
        LAUNCHER_CLASS,
        Class {
            name: "vcpu",
            threads: &[Threads::Prefix("vcpu")],
            about: "KVM_RUN and the exits it handles (MMIO/port I/O, device activation)",
            rules: &[RUNTIME, VCPU, CONNECT_UNIX],
        },
        Class {
            name: "device-rng",
            threads: &[Threads::Named("v_rng")],
            about: "the virtio-rng worker",
            rules: &[RUNTIME, WORKER, RATE_LIMITED, RNG],
        },
        Class {
            name: "device-block",
            threads: &[Threads::Named("v_blk")],
            about: "the virtio-blk worker",
            rules: &[RUNTIME, WORKER, RATE_LIMITED, BLOCK],
        },
        Class {
            name: "device-net",
            threads: &[Threads::Named("v_net")],
            about: "the virtio-net worker",
            rules: &[RUNTIME, WORKER, RATE_LIMITED, NET],
        },
        Class {
            name: "device-vsock",
            threads: &[Threads::Named("v_vsock")],
            about: "the virtio-vsock worker and its host sockets",
            rules: &[RUNTIME, WORKER, STREAM_IO, ACCEPT, CONNECT_UNIX, VSOCK],
        },
        Class {
            name: "device-tee",
            threads: &[Threads::Named("v_tee")],
            about: "the virtio-tee worker and its connection to the TEE service",
            rules: &[RUNTIME, WORKER, STREAM_IO, TEE],
        },
        Class {
            name: "kernel-fill",
            threads: &[Threads::Named("kernel-fill")],
            about: "fills a kernel that runs in place into guest RAM behind the guest",
            rules: &[RUNTIME, KERNEL_FILL],
        },
        Class {
            name: "serial-out",
            threads: &[Threads::Named("serial-out")],
            about: "writes the serial port's buffered output",
            rules: &[RUNTIME, SERIAL_OUT],
        },
        Class {
            name: "device-console",
            threads: &[Threads::Named("v_console")],
            about: "the virtio-console worker and its host side",
            rules: &[RUNTIME, WORKER, STREAM_IO, ACCEPT, CONSOLE],
        },
        Class {
            name: "control",
            threads: &[Threads::Named("control")],
            about: "the control socket's accept loop",
            rules: &[RUNTIME, ACCEPT, SLEEP, CONTROL],
        },
        Class {
            name: "control-conn",
            threads: &[Threads::Named("control-conn")],
            about: "one control connection: request lines in, responses out; a subscriber's writer (its queued lines out)",
            rules: &[RUNTIME, STREAM_IO, ACCEPT, CONTROL_CONN],
        },
        Class {
            name: "serial-stdin",
            threads: &[Threads::Named("serial-stdin")],
            about: "host stdin to the serial port",
            rules: &[RUNTIME, SLEEP, SERIAL_STDIN],
        },
        Class {
            name: "power-key",
            threads: &[Threads::Named("power-key")],
            about: "releases the arm64 power key 100 ms after a press",
            rules: &[RUNTIME, SLEEP],
        },
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    /// `_IOC(dir, type, nr, size)` as the kernel encodes it (both
    /// architectures use the generic encoding).
    const fn ioc(dir: u64, ty: u64, nr: u64, size: u64) -> u64 {
        (dir << 30) | (size << 16) | (ty << 8) | nr
    }

    #[test]
    fn ioctl_numbers_match_their_definitions() {
        const WRITE: u64 = 1;
        assert_eq!(KVM_RUN, ioc(0, KVMIO, 0x80, 0));
        assert_eq!(KVM_GET_ONE_REG, ioc(WRITE, KVMIO, 0xab, 16));
        assert_eq!(KVM_SET_ONE_REG, ioc(WRITE, KVMIO, 0xac, 16));
        assert_eq!(KVM_ARM_VCPU_INIT, ioc(WRITE, KVMIO, 0xae, 32));
        assert_eq!(TUNSETOFFLOAD, ioc(WRITE, u64::from(b'T'), 208, 4));
        assert_eq!(TUNSETOFFLOAD, libc::TUNSETOFFLOAD as u64);
        const READ: u64 = 2;
        const UFFDIO: u64 = 0xAA;
        assert_eq!(UFFDIO_REGISTER, ioc(READ | WRITE, UFFDIO, 0x00, 32));
        assert_eq!(UFFDIO_UNREGISTER, ioc(READ, UFFDIO, 0x01, 16));
        assert_eq!(UFFDIO_WAKE, ioc(READ, UFFDIO, 0x02, 16));
        assert_eq!(UFFDIO_COPY, ioc(READ | WRITE, UFFDIO, 0x03, 40));
        assert_eq!(UFFDIO_MOVE, ioc(READ | WRITE, UFFDIO, 0x05, 40));
    }
}
