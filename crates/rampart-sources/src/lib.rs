//! rampart-sources
