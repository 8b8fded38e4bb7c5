#!/bin/sh
# virtio-console on a unix socket (guest: console-in, console=hvc0). A client
# (`vmm console`) connects before the guest boots; once the guest's
# "hvc0-ready" reached it, one line goes to the guest's /dev/hvc0. The
# client's output (hvc0) is shown afterwards through `guest_lines
# hvc0-client` (kernel log lines only counted).
. /lib/vmstack.sh
sock=/tmp/hvc0.sock
out=/tmp/hvc0-client.out
in=/tmp/hvc0-client.in
rm -f "$sock" "$out" "$in"
mkfifo "$in"
VMM_TIMEOUT=100 run_vmm vmm --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
    --console "type=unix,path=$sock" \
    --params "console=hvc0 guest.scenario=console-in" /guest/vmlinuz &
vmm=$!
wait_path -S "$sock" || echo "console-unix: $sock never appeared"
timeout -s KILL 100 /bin/vmm console "$sock" < "$in" > "$out" 2>&1 &
client=$!
exec 3> "$in"
i=0
while ! grep -q hvc0-ready "$out" && [ "$i" -lt 900 ]; do
    usleep 100000
    i=$((i + 1))
done
echo VMSTACK-HOST-TO-GUEST-4711 >&3
exec 3>&-
wait "$vmm"
rc=$?
wait "$client"
mark client_rc "$?"
mark hvc0_client_kernel_lines "$(grep -c '^\[' "$out")"
tr -d '\r' < "$out" | grep -v '^\[' | guest_lines hvc0-client
[ -e "$sock" ] && mark socket_left_behind "$sock"
exit $rc
