"""The one home of network files: locate, identify, read and write exported and released weights."""
