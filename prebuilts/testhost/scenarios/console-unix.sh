#!/bin/sh
# virtio-console on a unix socket (guest: console-in, console=hvc0). A client
# (`vmm console`) connects before the guest boots; once the guest's
# "hvc0-ready" reached it, one line goes to the guest's /dev/hvc0. The
# client's output (hvc0) is printed afterwards with a "hvc0-client: " prefix
# (kernel log lines only counted).
sock=/tmp/hvc0.sock
out=/tmp/hvc0-client.out
in=/tmp/hvc0-client.in
rm -f "$sock" "$out" "$in"
mkfifo "$in"
timeout -s KILL 100 /bin/vmm run --cpus 1 --mem 256 --initrd /guest/initramfs.cpio.gz \
    --console "type=unix,path=$sock" \
    --params "console=hvc0 guest.scenario=console-in" /guest/vmlinuz 2>&1 &
vmm=$!
i=0
while [ ! -S "$sock" ] && [ "$i" -lt 100 ]; do
    usleep 100000
    i=$((i + 1))
done
[ -S "$sock" ] || echo "console-unix: $sock never appeared"
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
echo "client_rc=$?"
echo "hvc0_client_kernel_lines=$(grep -c '^\[' "$out")"
tr -d '\r' < "$out" | grep -v '^\[' | sed 's/^/hvc0-client: /'
[ -e "$sock" ] && echo "console-unix: $sock left behind"
exit $rc
