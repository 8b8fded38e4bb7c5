#!/bin/sh
# The cluster role under sysmgr: it only has to stay up until the system
# manager stops it.
. /lib/vmstack.sh
mark cluster up
while true; do sleep 60; done
