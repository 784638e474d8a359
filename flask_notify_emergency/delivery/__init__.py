"""The ``send`` path: persist, route, record. See :mod:`.dispatcher`."""
