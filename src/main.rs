//! The jobctl binary: everything lives in the library; this only sets the exit code.

fn main() {
    std::process::exit(jobctl::cli::main());
}
