//! Stampede protection and the lease protocol: one load per key in a process and across
//! processes, what a flight hands its followers, leases released on panics and cancellations,
//! and the two promises (read-your-writes, one load per generation) in their hardest cases.

mod flight_handover;
mod flight_outcomes;
mod leases;
mod promises;
mod stampede;
mod stampede_cross_process;
