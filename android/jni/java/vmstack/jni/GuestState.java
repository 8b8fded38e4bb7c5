package vmstack.jni;

/** The parcelable {@code vmstack.sysmgr.GuestState}. */
public final class GuestState {
    public final String name;
    public final String role;
    public final int state;
    public final String description;
    public final boolean hasApPowerStateReq;
    public final int apPowerStateReq;
    public final int apPowerStateReqParam;
    public final boolean binderConnected;

    /** Built by the native side. */
    public GuestState(String name, String role, int state, String description,
            boolean hasApPowerStateReq, int apPowerStateReq, int apPowerStateReqParam,
            boolean binderConnected) {
        this.name = name;
        this.role = role;
        this.state = state;
        this.description = description;
        this.hasApPowerStateReq = hasApPowerStateReq;
        this.apPowerStateReq = apPowerStateReq;
        this.apPowerStateReqParam = apPowerStateReqParam;
        this.binderConnected = binderConnected;
    }

    @Override
    public String toString() {
        return "GuestState{" + name + " " + role + " " + state + " " + description + "}";
    }
}
