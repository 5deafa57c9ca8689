//! The `barlow` command line.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "barlow", version, about = "Barlow Twins self-supervised pretraining")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Measure speed.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand, Debug)]
pub enum Bench {
    /// One training step (two views, loss, backward, LARS), per backend.
    Step(crate::bench::StepArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(Bench::Step(args)) => crate::bench::step(&args).map(|_| ()),
    }
}
