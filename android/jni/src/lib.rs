//! `libvmstack_jni.so`: the Java class `vmstack.jni.SystemManager`
//! (`java/vmstack/jni/`) over RPC binder to the host's `sysmgr`.
//!
//! Each `SystemManager` owns one RPC session (with one incoming connection
//! for callbacks) to a unix socket, normally `<state-dir>/binder/sysmgr.sock`
//! (or a guest endpoint). Calls are the generated `ISystemManager` proxy's;
//! a failed call throws `vmstack.jni.BinderException` with binder's
//! exception code and the service-specific error. A registered
//! `PowerStateListener` is wrapped in a local `IPowerStateListener` binder
//! whose callbacks run on rsbinder's incoming-connection thread, attached to
//! the JVM as a daemon thread, each inside its own local-reference frame.
//!
//! The Java object keeps the session as a `long` handle (a leaked `Box`),
//! freed by `close()` or, for an instance never closed, by its
//! `java.lang.ref.Cleaner`. The Java side holds a read lock around every
//! call; `close()` zeroes the handle under the write lock and frees it
//! after releasing the lock (freeing joins the callback thread, which may
//! itself be waiting for the read lock in a listener's call), so a handle
//! is never used after free.

mod convert;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jni::objects::{GlobalRef, JClass, JObject, JString, JValue};
use jni::sys::{jint, jintArray, jlong, jobject, jstring};
use jni::{JNIEnv, JavaVM};
use rsbinder::rpc::{RpcClientConfig, RpcSession};
use rsbinder::{BinderResult, Interface, Status, Strong};
use vmstack_aidl::vmstack::sysmgr::IPowerStateListener::{
    BnPowerStateListener, IPowerStateListener,
};
use vmstack_aidl::vmstack::sysmgr::ISystemManager::ISystemManager;
use vmstack_aidl::vmstack::sysmgr::SystemState::SystemState;

use convert::Classes;

/// Highest android-13+ RPC wire version offered (as `vmbinder`).
const RPC_WIRE_VERSION: u32 = 2;

/// Why a native call failed.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// The binder call failed (service exception or transport).
    #[error("{0}")]
    Binder(Status),
    /// A JNI call failed; a Java exception is usually pending already.
    #[error("JNI: {0}")]
    Jni(#[from] jni::errors::Error),
    /// Anything else, as a message.
    #[error("{0}")]
    Other(String),
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        Error::Binder(s)
    }
}

/// One `SystemManager`: its session, proxy and registered listeners.
struct Native {
    session: RpcSession,
    sm: Strong<dyn ISystemManager>,
    vm: Arc<JavaVM>,
    classes: Arc<Classes>,
    /// (the Java listener, the binder registered for it)
    listeners: Mutex<Vec<(GlobalRef, Strong<dyn IPowerStateListener>)>>,
}

impl Drop for Native {
    fn drop(&mut self) {
        self.session.close_session();
    }
}

/// A Java `PowerStateListener` as an `IPowerStateListener`.
struct JavaListener {
    vm: Arc<JavaVM>,
    classes: Arc<Classes>,
    target: GlobalRef,
}

impl Interface for JavaListener {}

impl JavaListener {
    /// Runs `f` on this (attached) thread in a fresh local frame; a Java
    /// exception thrown by the listener is printed and cleared (a oneway
    /// callback has nobody to report to).
    fn deliver(
        &self,
        f: impl FnOnce(&mut JNIEnv, &JObject) -> jni::errors::Result<()>,
    ) -> BinderResult<()> {
        let Ok(mut env) = self.vm.attach_current_thread_as_daemon() else {
            return Err(rsbinder::StatusCode::DeadObject.into());
        };
        let target = self.target.as_obj();
        let result = env.with_local_frame(16, |env| f(env, target));
        if env.exception_check().unwrap_or(false) {
            let _ = env.exception_describe();
            let _ = env.exception_clear();
        }
        result.map_err(|_| rsbinder::StatusCode::FailedTransaction.into())
    }
}

impl IPowerStateListener for JavaListener {
    fn onApPowerStateReq(&self, value: i32, param: i32) -> BinderResult<()> {
        self.deliver(|env, target| {
            env.call_method(
                target,
                "onApPowerStateReq",
                "(II)V",
                &[JValue::Int(value), JValue::Int(param)],
            )
            .map(drop)
        })
    }

