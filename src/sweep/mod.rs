//! Many runs: every strategy × client pair (or every scenario of a file) one after another
//! ([`matrix`]), and the bisection for the highest rate under a p99 bound ([`capacity`]).
//! Both take plain [`RunConfig`](crate::config::RunConfig)s and call [`crate::run::execute`].

pub mod capacity;
pub mod matrix;
