#!/bin/sh
# The demo's TEE act (act_tee_secret in prebuilts/testhost/scenarios/
# demo.sh): tee.demo=store generates a random secret and stores it in
# Trusty's secure storage through /dev/tee0; tee.demo=read (the next VM
# run, a new VMM) reads it back. tee-test's key=value lines are markers.
. /lib/vmstack.sh
what=
for arg in $(cat /proc/cmdline); do
    case "$arg" in tee.demo=*) what="${arg#tee.demo=}" ;; esac
done
mark tee_devices "$(ls /sys/class/tee 2>/dev/null | tr '\n' ' ')"
case "$what" in
store)
    secret=$(head -c 16 /dev/urandom | xxd -p)
    mark secret "$secret"
    timeout 60 tee-test storage-write demo-secret --text "$secret" --tag store 2>&1 | mark_kv
    ;;
read)
    timeout 60 tee-test storage-read demo-secret --tag read 2>&1 | mark_kv
    ;;
*)
    mark tee_demo_unknown "$what"
    ;;
esac
mark tee_secret_done 1
