//! The crate's tests: `support` holds the model, checker and scripted workloads they share.

mod codec_fuzz;
mod corruption;
mod crash;
mod io_errors;
mod round_trip;
mod support;
