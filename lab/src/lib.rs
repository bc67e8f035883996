//! The emulated cats lab: nodes as network namespaces, links with one-way delay, compute
//! instances with heterogeneous speed, and clients.

pub mod netns;
