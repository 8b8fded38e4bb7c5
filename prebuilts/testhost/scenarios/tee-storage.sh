#!/bin/sh
# trustyd with two guests, a and b, each with its own TEE socket; our VMM
# with --tee for each VM run (guest side: prebuilts/guest/scenarios/
# tee-storage.sh, step tee.step=):
#   a1 stores files, runs gatekeeper and hwkey, then holds an open storage
#      session while
#   b1 (a second VMM at the same time) probes a's files and session;
#   a2 (a new VMM process) reads a1's files back, writes "rollback" again;
#   the test host flips a byte of "tamper" and puts back the old copy of
#   "rollback" in a's state directory;
#   a3 reads both: integrity errors.
# Host-side results go to files, printed as markers at the end.
. /lib/vmstack.sh
D=/tmp/tee-storage-state
H=/tmp/tee-storage-host
TA=/tmp/tee-a.sock
TB=/tmp/tee-b.sock
VA=/tmp/tee-a-vsock.sock
mkdir -p $H
trustyd run --state-dir $D --guest a=,tee=$TA --guest b=,tee=$TB > $H/trustyd.log 2>&1 &
t=$!
wait_trustyd $TA $TB

# vm TAG STEP SOCKET [VMM ARGS...]: one VM run of guest.scenario=tee-storage.
vm() {
    _tag=$1 _step=$2 _sock=$3
    shift 3
    run_vmm "$_tag" --cpus 1 --mem 192 --tee socket="$_sock" "$@" \
        --initrd /guest/initramfs.cpio.gz \
        --params "console=ttyS0 guest.scenario=tee-storage tee.step=$_step" /guest/vmlinuz
}

# blob_of_size DIR BYTES: the storage blobs of that size in DIR (a blob is
# the file's bytes + 44: magic, nonce, tag).
blob_of_size() {
    for _f in "$1"/*.blob; do
        [ -f "$_f" ] && [ "$(stat -c %s "$_f")" = "$2" ] && echo "$_f"
    done
}

vm a1 a1 $TA --vsock cid=3,socket=$VA &
a1=$!
as_vmm_user timeout 240 vsock-test listen-unix ${VA}_5999 recv --tag a1_ready_host > $H/1-ready 2>&1
vm b1 b1 $TB
timeout 120 vsock-test connect-unix $VA 6000 send 0 --retry 60 --tag a1_go_host > $H/2-go 2>&1
wait $a1
TD=$D/guests/a/td
cp -a $TD $H/td-after-a1

vm a2 a2 $TA

# Tamper: one bit of the 3000-byte file's blob.
f=$(blob_of_size $TD 3044)
echo "tamper_blobs=$(echo "$f" | grep -c blob)" > $H/3-tamper
if [ -f "$f" ]; then
    before=$(sha256sum "$f" | cut -d' ' -f1)
    b=$(dd if="$f" bs=1 skip=1500 count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
    printf "\\$(printf %o $((b ^ 1)))" | dd of="$f" bs=1 seek=1500 count=1 conv=notrunc 2>/dev/null
    [ "$(sha256sum "$f" | cut -d' ' -f1)" != "$before" ] && echo "tamper_changed=1" >> $H/3-tamper
fi
# Rollback: the 2000-byte file's blob as a1 left it, over a2's version.
old=$(blob_of_size $H/td-after-a1 2044)
new=$(blob_of_size $TD 2044)
{
    echo "rollback_old_blobs=$(echo "$old" | grep -c blob)"
    echo "rollback_new_blobs=$(echo "$new" | grep -c blob)"
    echo "rollback_old=$(basename "$old")"
    echo "rollback_new=$(basename "$new")"
} > $H/4-rollback
[ -f "$old" ] && [ -f "$new" ] && cp "$old" "$new" && echo "rollback_put_back=1" >> $H/4-rollback

vm a3 a3 $TA

kill $t
wait $t
mark trustyd_rc $?
for f in $H/[0-9]-*; do
    mark_kv < "$f"
done
sed 's/^/trustyd: /' $H/trustyd.log | tail -30
exit 0
