//! Runtime: glommio executors, listeners, shard routing.
