#![no_std]
// This file exists so the controller can name this crate as a build-dependency (aya-build); the
// programs live in main.rs.
