//! The scenarios, grouped by what they exercise. Each takes a
//! [`DriverFactory`](super::DriverFactory) and panics on a violation; the name says which
//! guarantee of the crate docs it checks (`g4_…`: guarantee 4).

mod batches;
mod catalog;
mod delivery;
mod leadership;
mod operations;
mod parking;
mod partition_groups;
mod partitions;
mod produce;
mod retries;
mod storage;
mod waiting;

pub(crate) use batches::*;
pub(crate) use catalog::*;
pub(crate) use delivery::*;
pub(crate) use leadership::*;
pub(crate) use operations::*;
pub(crate) use parking::*;
pub(crate) use partition_groups::*;
pub(crate) use partitions::*;
pub(crate) use produce::*;
pub(crate) use retries::*;
pub(crate) use storage::*;
pub(crate) use waiting::*;
