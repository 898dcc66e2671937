"""The local viewer: `maxact serve DIR` (see docs/VIEWER.md).

``app`` answers every JSON route from an open atlas (no HTTP), ``live`` runs the model on the
user's text, ``server`` is the stdlib HTTP layer; ``static/`` and ``templates/`` hold the pages.
"""
