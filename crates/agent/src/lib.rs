//! Runs members through a runtime on one host, checks their health, reports observations
