//! The CNI plugin under test: the same `cats_cni::main` as the `cats-cni` binary, built with
//! the tests so that they never run a stale plugin (cargo names its path only for binaries
//! of the test's own package).

fn main() -> std::process::ExitCode {
    cats_cni::main()
}
