//! Failure behaviour: the circuit breaker, Redis outages (killed, paused, garbage), and
//! security (AUTH, ACL users, TLS).

mod breaker;
mod redis_outage;
mod security;
