//! Thin entry point: parse arguments, call into the library, map errors to exit codes.

use clap::Parser;

fn main() {
    let cli = agent::cli::Cli::parse();
    let code = agent::cli::run(cli);
    std::process::exit(code);
}
