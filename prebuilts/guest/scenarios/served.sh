#!/bin/sh
# The well-behaved neighbour of a hostile guest (testhost scenario
# hostile-guest): a vsock echo server on port 7000 the host probes while
# the other guest floods; it stays up until it is stopped.
. /lib/vmstack.sh
vsock-test listen-vsock 7000 echo --count 1000 --tag served > /dev/null 2>&1 &
mark served up
while true; do sleep 60; done
