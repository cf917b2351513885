//! The jobctl binary: everything lives in the library; this only sets the exit code.

// A submission allocates and frees many short-lived buffers across two threads (the runtime
// and the ledger writer); glibc's malloc spent about a fifth of jobctl's CPU on them, mimalloc
// about half that (see BENCHMARKS.md). Built without transparent huge pages (`no_thp`): with
// them, the kernel zeroing 2 MiB pages cost more CPU than the allocator saved, and 12 MiB of RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(jobctl::cli::main());
}
