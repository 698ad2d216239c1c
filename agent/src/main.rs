//! kovn-agent. So far: inspection of the eBPF datapath object. The node agent proper (CNI
//! server, OVS plumbing, datapath sync, metrics on :10665) follows in later issues.

use std::path::PathBuf;
use std::process::ExitCode;

use agent::datapath::{Datapath, LoadOptions, locate_object};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kovn-agent", version, about = "kovn node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the eBPF datapath.
    Datapath {
        #[command(subcommand)]
        command: DatapathCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DatapathCommand {
    /// Load the object and run every program through the kernel verifier, then unload.
    Check {
        /// The object (default: $KOVN_BPF_OBJECT, /usr/lib/kovn/kovn-datapath.o, or the
        /// workspace build).
        #[arg(long)]
        object: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Datapath {
            command: DatapathCommand::Check { object },
        } => {
            let path = match object.map_or_else(locate_object, Ok) {
                Ok(path) => path,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match Datapath::load(&path, &LoadOptions::default()) {
                Ok(datapath) => {
                    println!("{}: verifier accepted every program", path.display());
                    for name in datapath.program_names() {
                        println!("  program {name}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    // The node would stay on OVS; say why, with the verifier log if any.
                    tracing::error!("{e}: {:?}", std::error::Error::source(&e));
                    ExitCode::FAILURE
                }
            }
        }
    }
}
