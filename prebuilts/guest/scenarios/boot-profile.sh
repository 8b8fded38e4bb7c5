#!/bin/sh
# Boot benchmarks (`cargo xtask bench boot`, x86_64 and arm64): the guest
# booted with `quiet`, so its kernel wrote almost nothing to the console while
# it booted; now print the whole kernel log, every line with the guest's own
# timestamp, for the benchmark's boot profile (tests/bootbench/src/profile.rs),
# then power off like the poweroff scenario (after the console drained).
dmesg
stty "$(stty -g)" 2>/dev/null
poweroff -f