    fn onSystemStateChanged(&self, state: &SystemState) -> BinderResult<()> {
        let classes = self.classes.clone();
        self.deliver(|env, target| {
            let s = classes.system_state(env, state)?;
            env.call_method(
                target,
                "onSystemStateChanged",
                "(Lvmstack/jni/SystemState;)V",
                &[JValue::Object(&s)],
            )
            .map(drop)
        })
    }
}

/// Throws `BinderException` for `e` (unless a JNI error left an exception
/// pending). A binder error carries its exception code: a transport error
/// (lost connection, dead object, timeout) is rsbinder's
/// `ExceptionCode::TransactionFailed` (-129), its status code in the
/// message; other errors have code 0.
fn throw(env: &mut JNIEnv, e: &Error) {
    if env.exception_check().unwrap_or(false) {
        return;
    }
    let (code, specific) = match e {
        Error::Binder(s) => (s.exception_code() as i32, s.service_specific_error()),
        // Not a binder call: cannot connect, closed, JNI.
        _ => (0, 0),
    };
    let message = e.to_string();
    let thrown = (|| -> jni::errors::Result<()> {
        let msg = env.new_string(&message)?;
        let ex = env.new_object(
            "vmstack/jni/BinderException",
            "(Ljava/lang/String;II)V",
            &[
                JValue::Object(&msg),
                JValue::Int(code),
                JValue::Int(specific),
            ],
        )?;
        env.throw(jni::objects::JThrowable::from(ex))
    })();
    if thrown.is_err() && !env.exception_check().unwrap_or(false) {
        let _ = env.throw_new("java/lang/IllegalStateException", message);
    }
}

/// Runs `f` with the session behind `handle`, throwing on failure and
/// returning `fallback` then.
fn with_native<'l, T>(
    env: &mut JNIEnv<'l>,
    handle: jlong,
    fallback: T,
    f: impl FnOnce(&mut JNIEnv<'l>, &Native) -> Result<T, Error>,
) -> T {
    if handle == 0 {
        throw(env, &Error::Other("SystemManager is closed".into()));
        return fallback;
    }
    // SAFETY: a non-zero handle is the `Box<Native>` leaked by
    // `nativeConnect`; the Java object passes it only while holding its
    // read lock, and zeroes its field under the write lock before
    // `nativeClose` frees the box (after releasing the lock), so the box
    // is alive for this call.
    let native = unsafe { &*(handle as *const Native) };
    match f(env, native) {
        Ok(v) => v,
        Err(e) => {
            throw(env, &e);
            fallback
        }
    }
}

/// Defines the export `$name` of a `SystemManager` native method on an
/// open session: its Java arguments are the handle, then `$arg`s; it runs
/// the closure through [`with_native`] and, when that fails, throws and
/// returns `$fallback` (nothing for a `void` method).
macro_rules! session_method {
    (
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, else $fallback:expr,
        |$env:pat_param, $n:ident| $body:block
    ) => {
        $(#[$doc])*
        #[no_mangle]
        pub extern "system" fn $name<'l>(
            mut env: JNIEnv<'l>,
            _class: JClass<'l>,
            handle: jlong,
            $($arg: $ty),*
        ) -> $ret {
            with_native(&mut env, handle, $fallback, |$env, $n| $body)
        }
    };
    (
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),*),
        |$env:pat_param, $n:ident| $body:block
    ) => {
        session_method! {
            $(#[$doc])*
            fn $name($($arg: $ty),*) -> (), else (),
            |$env, $n| $body
        }
    };
}

fn connect(env: &mut JNIEnv, path: &JString) -> Result<Native, Error> {
    let path: String = env.get_string(path)?.into();
    let session = RpcSession::setup_client_android13plus_with_config(
        RpcClientConfig::unix(Path::new(&path), RPC_WIRE_VERSION)
            .incoming_connections(1)
            .timeout(Duration::from_secs(10)),
    )
    .map_err(|e| {
        Error::Other(format!(
            "cannot connect to {path}: {e:?} (is sysmgr running?)"
        ))
    })?;
    let root = session
        .get_root()
        .map_err(|e| Error::Other(format!("{path}: no root object: {e:?}")))?;
    let sm = <dyn ISystemManager as rsbinder::FromIBinder>::try_from(root)
        .map_err(|e| Error::Other(format!("{path}: not an ISystemManager: {e:?}")))?;
    Ok(Native {
        session,
        sm,
        vm: Arc::new(env.get_java_vm()?),
        classes: Arc::new(Classes::load(env)?),
        listeners: Mutex::new(Vec::new()),
    })
}

