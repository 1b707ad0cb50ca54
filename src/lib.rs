//! seamless
