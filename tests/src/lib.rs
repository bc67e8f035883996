//! Shared pieces of the integration tests and the benchmark: packet builders, an independent
//! encoder of the expected SRv6 encapsulation, BPF_PROG_TEST_RUN plumbing and fixtures.

pub mod bins;
pub mod cni_runtime;
pub mod endpoint_fixture;
pub mod expect;
pub mod fixture;
pub mod lab_env;
pub mod packets;
pub mod router;
pub mod srv6;
pub mod stream;
pub mod xdp;
