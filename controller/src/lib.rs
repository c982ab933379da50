//! drover keeps a set of Docker hosts in line with a directory of YAML
//! manifests, and moves an app's volume data with it when the app moves.
//!
//! # The pipeline
//!
//! Each command walks the same path:
//!
//! 1. **load** ([`load`]): every manifest under the directory becomes a
//!    typed [`model`], each value keeping its `file:line:column`
//!    ([`diag`]). `${VAR}` and `env_file` values are marked secret
//!    ([`model::Text`]) so that no output can show them. The rules that span
//!    documents run last; an invalid directory stops here and nothing
//!    anywhere changes.
//! 2. **render** ([`desired`]): the spec becomes the concrete Docker objects
//!    each host should have, with the spec hash of every container.
//! 3. **observe** ([`observed`], [`docker::hosts`]): what each host really
//!    has, as drover's own serialisable model (the JSON of `drover observe`).
//! 4. **plan** ([`plan`]): a pure function of desired and observed state.
//!    The plan is data: actions with reasons and the actions they wait for.
//! 5. **show** ([`output`]) or **apply** ([`pass`], [`apply`]). A dry run
//!    stops after showing the plan: it never builds the executor, the only
//!    thing that writes. [`pass`] is the one reconcile pass both
//!    `drover reconcile` and the controller run: leases, a fresh read, a new
//!    plan, the apply, the release.
//!
//! `drover controller` ([`controller`]) runs the pass in a loop: its
//! watchers turn file changes, Docker events and a timer into passes.
//!
//! # The parts that touch hosts
//!
//! - [`docker`]: the Docker boundary, a small trait ([`docker::DockerApi`])
//!   over bollard, and a recording fake ([`docker::fake`]) for unit tests.
//! - [`contract`]: every label and object name drover writes on a host —
//!   what two versions of drover must agree on.
//! - [`onhost`]: leases, copy records and the Cluster's members.
//! - [`relocate`]: moving a volume with its app; [`helper`] is the side of
//!   a move that runs inside helper containers.
//! - [`data`]: volume data at rest; the only code that deletes it.

pub mod apply;
pub mod changes;
pub mod contract;
pub mod controller;
pub mod data;
pub mod desired;
pub mod diag;
pub mod docker;
#[doc(hidden)]
pub mod fuzzing;
pub mod git;
pub mod helper;
pub mod load;
pub mod model;
pub mod observed;
pub mod onhost;
pub mod output;
pub mod pass;
pub mod plan;
pub mod relocate;
pub mod scratch;
#[cfg(test)]
mod testing;
