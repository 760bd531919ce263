"""The machinery behind :mod:`appliance.supervisor`, which is the public API (import from there).

``spec`` (what a child is), ``snapshot`` (the read-only view), ``child`` (one child at run time),
``tree`` (what both supervisors share) and ``util`` (naming and error-description helpers).
"""
