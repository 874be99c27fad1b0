//! Finding lifecycle (placeholder).
