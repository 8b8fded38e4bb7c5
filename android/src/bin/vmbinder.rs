//! `vmbinder`: see `vmstack_android::cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = vmstack_android::cli::parse_target(&args).and_then(|(target, words)| {
        if words.is_empty() || words[0] == "-h" || words[0] == "--help" {
            println!("{}", vmstack_android::cli::USAGE);
            return Ok(());
        }
        let conn = vmstack_android::cli::connect(&target)?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        vmstack_android::cli::run(&conn, &words, &mut out)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmbinder: {}", format!("{e:#}").replace('\n', "; "));
            ExitCode::FAILURE
        }
    }
}
