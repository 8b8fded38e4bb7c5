//! Generates Rust from `aidl/vmstack/sysmgr/*.aidl` with rsbinder-aidl.
//! The interfaces are stamped with the newest frozen version under
//! `api/vmstack.sysmgr/N/` and its `.hash`, so `getInterfaceVersion()`
//! and `getInterfaceHash()` answer as in AOSP's stable AIDL (a build
//! before the first freeze has neither).

use std::path::Path;

const INTERFACES: &[&str] = &["ISystemManager.aidl", "IPowerStateListener.aidl"];
const PARCELABLES: &[&str] = &["GuestState.aidl", "SystemState.aidl"];

fn newest_frozen(api: &Path) -> Option<(i32, String)> {
    let version = std::fs::read_dir(api)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .max()?;
    let hash_file = api.join(version.to_string()).join(".hash");
    println!("cargo:rerun-if-changed={}", hash_file.display());
    let hash = std::fs::read_to_string(&hash_file).ok()?.trim().to_string();
    (!hash.is_empty()).then_some((version, hash))
}

fn main() {
    let dir = Path::new("aidl/vmstack/sysmgr");
    let api = Path::new("api/vmstack.sysmgr");
    println!("cargo:rerun-if-changed=aidl");
    println!("cargo:rerun-if-changed={}", api.display());
    let frozen = newest_frozen(api);
    let mut builder = rsbinder_aidl::Builder::new()
        .include_dir("aidl")
        .output("vmstack_sysmgr.rs")
        .set_async_support(false);
    for p in PARCELABLES {
        builder = builder.source(dir.join(p));
    }
    for i in INTERFACES {
        builder = builder.source(dir.join(i));
        if let Some((version, hash)) = &frozen {
            builder = builder.version(*version).hash(hash.clone());
        }
    }
    if let Err(e) = builder.generate() {
        panic!("rsbinder-aidl: {e:?}");
    }
}
