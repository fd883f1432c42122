"""Hit quality: labelled pair sets read as a cache, right and wrong hits per operating point.

Imported only by the ``semcache calibrate`` command, never by the library itself.
"""
