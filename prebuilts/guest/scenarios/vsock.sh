#!/bin/sh
# virtio-vsock through the stock vmw_vsock_virtio_transport driver
# (guest.scenario=vsock); the test host side is prebuilts/testhost/scenarios/vsock.sh.
# Order: guest->host stream, many guest->host connections, a refused guest
# connect; then the guest listens for the host's stream and connections,
# and for the host's "done" (port 6002) before it powers off.
. /lib/vmstack.sh
MIB=$(cmdline_arg vsock.mib "${VSOCK_MIB:-100}")
# vsock-test prints key=value lines: markers here (mark_kv).
ls /dev/vsock >/dev/null 2>&1 && mark guest_dev_vsock yes

timeout 300 vsock-test connect-vsock 2 5000 send "$MIB" --retry 20 --tag g2h_send 2>&1 | mark_kv
timeout 120 vsock-test connect-vsock 2 5001 many 64 256 --retry 20 --tag g2h_many 2>&1 | mark_kv
# Nothing listens on host port 5002: the connect must fail.
timeout 30 vsock-test connect-vsock 2 5002 recv --tag g_refused 2>&1 | mark_kv

timeout 300 vsock-test listen-vsock 6000 recv --tag h2g_recv > /tmp/h2g_recv 2>&1 &
timeout 300 vsock-test listen-vsock 6001 echo --count 64 --tag h2g_many_srv > /tmp/h2g_many_srv 2>&1 &
wait
# Power off only when the host is done with us (its last step, after the
# refused connect, is an empty stream to port 6002): the guest's end of the
# test must not race the host's remaining checks.
timeout 120 vsock-test listen-vsock 6002 recv --tag h_done > /tmp/h_done 2>&1
cat /tmp/h2g_recv /tmp/h2g_many_srv /tmp/h_done | mark_kv
mark guest_vsock_done 1
