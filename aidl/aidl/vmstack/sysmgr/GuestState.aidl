/*
 * One guest as the arbiter sees it (ISystemManager.getSystemState).
 */
package vmstack.sysmgr;

parcelable GuestState {
    /** The guest's name in the policy (e.g. "android"). */
    String name;
    /** Its role: "android", "cluster" or "other". */
    String role;
    /** ISystemManager.GUEST_* */
    int state;
    /** The state in words, as `sysmgr status` prints it. */
    String description;
    /** Whether the arbiter has set AP_POWER_STATE_REQ for it. */
    boolean hasApPowerStateReq;
    /** AP_POWER_STATE_REQ value (ISystemManager.REQ_*), when set. */
    int apPowerStateReq;
    /** AP_POWER_STATE_REQ parameter, when set. */
    int apPowerStateReqParam;
    /** Whether the guest's binder channel is connected. */
    boolean binderConnected;
}
