// The static musl builds allocate with dlmalloc: musl's own allocator kept
// about three times the live heap resident after a registration burst,
// more than `memory_budget_kib` allows (BENCHMARKS.md, memory budget).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() {
    std::process::exit(xapsd::cli::main());
}
