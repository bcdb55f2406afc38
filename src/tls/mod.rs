//! TLS interception's certificates: the root CA (`flowdog ca init`), and later the intermediate
//! and the leaves minted off the workers.

pub mod ca;
