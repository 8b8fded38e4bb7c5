import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import vmstack.jni.BinderException;
import vmstack.jni.GuestState;
import vmstack.jni.PowerStateListener;
import vmstack.jni.SystemManager;
import vmstack.jni.SystemState;

/**
 * Drives vmstack.jni.SystemManager against a live sysmgr; prints one line
 * per observation for the Rust test (system-manager/sysmgr/tests/jni.rs) to
 * assert. Arguments: the host tools' socket, the android guest's endpoint.
 * After "READY" the test turns the ignition on and starts the fake VMMs.
 */
public final class SystemManagerSmoke {
    static final class Recorder implements PowerStateListener {
        final BlockingQueue<String> events = new LinkedBlockingQueue<>();

        @Override
        public void onApPowerStateReq(int value, int param) {
            events.add("req " + value + " " + param + " " + where());
        }

        @Override
        public void onSystemStateChanged(SystemState s) {
            events.add("system " + s.state + " " + s.description + " ignition=" + s.ignitionOn
                    + " guests=" + s.guests.length + " " + where());
        }

        static String where() {
            Thread t = Thread.currentThread();
            return "daemon=" + t.isDaemon() + " main=" + (t.getName().equals("main"));
        }

        String await(String prefix) throws InterruptedException {
            long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (System.nanoTime() < end) {
                String e = events.poll(1, TimeUnit.SECONDS);
                if (e != null && e.startsWith(prefix)) {
                    return e;
                }
            }
            throw new AssertionError("no callback starting with " + prefix);
        }
    }

    static void out(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static String names(GuestState[] guests) {
        StringBuilder b = new StringBuilder();
        for (GuestState g : guests) {
            b.append(b.length() == 0 ? "" : ",").append(g.name).append(':').append(g.role);
        }
        return b.toString();
    }

    /**
     * close() while a listener callback calls back into the same
     * SystemManager must return (it used to deadlock: close held the write
     * lock while joining the callback thread, which waited for the read
     * lock). Prints nothing; fails by throwing.
     */
    static void closeDuringCallback(String socket) throws Exception {
        SystemManager sm = SystemManager.connect(socket);
        CountDownLatch inCallback = new CountDownLatch(1);
        CountDownLatch calledIn = new CountDownLatch(1);
        AtomicReference<String> outcome = new AtomicReference<>("none");
        sm.registerListener(new PowerStateListener() {
            @Override
            public void onApPowerStateReq(int value, int param) {}

            @Override
            public void onSystemStateChanged(SystemState s) {
                if (inCallback.getCount() == 0) {
                    return;
                }
                inCallback.countDown();
                // Call in until close() took the handle (no fixed sleep:
                // the closer may start late on a loaded machine).
                long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
                try {
                    while (System.nanoTime() < until) {
                        sm.getSystemState();
                        Thread.sleep(20);
                    }
                    outcome.set("no exception");
                } catch (BinderException e) {
                    outcome.set(e.getMessage());
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                calledIn.countDown();
            }
        });
        if (!inCallback.await(30, TimeUnit.SECONDS)) {
            throw new AssertionError("no registration callback");
        }
        Thread closer = new Thread(sm::close, "closer");
        closer.setDaemon(true);
        closer.start();
        closer.join(TimeUnit.SECONDS.toMillis(20));
        if (closer.isAlive()) {
            throw new AssertionError("close() deadlocked against a callback calling in");
        }
        if (!calledIn.await(20, TimeUnit.SECONDS)) {
            throw new AssertionError("the callback's call did not return");
        }
        if (!"SystemManager is closed".equals(outcome.get())) {
            throw new AssertionError("the callback's call during close: " + outcome.get());
        }
    }

    public static void main(String[] args) throws Exception {
        SystemManager host = SystemManager.connect(args[0]);
        SystemState s = host.getSystemState();
        out("state " + s.state + " " + s.description + " ignition=" + s.ignitionOn
                + " guests=" + names(s.guests));
        try {
            host.getGuestState("nobody");
            out("nobody: no exception");
        } catch (BinderException e) {
            out("nobody exception=" + e.exceptionCode);
        }
        try {
            host.reportApPowerState(1, 0);
            out("report on host: no exception");
        } catch (BinderException e) {
            out("report on host exception=" + e.exceptionCode + " error=" + e.serviceSpecificError);
        }

        Recorder hostEvents = new Recorder();
        host.registerListener(hostEvents);
        out("first " + hostEvents.await("system "));
        out("READY");
        out("then " + hostEvents.await("system 1 "));

        SystemManager guest = SystemManager.connect(args[1]);
        Recorder guestEvents = new Recorder();
        guest.registerListener(guestEvents);
        guest.reportApPowerState(1, 0); // REPORT_WAIT_FOR_VHAL
        out("guest " + guestEvents.await("req "));
        int[] req = guest.getApPowerStateReq();
        out("guest req [" + req[0] + ", " + req[1] + "]");
        try {
            guest.reportApPowerState(99, 0);
            out("report 99: no exception");
        } catch (BinderException e) {
            out("report 99 exception=" + e.exceptionCode + " error=" + e.serviceSpecificError
                    + " mentions99=" + e.getMessage().contains("99"));
        }
        GuestState g = host.getGuestState("android");
        out("android binderConnected=" + g.binderConnected + " hasReq=" + g.hasApPowerStateReq
                + " req=" + g.apPowerStateReq);
        out("dump mentions android=" + host.dumpState().contains("android"));

        guest.unregisterListener(guestEvents);
        host.unregisterListener(hostEvents);
        try {
            host.unregisterListener(hostEvents);
            out("unregister twice: no exception");
        } catch (BinderException e) {
            out("unregister twice exception");
        }
        guest.close();
        host.close();
        try {
            host.getSystemState();
            out("after close: no exception");
        } catch (BinderException e) {
            out("after close: " + e.getMessage());
        }
        closeDuringCallback(args[0]);
        out("DONE");
    }
}
