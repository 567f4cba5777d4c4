//! Plain backend: TODO
