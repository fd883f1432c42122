"""The ``semcache`` command line (:mod:`.main`); cluster commands in :mod:`.cluster`."""
