"""Pure deciders: functions and clock-free state machines over a snapshot that return a plan,
actions or a verdict with its reason. Nothing here awaits, reads a clock or touches the store;
the loops and the edges feed them and act on what they return."""
