//! rampart-sigma
