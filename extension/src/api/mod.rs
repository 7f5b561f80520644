//! One module per SQL surface of the extension.

pub mod info;
