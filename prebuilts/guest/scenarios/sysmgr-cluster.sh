#!/bin/sh
# The cluster role under sysmgr: it only has to stay up until the system
# manager stops it.
echo "CLUSTER-UP"
while true; do sleep 60; done
