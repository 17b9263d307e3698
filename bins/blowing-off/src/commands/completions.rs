//! `completions SHELL`: a completion script for the shell, on stdout.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::exit::Exit;

/// Arguments of `completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  blowing-off completions bash > ~/.local/share/bash-completion/completions/blowing-off
  blowing-off completions zsh > ~/.zfunc/_blowing-off
  blowing-off completions fish > ~/.config/fish/completions/blowing-off.fish
  blowing-off completions powershell >> $PROFILE")]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Prints the script.
pub fn run(a: Args) -> anyhow::Result<Exit> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "blowing-off", &mut script);
    crate::output::write_out(format_args!("{}", String::from_utf8_lossy(&script)));
    Ok(Exit::Ok)
}
