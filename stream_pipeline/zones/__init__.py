"""Counting lines and zones: crossings of tracked vehicles over lines, entries into polygons.

Kept light on import: `core.config` imports the zone schema from here.
"""
