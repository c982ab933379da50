//! Volume data at rest: the commands that act on a volume's copies outside
//! a move. Deleting data happens here and nowhere else.

pub mod remove;
