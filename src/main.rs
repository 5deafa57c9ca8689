//! The `barlow` binary.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    barlow::cli::run(barlow::cli::Cli::parse())
}
