//! Stand-ins for the remote providers notify-svc talks to, for tests and benchmarks: they run on
//! 127.0.0.1 and record what they receive. (Behind the `test-support` feature.)

pub mod sms;
pub mod smtp;
