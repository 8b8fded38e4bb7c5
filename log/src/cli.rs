//! The start of a program whose command line is a clap [`Subcommand`]
//! enum (feature `cli`): the daemons `sysmgr` and `trustyd`.

use std::fmt::Display;
use std::process::ExitCode;

use clap::{Command, Subcommand};

use crate::Setup;

/// Parses the command line into one of `C`'s sub-commands (one is
/// required; `name` and `about` head the help), sets up logging for `name`
/// without targets ([`Setup::without_target`]) and runs `body`. Its error
/// ends the program with one line `<name>: <error>` (alternate form, so an
/// `anyhow` error shows its causes) and exit status 1; bad arguments with
/// clap's message and status 2.
pub fn run<C: Subcommand, E: Display>(
    name: &'static str,
    about: &'static str,
    body: impl FnOnce(C) -> Result<(), E>,
) -> ExitCode {
    let mut command = C::augment_subcommands(
        Command::new(name)
            .about(about)
            .subcommand_required(true)
            .arg_required_else_help(true),
    );
    let matches = command.get_matches_mut();
    let cmd = C::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit());
    Setup::new(name).without_target().init();
    match body(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
