"""Streaming accumulators: each keeps, for every unit of one site, what the atlas needs, in memory
independent of corpus length, and merges exactly with another accumulator of the same kind."""
