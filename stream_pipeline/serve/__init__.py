"""`stream-pipeline serve`: many cameras in one process sharing one model set (see command.py)."""
