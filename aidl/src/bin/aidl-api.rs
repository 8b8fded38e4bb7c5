//! `aidl-api update|freeze|check`: maintains `aidl/api/vmstack.sysmgr/`
//! (AOSP's `m <module>-update-api` / `-freeze-api` habits).

use std::process::ExitCode;

use vmstack_aidl::api::module::ApiModule;

fn main() -> ExitCode {
    let m = ApiModule::this_crate();
    let cmd = std::env::args().nth(1).unwrap_or_default();
    let result = match cmd.as_str() {
        "update" => m.update().map(|()| {
            println!("updated {}", m.dir.join("current").display());
            true
        }),
        "freeze" => m.freeze().map(|r| match r {
            Ok(v) => {
                println!(
                    "froze version {v} in {}",
                    m.dir.join(v.to_string()).display()
                );
                true
            }
            Err(errs) => {
                for e in errs {
                    eprintln!("incompatible: {e}");
                }
                false
            }
        }),
        "check" => m.problems().map(|p| {
            for e in &p {
                eprintln!("{e}");
            }
            if p.is_empty() {
                println!("API of {} is consistent", m.dir.display());
            }
            p.is_empty()
        }),
        _ => {
            eprintln!("usage: aidl-api update|freeze|check");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("aidl-api: {e}");
            ExitCode::FAILURE
        }
    }
}
