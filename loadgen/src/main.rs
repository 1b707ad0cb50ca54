//! `loadgen` binary: see [`loadgen::cli`] for the command line.

fn main() -> std::process::ExitCode {
    loadgen::cli::main()
}
