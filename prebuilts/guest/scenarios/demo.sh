#!/bin/sh
# Show what the guest sees, then power off.
echo "guest: uname: $(uname -a)"
echo "guest: cpus:"
grep 'model name' /proc/cpuinfo
echo "guest: memory:"
free
echo "guest: uptime $(cut -d' ' -f1 /proc/uptime) s"
poweroff -f
