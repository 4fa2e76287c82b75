//! The scenarios, grouped by what they exercise. Each takes a [`Backend`](crate::Backend) and
//! panics on a violation; the name says which guarantee of `DESIGN.md` it checks.

mod delivery;
mod leadership;
mod produce;
mod waiting;

pub use delivery::*;
pub use leadership::*;
pub use produce::*;
pub use waiting::*;
