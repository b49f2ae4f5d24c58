"""The runtime: the consumer, its tiers, dispatch and offset tracking."""
