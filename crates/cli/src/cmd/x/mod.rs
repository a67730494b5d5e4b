//! `trellis x`: experimental commands, as istioctl's `x` group holds them; their
//! flags and output may still change. Today: `precheck`.

pub mod precheck;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check that a cluster is ready for `trellis install`: Kubernetes version,
    /// permissions, an existing Istio.
    Precheck(precheck::Args),
}

pub fn run(args: &Args) -> i32 {
    match &args.command {
        Command::Precheck(args) => precheck::run(args),
    }
}
