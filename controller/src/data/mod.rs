//! Volume data at rest: the commands that act on a volume's copies outside
//! a move — snapshots, restores and clones ([`snapshot`]), and deletion
//! ([`remove`]), which happens here and nowhere else.

pub mod backup;
pub mod clock;
pub mod relay;
pub mod remove;
pub mod repository;
pub mod snapshot;
