//! The Management API's write path: one change at a time, from an edit of
//! the config text to a new live snapshot.
//!
//! A change is: take the config lock, refuse a stale revision, edit the text
//! ([`edit`]), validate it with `Config::parse`, judge it ([`delegation`]),
//! write it ([`persist`]), then install it through the same function as a
//! reload (revocation included) and audit it. Every step before the write
//! can refuse with nothing changed. Must not know the wire: handlers in
//! `methods::admin` map params and errors.

pub mod delegation;
pub mod edit;
pub mod persist;
