//! The near cache (`local_ttl`): on one server and on a Redis Cluster.

mod near_cache;
mod near_cluster;
