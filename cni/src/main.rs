//! `cats-cni`: see the library for what it does.

fn main() -> std::process::ExitCode {
    cats_cni::main()
}
