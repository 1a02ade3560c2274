//! Layer 2: the verifier's vocabulary and mechanics. `report` holds the public report types
//! (violations, counters, [`VerifierReport`](report::VerifierReport)) and the per-bus verifier
//! state; `handles` the generic handle table (live handles, tombstones, synthetic values,
//! violations no bus owns). Names no model type: uses `base` and `ring` only.

pub(crate) mod handles;
pub(crate) mod report;
