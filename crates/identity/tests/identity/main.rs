//! Integration tests: real certificates, real files, real TLS on 127.0.0.1.
//! One binary (modules below) so the crypto stack is linked once.

mod bootstrap;
mod ca;
mod common;
mod manager;
mod tls;
