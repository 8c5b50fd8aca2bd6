"""A Python file without any Job."""

VALUE = 42