/// `SystemManager.nativeConnect(String)`.
#[no_mangle]
pub extern "system" fn Java_vmstack_jni_SystemManager_nativeConnect<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    path: JString<'l>,
) -> jlong {
    match connect(&mut env, &path) {
        Ok(native) => Box::into_raw(Box::new(native)) as jlong,
        Err(e) => {
            throw(&mut env, &e);
            0
        }
    }
}

/// `SystemManager.nativeClose(long)`.
#[no_mangle]
pub extern "system" fn Java_vmstack_jni_SystemManager_nativeClose<'l>(
    _env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) {
    if handle != 0 {
        // SAFETY: the handle is the box leaked by `nativeConnect`; the Java
        // side calls this once (its `Cleaner.Cleanable` runs at most once),
        // either from `close()` after zeroing its field under the write
        // lock, which waits out every call holding the read lock, or from
        // the cleaner once the object is unreachable and so in no call.
        drop(unsafe { Box::from_raw(handle as *mut Native) });
    }
}

session_method! {
    /// `SystemManager.nativeGetSystemState(long)`.
    fn Java_vmstack_jni_SystemManager_nativeGetSystemState() -> jobject,
    else std::ptr::null_mut(),
    |env, n| {
        let s = n.sm.getSystemState()?;
        Ok(n.classes.system_state(env, &s)?.into_raw())
    }
}

