//! steerd: authoritative DNS for steered names.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "steerd", version, about = "Authoritative DNS that steers clients to the best region")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a policy file; exit 1 with located errors.
    Check {
        #[arg(long)]
        policy: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { policy } => check(&policy),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    match steering_core::Policy::from_yaml(&path.display().to_string(), &text) {
        Ok(p) => {
            eprintln!("{}: ok ({} regions, {} services)", path.display(), p.regions.len(), p.services.len());
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("{errs}");
            ExitCode::from(1)
        }
    }
}
