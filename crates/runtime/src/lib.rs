//! The Runtime trait and its drivers: local processes
