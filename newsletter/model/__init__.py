"""The data that flows: papers, the configured sources, topics and subscribers, and each reader's digest. Pure; no I/O."""
