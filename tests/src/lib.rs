//! End-to-end test support: real `nats-server` processes on loopback.
