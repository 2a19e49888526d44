#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    headend::cli::main()
}
