//! drover keeps a set of Docker hosts in line with a directory of YAML
//! manifests, and moves an app's volume data with it when the app moves.
//!
//! # The pipeline
//!
//! Each command walks the same path, and the folder of modules reads in
//! that order:
//!
//! 1. **load** ([`load`], [`yaml`], [`parse`], [`interpolate`]): every
//!    manifest under the directory becomes a typed [`model`], each value
//!    keeping its `file:line:column`. `${VAR}` and `env_file` values are
//!    marked secret ([`model::Text`]) so that no output can show them.
//! 2. **validate** ([`validate`], [`graph`]): the rules that span documents.
//!    All problems of a run are collected as [`diag::Diagnostics`]; an
//!    invalid directory stops here and nothing anywhere changes.
//! 3. **render** ([`desired`]): the spec becomes the concrete Docker objects
//!    each host should have, with the spec hash of every container.
//! 4. **observe** ([`observed`], [`hosts`]): what each host really has, as
//!    drover's own serialisable model (the JSON of `drover observe`).
//! 5. **plan** ([`plan`]): a pure function of desired and observed state.
//!    The plan is data: actions with reasons and the actions they wait for.
//! 6. **show** ([`output`]) or **apply** ([`apply`]). A dry run stops after
//!    showing the plan: it never builds the executor, the only thing that
//!    writes.
//!
//! `drover controller` ([`controller`]) runs the same walk as a loop: its
//! watchers turn file changes, Docker events and a timer into passes.
//!
//! Hosts are reached through [`engine::DockerApi`], a small trait over
//! bollard ([`engine::Engine`]); [`hosts`] connects to and reads them all in
//! parallel.

pub mod apply;
pub mod contract;
pub mod controller;
pub mod desired;
pub mod diag;
pub mod docker;
#[doc(hidden)]
pub mod fuzzing;
pub mod helper;
pub mod load;
pub mod model;
pub mod observed;
pub mod onhost;
pub mod output;
pub mod pass;
pub mod plan;
pub mod relocate;
