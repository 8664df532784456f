//! WAL micro-benchmark (being written).

fn main() {}
