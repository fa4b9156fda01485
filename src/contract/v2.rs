//! The Open Inference Protocol (KServe V2) as it travels on the wire.
