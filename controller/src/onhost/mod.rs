//! What drover keeps on a host besides the apps: the objects and labels two
//! versions of drover must agree on.
//!
//! - [`records`]: copy records, label-only volumes `drover-copy-<vol>-<seq>`;
//! - [`membership`]: the Cluster's hosts, `drover-cluster-<seq>`;
//! - [`lease`]: the lease object `drover-lease`, held while a drover writes;
//! - [`revision`]: the Git commit last applied, `drover-revision-<seq>`;

pub mod lease;
pub mod membership;
pub mod records;
pub mod revision;
