//! Integration tests of the event model through its public API only: hostile-input properties
//! (`fuzz`) for everything that reads bytes a client, a file or a database hands it.
#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

mod fuzz;
mod golden;
