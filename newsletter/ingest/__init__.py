"""From the network to Paper records: polite fetching, then one reader per source type."""
