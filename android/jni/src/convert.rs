//! The AIDL parcelables as the Java classes `vmstack.jni.SystemState` and
//! `vmstack.jni.GuestState`.
//!
//! The classes are looked up once, at connect time, on the Java thread that
//! connects: on a native callback thread `FindClass` sees only the system
//! (on Android: boot) class loader.

use jni::objects::{GlobalRef, JClass, JObject, JValue};
use jni::JNIEnv;
use vmstack_aidl::vmstack::sysmgr::GuestState::GuestState;
use vmstack_aidl::vmstack::sysmgr::SystemState::SystemState;

const GUEST_STATE: &str = "vmstack/jni/GuestState";
const SYSTEM_STATE: &str = "vmstack/jni/SystemState";
const GUEST_STATE_CTOR: &str = "(Ljava/lang/String;Ljava/lang/String;ILjava/lang/String;ZIIZ)V";
const SYSTEM_STATE_CTOR: &str = "(ILjava/lang/String;ZZJJ[Lvmstack/jni/GuestState;)V";

/// Global references to the parcelable classes.
pub(crate) struct Classes {
    guest_state: GlobalRef,
    system_state: GlobalRef,
}

impl Classes {
    /// Looks the classes up (from a Java thread).
    pub(crate) fn load(env: &mut JNIEnv) -> jni::errors::Result<Classes> {
        let g = env.find_class(GUEST_STATE)?;
        let s = env.find_class(SYSTEM_STATE)?;
        Ok(Classes {
            guest_state: env.new_global_ref(g)?,
            system_state: env.new_global_ref(s)?,
        })
    }

    /// A Java `GuestState`.
    pub(crate) fn guest_state<'l>(
        &self,
        env: &mut JNIEnv<'l>,
        g: &GuestState,
    ) -> jni::errors::Result<JObject<'l>> {
        let name = env.new_string(&g.name)?;
        let role = env.new_string(&g.role)?;
        let description = env.new_string(&g.description)?;
        let class: &JClass = self.guest_state.as_obj().into();
        env.new_object(
            class,
            GUEST_STATE_CTOR,
            &[
                JValue::Object(&name),
                JValue::Object(&role),
                JValue::Int(g.state),
                JValue::Object(&description),
                JValue::Bool(g.hasApPowerStateReq.into()),
                JValue::Int(g.apPowerStateReq),
                JValue::Int(g.apPowerStateReqParam),
                JValue::Bool(g.binderConnected.into()),
            ],
        )
    }

    /// A Java `SystemState` (with its `GuestState[]`).
    pub(crate) fn system_state<'l>(
        &self,
        env: &mut JNIEnv<'l>,
        s: &SystemState,
    ) -> jni::errors::Result<JObject<'l>> {
        let class: &JClass = self.guest_state.as_obj().into();
        let len = i32::try_from(s.guests.len()).unwrap_or(i32::MAX);
        let guests = env.new_object_array(len, class, JObject::null())?;
        for (i, g) in s.guests.iter().take(len as usize).enumerate() {
            let obj = self.guest_state(env, g)?;
            env.set_object_array_element(&guests, i as i32, &obj)?;
            env.delete_local_ref(obj)?;
        }
        let description = env.new_string(&s.description)?;
        let class: &JClass = self.system_state.as_obj().into();
        env.new_object(
            class,
            SYSTEM_STATE_CTOR,
            &[
                JValue::Int(s.state),
                JValue::Object(&description),
                JValue::Bool(s.ignitionOn.into()),
                JValue::Bool(s.vehicleInUse.into()),
                JValue::Long(s.nowMs),
                JValue::Long(s.inputCount),
                JValue::Object(&guests),
            ],
        )
    }
}
