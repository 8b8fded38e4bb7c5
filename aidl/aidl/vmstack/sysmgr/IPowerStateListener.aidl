/*
 * Callbacks from the system manager (the "vehicle" side of the VHAL power handshake).
 */
package vmstack.sysmgr;

import vmstack.sysmgr.SystemState;

oneway interface IPowerStateListener {
    /**
     * AP_POWER_STATE_REQ (0x11410A00) for the caller's guest changed:
     * value ISystemManager.REQ_*, param e.g. ISystemManager.SHUTDOWN_PARAM_*.
     * Sent once on registration with the current value, if there is one.
     */
    void onApPowerStateReq(int value, int param);

    /** The real system's state changed (SYSTEM_*). */
    void onSystemStateChanged(in SystemState state);
}
