"""All state and all SQL: papers, source health, the delivery ledger, the schedule, sign-ups."""
