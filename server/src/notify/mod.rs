//! Alert fan-out beyond gRPC streams: webhook delivery with retries.

pub mod webhook;
