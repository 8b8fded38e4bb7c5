#!/bin/sh
# libtrusty over vsock (guest.scenario=trusty): trusty-test, a client on
# AOSP libtrusty's API shape, reaches trustyd in the test host through
# VSOCK:2:1 (the VMM forwards it to /tmp/trusty.sock_1). The test host
# side is prebuilts/testhost/scenarios/trusty.sh; in the middle the guest
# asks it to restart trustyd (port 5999) and waits for "back" (port 6000).
D=VSOCK:2:1
timeout 60 trusty-test echo $D
timeout 30 trusty-test refused $D com.android.trusty.keymint
timeout 60 trusty-test hwkey $D --tag hwkey_before
timeout 90 trusty-test gatekeeper $D --uid 10 --save /tmp/gk.handle --tag gk
timeout 60 vsock-test connect-vsock 2 5999 send 0 --retry 20 --tag restart_req
timeout 120 vsock-test listen-vsock 6000 recv --tag restart_back
timeout 60 trusty-test gatekeeper-check $D --uid 10 --handle /tmp/gk.handle --tag gk_after_restart
timeout 60 trusty-test hwkey $D --tag hwkey_after
timeout 60 trusty-test echo $D --tag echo_after
echo "guest_trusty_done=1"
