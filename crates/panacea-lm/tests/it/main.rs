//! The integration tests of panacea-lm, one module per topic (one binary, linked once).

mod model;
