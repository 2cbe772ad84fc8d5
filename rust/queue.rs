//! Bounded queues between threads and stages (placeholder until the queues land).
