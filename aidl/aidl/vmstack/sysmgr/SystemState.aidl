/*
 * The real system's power state and every guest's (ISystemManager.getSystemState).
 */
package vmstack.sysmgr;

import vmstack.sysmgr.GuestState;

parcelable SystemState {
    /** ISystemManager.SYSTEM_* */
    int state;
    /** The state in words, as `sysmgr status` prints it. */
    String description;
    /** The ignition as the MCU last reported it. */
    boolean ignitionOn;
    /** Whether the vehicle is in use (the cluster must stay up). */
    boolean vehicleInUse;
    /** The arbiter's clock, in milliseconds since the daemon's origin. */
    long nowMs;
    /** How many inputs the decision log holds. */
    long inputCount;
    /** Every guest of the policy. */
    GuestState[] guests;
}
