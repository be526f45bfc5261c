"""Storage: table layouts, the lake, spooled partitions."""
