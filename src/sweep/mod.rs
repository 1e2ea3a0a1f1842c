//! Many runs: every strategy × client pair (or every scenario of a file) one after another
//! ([`matrix`]), the bisection for the highest rate under a p99 bound ([`capacity`]), and both
//! with fixed-rate runs as one architecture-review suite ([`adr`]). All take plain
//! [`RunConfig`](crate::config::RunConfig)s and call [`crate::run::execute`].

pub mod adr;
pub mod capacity;
pub mod matrix;
