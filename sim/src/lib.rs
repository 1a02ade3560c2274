//! In-process emulator of the VMBus Kernel Mode Client Library (KMCL) and of the host endpoint.
//!
//! Host-only (`std`). Work in progress.
