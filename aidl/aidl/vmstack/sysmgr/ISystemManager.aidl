/*
 * The system manager (power arbiter) as Android sees it: the vehicle side of the
 * VHAL power handshake (AP_POWER_STATE_REQ / AP_POWER_STATE_REPORT) and the
 * system's state. A guest's identity is the connection it calls on, never an
 * argument. Version 1. Transaction codes follow declaration order: add new
 * methods at the end only (see aidl/api/).
 */
package vmstack.sysmgr;

import vmstack.sysmgr.GuestState;
import vmstack.sysmgr.IPowerStateListener;
import vmstack.sysmgr.SystemState;

interface ISystemManager {
    /** VHAL property id of AP_POWER_STATE_REQ (vehicle to Android). */
    const int AP_POWER_STATE_REQ = 0x11410A00;
    /** VHAL property id of AP_POWER_STATE_REPORT (Android to vehicle). */
    const int AP_POWER_STATE_REPORT = 0x11410A01;
    /** VHAL property id of SHUTDOWN_REQUEST (Android asks the vehicle to shut it down). */
    const int SHUTDOWN_REQUEST = 0x11410A05;

    /* AP_POWER_STATE_REQ values (VehicleApPowerStateReq). */
    const int REQ_ON = 0;
    const int REQ_SHUTDOWN_PREPARE = 1;
    const int REQ_CANCEL_SHUTDOWN = 2;
    const int REQ_FINISHED = 3;

    /* SHUTDOWN_PREPARE and SHUTDOWN_REQUEST parameters (VehicleApPowerStateShutdownParam). */
    const int SHUTDOWN_PARAM_SHUTDOWN_IMMEDIATELY = 1;
    const int SHUTDOWN_PARAM_CAN_SLEEP = 2;
    const int SHUTDOWN_PARAM_SHUTDOWN_ONLY = 3;
    const int SHUTDOWN_PARAM_SLEEP_IMMEDIATELY = 4;
    const int SHUTDOWN_PARAM_HIBERNATE_IMMEDIATELY = 5;
    const int SHUTDOWN_PARAM_CAN_HIBERNATE = 6;
    const int SHUTDOWN_PARAM_EMERGENCY_SHUTDOWN = 7;

    /* AP_POWER_STATE_REPORT values (VehicleApPowerStateReport). */
    const int REPORT_WAIT_FOR_VHAL = 1;
    const int REPORT_DEEP_SLEEP_ENTRY = 2;
    const int REPORT_DEEP_SLEEP_EXIT = 3;
    const int REPORT_SHUTDOWN_POSTPONE = 4;
    const int REPORT_SHUTDOWN_START = 5;
    const int REPORT_ON = 6;
    const int REPORT_SHUTDOWN_PREPARE = 7;
    const int REPORT_SHUTDOWN_CANCELLED = 8;
    const int REPORT_HIBERNATION_ENTRY = 9;
    const int REPORT_HIBERNATION_EXIT = 10;

    /** Longest postponement one SHUTDOWN_POSTPONE may ask for, in milliseconds. */
    const int MAX_POSTPONE_MS = 5000;

    /* SystemState.state values. */
    const int SYSTEM_OFF = 0;
    const int SYSTEM_ON = 1;
    const int SYSTEM_SHUTDOWN_PREPARE = 2;
    const int SYSTEM_GARAGE_MODE = 3;
    const int SYSTEM_SUSPENDED = 4;
    const int SYSTEM_POWERING_OFF = 5;

    /* GuestState.state values. */
    const int GUEST_OFF = 0;
    const int GUEST_STARTING = 1;
    const int GUEST_RUNNING = 2;
    const int GUEST_PREPARING = 3;
    const int GUEST_SHUTDOWN_STARTED = 4;
    const int GUEST_VIRTUALLY_OFF = 5;
    const int GUEST_STOPPING = 6;
    const int GUEST_RESTARTING = 7;

    /* Service-specific error codes (ServiceSpecificException / EX_SERVICE_SPECIFIC). */
    /** The arbiter rejected the input (the message says why). */
    const int ERROR_REJECTED = 1;
    /** The call needs a guest's connection; this one is the host's. */
    const int ERROR_NOT_A_GUEST = 2;
    /** The daemon is shutting down or not reachable. */
    const int ERROR_UNAVAILABLE = 3;
    /** Too many listeners on this connection. */
    const int ERROR_TOO_MANY_LISTENERS = 4;

    /** The real system and every guest; a query, not an input (nothing is logged). */
    SystemState getSystemState();

    /** One guest by name; EX_ILLEGAL_ARGUMENT for an unknown name. */
    GuestState getGuestState(String name);

    /**
     * The caller's current AP_POWER_STATE_REQ as [value, param], or an empty
     * array before the arbiter set one. ERROR_NOT_A_GUEST on the host's socket.
     */
    int[] getApPowerStateReq();

    /**
     * AP_POWER_STATE_REPORT [value, param] from the caller's guest: an arbiter
     * input, logged. ERROR_REJECTED (with the arbiter's reason) when it is refused.
     */
    void reportApPowerState(int value, int param);

    /** Same as reportApPowerState(REPORT_SHUTDOWN_POSTPONE, ms). */
    void postponeShutdown(int ms);

    /**
     * SHUTDOWN_REQUEST: the caller's guest asks the vehicle to shut it down
     * (param SHUTDOWN_PARAM_*). The arbiter decides; the answer comes as
     * AP_POWER_STATE_REQ on the listeners.
     */
    void requestShutdown(int param);

    /**
     * Registers a listener for the caller's guest; it gets the current
     * AP_POWER_STATE_REQ at once (if set), then every change.
     */
    void registerListener(IPowerStateListener listener);

    /** Removes a listener; unknown listeners are ignored. */
    void unregisterListener(IPowerStateListener listener);

    /** The arbiter's state as `sysmgr status` prints it. */
    String dumpState();
}
