//! The Store trait (revisions, watch) and its embedded redb backend
