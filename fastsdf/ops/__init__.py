"""Op wrappers: validate, pick a backend, allocate outputs (fastsdf.ops.siren and its twins)."""
