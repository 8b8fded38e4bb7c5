#!/bin/sh
# `cargo xtask demo`, the android guest under sysmgr: its side of the VHAL
# power handshake through binder (kernel binder -> sysmgr-binderd -> RPC
# binder -> sysmgr), watched with the binder CLI.
. /scenarios/binder-lib.sh
binder_up || exit 1
vmbinder list
vmbinder watch | sed 's/^/android watch| /' &
vhal-binder-test --script postpone:3000,start