session_method! {
    /// `SystemManager.nativeGetGuestState(long, String)`.
    fn Java_vmstack_jni_SystemManager_nativeGetGuestState(name: JString<'_>) -> jobject,
    else std::ptr::null_mut(),
    |env, n| {
        let name: String = env.get_string(&name)?.into();
        let g = n.sm.getGuestState(&name)?;
        Ok(n.classes.guest_state(env, &g)?.into_raw())
    }
}

session_method! {
    /// `SystemManager.nativeGetApPowerStateReq(long)`.
    fn Java_vmstack_jni_SystemManager_nativeGetApPowerStateReq() -> jintArray,
    else std::ptr::null_mut(),
    |env, n| {
        let v = n.sm.getApPowerStateReq()?;
        let len = i32::try_from(v.len()).map_err(|_| Error::Other("reply too long".into()))?;
        let array = env.new_int_array(len)?;
        env.set_int_array_region(&array, 0, &v)?;
        Ok(array.into_raw())
    }
}

session_method! {
    /// `SystemManager.nativeReportApPowerState(long, int, int)`.
    fn Java_vmstack_jni_SystemManager_nativeReportApPowerState(value: jint, param: jint),
    |_, n| {
        Ok(n.sm.reportApPowerState(value, param)?)
    }
}

session_method! {
    /// `SystemManager.nativePostponeShutdown(long, int)`.
    fn Java_vmstack_jni_SystemManager_nativePostponeShutdown(ms: jint),
    |_, n| {
        Ok(n.sm.postponeShutdown(ms)?)
    }
}

session_method! {
    /// `SystemManager.nativeRequestShutdown(long, int)`.
    fn Java_vmstack_jni_SystemManager_nativeRequestShutdown(param: jint),
    |_, n| {
        Ok(n.sm.requestShutdown(param)?)
    }
}

session_method! {
    /// `SystemManager.nativeRegisterListener(long, PowerStateListener)`.
    fn Java_vmstack_jni_SystemManager_nativeRegisterListener(listener: JObject<'_>),
    |env, n| {
        if listener.is_null() {
            return Err(Error::Other("listener is null".into()));
        }
        let vm = n.vm.clone();
        let classes = n.classes.clone();
        register_local(
            env,
            &n.listeners,
            |env, list| Ok(find(env, list, &listener)?),
            |env| {
                let target = env.new_global_ref(&listener)?;
                let binder = BnPowerStateListener::new_binder(JavaListener {
                    vm,
                    classes,
                    target: target.clone(),
                });
                Ok((target, binder))
            },
            |binder| Ok(n.sm.registerListener(binder)?),
        )
    }
}

/// Registers a listener through `list`, the local `(key, binder)` table:
/// reuses the entry `find` locates, else inserts the one `make` builds
/// (both are given `cx`),
/// then runs `register` (the remote call) with its binder, outside the
/// lock. When `register` fails, the entry is removed only if this call
/// inserted it: a failed re-registration leaves a listener the server
/// still holds registered locally too.
fn register_local<C, K, B: Clone, E>(
    cx: &mut C,
    list: &Mutex<Vec<(K, B)>>,
    mut find: impl FnMut(&mut C, &[(K, B)]) -> Result<Option<usize>, E>,
    make: impl FnOnce(&mut C) -> Result<(K, B), E>,
    register: impl FnOnce(&B) -> Result<(), E>,
) -> Result<(), E> {
    let lock = || list.lock().unwrap_or_else(|p| p.into_inner());
    let (binder, inserted) = {
        let mut list = lock();
        match find(cx, &list)? {
            Some(i) => (list[i].1.clone(), false),
            None => {
                let entry = make(cx)?;
                let binder = entry.1.clone();
                list.push(entry);
                (binder, true)
            }
        }
    };
    if let Err(e) = register(&binder) {
        if inserted {
            let mut list = lock();
            if let Some(i) = find(cx, &list)? {
                list.remove(i);
            }
        }
        return Err(e);
    }
    Ok(())
}

session_method! {
    /// `SystemManager.nativeUnregisterListener(long, PowerStateListener)`.
    fn Java_vmstack_jni_SystemManager_nativeUnregisterListener(listener: JObject<'_>),
    |env, n| {
        let removed = {
            let mut list = n.listeners.lock().unwrap_or_else(|p| p.into_inner());
            find(env, &list, &listener)?.map(|i| list.remove(i))
        };
        match removed {
            Some((_, binder)) => Ok(n.sm.unregisterListener(&binder)?),
            None => Err(Error::Other("listener was not registered".into())),
        }
    }
}

session_method! {
    /// `SystemManager.nativeDumpState(long)`.
    fn Java_vmstack_jni_SystemManager_nativeDumpState() -> jstring,
    else std::ptr::null_mut(),
    |env, n| {
        let text = n.sm.dumpState()?;
        Ok(env.new_string(text)?.into_raw())
    }
}

/// The index of `listener` in `list` (same Java object).
fn find(
    env: &mut JNIEnv,
    list: &[(GlobalRef, Strong<dyn IPowerStateListener>)],
    listener: &JObject,
) -> jni::errors::Result<Option<usize>> {
    for (i, (g, _)) in list.iter().enumerate() {
        if env.is_same_object(g.as_obj(), listener)? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::register_local;
    use std::sync::Mutex;

    type Table = Mutex<Vec<(&'static str, u32)>>;

    fn register(list: &Table, key: &'static str, ok: bool) -> Result<(), String> {
        register_local(
            &mut (),
            list,
            |_, l| Ok(l.iter().position(|(k, _)| *k == key)),
            |_| Ok((key, 7)),
            |_| {
                if ok {
                    Ok(())
                } else {
                    Err("transient".to_string())
                }
            },
        )
    }

    #[test]
    fn a_failed_reregistration_keeps_the_registered_listener() {
        let list = Table::default();
        assert_eq!(register(&list, "l", true), Ok(()));
        assert_eq!(register(&list, "l", false), Err("transient".into()));
        assert_eq!(*list.lock().unwrap(), vec![("l", 7)], "still registered");
    }

    #[test]
    fn a_failed_first_registration_leaves_no_entry() {
        let list = Table::default();
        assert_eq!(register(&list, "l", false), Err("transient".into()));
        assert!(list.lock().unwrap().is_empty());
        assert_eq!(register(&list, "l", true), Ok(()));
        assert_eq!(register(&list, "l", true), Ok(()));
        assert_eq!(list.lock().unwrap().len(), 1, "no duplicate entry");
    }
}
