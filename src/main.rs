fn main() {
    std::process::exit(xapsd::cli::main());
}
