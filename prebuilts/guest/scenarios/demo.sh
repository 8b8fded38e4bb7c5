#!/bin/sh
# Show what the guest sees, then power off.
echo "guest: uname: $(uname -a)"
echo "guest: cpus:"
grep 'model name' /proc/cpuinfo
echo "guest: memory:"
free
echo "guest: uptime $(cut -d' ' -f1 /proc/uptime) s"
# Let the console finish writing what was printed before (re-applying the
# tty settings waits for queued output: TCSADRAIN); `-f` skips that.
stty "$(stty -g)" 2>/dev/null
poweroff -f
