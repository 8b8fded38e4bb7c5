package vmstack.jni;

import java.lang.ref.Cleaner;
import java.lang.ref.Reference;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * The system manager's {@code vmstack.sysmgr.ISystemManager}, reached over RPC
 * binder (the host tools' unix socket {@code <state-dir>/binder/sysmgr.sock}).
 * Methods mirror the AIDL; errors are {@link BinderException}s. Listener
 * callbacks arrive on a native binder thread attached to the JVM.
 *
 * <p>The native library is {@code libvmstack_jni.so}: loaded from the path in
 * the system property {@code vmstack.jni.library} when set, else with
 * {@code System.loadLibrary("vmstack_jni")}.
 *
 * <p>{@link #close} frees the native session (its RPC connections, callback
 * thread and listener references) and may be called from any thread, a
 * listener callback included. A {@code SystemManager} that becomes
 * unreachable without being closed is closed by a {@link Cleaner}; call
 * {@link #close} (or use try-with-resources) to release it promptly. A
 * registered listener is held by the native session, so one that refers to
 * its {@code SystemManager} keeps it reachable: unregister it or close.
 */
public final class SystemManager implements AutoCloseable {
    static {
        String path = System.getProperty("vmstack.jni.library");
        if (path != null && !path.isEmpty()) {
            System.load(path);
        } else {
            System.loadLibrary("vmstack_jni");
        }
    }

    /** Closes the sessions of unreachable, unclosed instances. */
    private static final Cleaner CLEANER = Cleaner.create();

    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    /** The native session; 0 once closed (written under the write lock). */
    private long handle;
    /** Frees the native session once: run by {@link #close} or the cleaner. */
    private final Cleaner.Cleanable cleanable;

    /**
     * The cleaning action: holds only the handle (never the
     * {@code SystemManager}, which would stay reachable forever).
     */
    private static final class Release implements Runnable {
        private final long handle;

        Release(long handle) {
            this.handle = handle;
        }

        @Override
        public void run() {
            nativeClose(handle);
        }
    }

    private SystemManager(long handle) {
        this.handle = handle;
        this.cleanable = CLEANER.register(this, new Release(handle));
    }

    /** Connects to the RPC binder unix socket at {@code socketPath}. */
    public static SystemManager connect(String socketPath) throws BinderException {
        return new SystemManager(nativeConnect(socketPath));
    }

    private long handle() throws BinderException {
        if (handle == 0) {
            throw new BinderException("SystemManager is closed", 0, 0);
        }
        return handle;
    }

    /** A native call on the session's handle. */
    @FunctionalInterface
    private interface Call<T> {
        T on(long handle) throws BinderException;
    }

    /**
     * Runs {@code call} on the open session's handle under the read lock
     * (so that {@link #close} waits for it).
     */
    private <T> T withHandle(Call<T> call) throws BinderException {
        lock.readLock().lock();
        try {
            return call.on(handle());
        } finally {
            lock.readLock().unlock();
            // The cleaner must not free the handle while a call uses it.
            Reference.reachabilityFence(this);
        }
    }

    /** A native call without a result. */
    @FunctionalInterface
    private interface Action {
        void on(long handle) throws BinderException;
    }

    /** {@link #withHandle} for an {@link Action}. */
    private void run(Action action) throws BinderException {
        withHandle(h -> {
            action.on(h);
            return null;
        });
    }

    /** getSystemState() */
    public SystemState getSystemState() throws BinderException {
        return withHandle(SystemManager::nativeGetSystemState);
    }

    /** getGuestState(name) */
    public GuestState getGuestState(String name) throws BinderException {
        return withHandle(h -> nativeGetGuestState(h, name));
    }

    /** getApPowerStateReq(): the caller's {@code [value, param]}. */
    public int[] getApPowerStateReq() throws BinderException {
        return withHandle(SystemManager::nativeGetApPowerStateReq);
    }

    /** reportApPowerState(value, param) */
    public void reportApPowerState(int value, int param) throws BinderException {
        run(h -> nativeReportApPowerState(h, value, param));
    }

    /** postponeShutdown(ms) */
    public void postponeShutdown(int ms) throws BinderException {
        run(h -> nativePostponeShutdown(h, ms));
    }

    /** requestShutdown(param) */
    public void requestShutdown(int param) throws BinderException {
        run(h -> nativeRequestShutdown(h, param));
    }

    /** registerListener(listener) */
    public void registerListener(PowerStateListener listener) throws BinderException {
        run(h -> nativeRegisterListener(h, listener));
    }

    /** unregisterListener(listener) */
    public void unregisterListener(PowerStateListener listener) throws BinderException {
        run(h -> nativeUnregisterListener(h, listener));
    }

    /** dumpState() */
    public String dumpState() throws BinderException {
        return withHandle(SystemManager::nativeDumpState);
    }

    /**
     * Closes the session (listeners stop); later calls throw. Waits for
     * calls in progress and for a callback being delivered; a callback that
     * calls this object meanwhile gets "SystemManager is closed".
     */
    @Override
    public void close() {
        boolean open;
        lock.writeLock().lock();
        try {
            open = handle != 0;
            handle = 0;
        } finally {
            lock.writeLock().unlock();
        }
        // Freed outside the lock: freeing joins the callback thread, which
        // may be waiting for the read lock in a call from a listener.
        // No call can still hold the handle: they run under the read lock,
        // and the handle was zeroed under the write lock.
        if (open) {
            cleanable.clean();
        }
    }

    private static native long nativeConnect(String socketPath) throws BinderException;
    private static native SystemState nativeGetSystemState(long handle) throws BinderException;
    private static native GuestState nativeGetGuestState(long handle, String name) throws BinderException;
    private static native int[] nativeGetApPowerStateReq(long handle) throws BinderException;
    private static native void nativeReportApPowerState(long handle, int value, int param) throws BinderException;
    private static native void nativePostponeShutdown(long handle, int ms) throws BinderException;
    private static native void nativeRequestShutdown(long handle, int param) throws BinderException;
    private static native void nativeRegisterListener(long handle, PowerStateListener listener) throws BinderException;
    private static native void nativeUnregisterListener(long handle, PowerStateListener listener) throws BinderException;
    private static native String nativeDumpState(long handle) throws BinderException;
    private static native void nativeClose(long handle);
}
