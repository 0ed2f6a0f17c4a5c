"""Types, configuration, errors and paths shared by every stage."""
