//! The file sink (PRODUCT.md §9): every stored event is also written to `audit.log` in the
//! integration runtime's format, with log4j2-style rolling. It never decides what is stored: it only
//! copies what the store has acknowledged, and a failing disk here never fails an ingest.

pub mod rolling;
