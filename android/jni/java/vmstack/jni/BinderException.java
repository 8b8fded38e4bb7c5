package vmstack.jni;

/**
 * A failed binder call: {@code exceptionCode} is binder's (e.g. -8
 * EX_SERVICE_SPECIFIC, -3 EX_ILLEGAL_ARGUMENT; -129 EX_TRANSACTION_FAILED for
 * a transport error such as a lost connection, dead object or timeout, whose
 * status the message names), {@code serviceSpecificError} the service's error
 * (ISystemManager.ERROR_*). Failures outside a binder call (cannot connect,
 * the {@code SystemManager} is closed) have {@code exceptionCode} 0.
 */
public final class BinderException extends Exception {
    private static final long serialVersionUID = 1L;

    /** Binder's exception code. */
    public final int exceptionCode;
    /** The service-specific error when exceptionCode is -8. */
    public final int serviceSpecificError;

    /** A failed call. */
    public BinderException(String message, int exceptionCode, int serviceSpecificError) {
        super(message);
        this.exceptionCode = exceptionCode;
        this.serviceSpecificError = serviceSpecificError;
    }
}
