package vmstack.jni;

/** {@code vmstack.sysmgr.IPowerStateListener}: called on a native binder thread. */
public interface PowerStateListener {
    /** AP_POWER_STATE_REQ: once at registration with the current value, then on every change. */
    void onApPowerStateReq(int value, int param);

    /** Every system state change. */
    void onSystemStateChanged(SystemState state);
}
