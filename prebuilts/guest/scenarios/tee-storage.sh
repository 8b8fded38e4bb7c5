#!/bin/sh
# Trusty's secure storage, gatekeeper and hwkey through /dev/tee0 (the
# message TAs of docs/trusty.md), one step per VM run: tee.step= on the
# kernel command line (the test host side, prebuilts/testhost/scenarios/
# tee-storage.sh, runs guest a for a1, a2, a3 and guest b for b1, b1
# while a1 holds an open storage session). tee-test prints key=value
# lines: markers here (mark_kv). With /bin/tee-client (arm64), the same
# flows also go through Debian's stock libteec (tee-test --via libteec).
. /lib/vmstack.sh
step=
for arg in $(cat /proc/cmdline); do
    case "$arg" in tee.step=*) step="${arg#tee.step=}" ;; esac
done
mark tee_step "$step"
teec() { [ -x /bin/tee-client ]; }
t() { timeout 120 tee-test "$@" 2>&1 | mark_kv; }

case "$step" in
a1)
    # Files for the next VM runs: read back (secret), tampered with on
    # the host (3000 bytes: its blob is the one of 3044), rolled back
    # (2000 bytes: 2044).
    t storage-write secret 10000 --seed 17 --tag secret
    t storage-write tamper 3000 --seed 18 --tag tamper
    t storage-write rollback 2000 --seed 19 --tag rollback
    t gatekeeper --uid 10 --tag gk
    t hwkey --tag hwkey
    if teec; then
        t storage-write teec-secret 9000 --seed 21 --via libteec --tag teec_secret
        t gatekeeper --uid 11 --via libteec --tag teec_gk
        t hwkey --via libteec --tag teec_hwkey
    fi
    # An open session with an uncommitted file while guest b runs (b1);
    # the test host says when b is done (vsock port 6000).
    t storage-hold held 500 --seed 20 --tag hold --then \
        "vsock-test connect-vsock 2 5999 send 0 --retry 60 --tag ready && vsock-test listen-vsock 6000 recv --tag go"
    ;;
b1)
    # Another guest: a's files are not there under the same names, a's
    # open file handle is not in b's session, sessions b never opened
    # are refused; b's own file of the same name is b's.
    t storage-read secret --tag secret
    t storage-read held --tag held
    t storage-probe 0 --tag probe
    t foreign-session --tag foreign
    t storage-write secret 64 --seed 99 --tag own_secret
    t storage-read secret --tag own_secret_back
    t hwkey --tag hwkey
    ;;
a2)
    # A new VMM process: what a1 stored is there (and not b's file).
    t storage-read secret --tag secret
    t storage-read held --tag held
    t storage-read tamper --tag tamper
    t storage-write rollback 2000 --seed 29 --tag rollback
    t hwkey --tag hwkey
    if teec; then
        t storage-read teec-secret --via libteec --tag teec_secret
        t hwkey --via libteec --tag teec_hwkey
    fi
    ;;
a3)
    # After the test host flipped a byte of "tamper" and put back the old
    # copy of "rollback": both fail with CORRUPTED; "secret" is intact.
    t storage-read tamper --tag tamper
    t storage-read rollback --tag rollback
    t storage-read secret --tag secret
    ;;
*)
    mark tee_step_unknown "$step"
    ;;
esac
mark kernel_warnings "$(dmesg | grep -cE 'WARNING:|BUG:|Oops')"
mark tee_storage_done 1
