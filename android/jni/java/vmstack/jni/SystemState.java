package vmstack.jni;

/** The parcelable {@code vmstack.sysmgr.SystemState}. */
public final class SystemState {
    public final int state;
    public final String description;
    public final boolean ignitionOn;
    public final boolean vehicleInUse;
    public final long nowMs;
    public final long inputCount;
    public final GuestState[] guests;

    /** Built by the native side. */
    public SystemState(int state, String description, boolean ignitionOn, boolean vehicleInUse,
            long nowMs, long inputCount, GuestState[] guests) {
        this.state = state;
        this.description = description;
        this.ignitionOn = ignitionOn;
        this.vehicleInUse = vehicleInUse;
        this.nowMs = nowMs;
        this.inputCount = inputCount;
        this.guests = guests;
    }

    @Override
    public String toString() {
        return "SystemState{" + state + " " + description + " ignition=" + ignitionOn + "}";
    }
}
